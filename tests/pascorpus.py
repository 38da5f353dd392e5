"""The Da Vinci PAS corpus the tests read, from the shared reference material beside the project
(`../shared/reference/pas-corpus`, see its README; never copied into the project): the published
PAS 2.2.1 package (profiles with snapshots, value sets, examples), response examples from PAS
2.0.1, Inferno's PAS test kit and the PAS reference implementation, and the R4 core
ClaimResponses. Where the folder is missing, the tests that read it skip (`require`)."""

from __future__ import annotations

import json
import tarfile
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "reference" / "pas-corpus"
PAS_221_PACKAGE = CORPUS / "pas-ig-2.2.1" / "hl7.fhir.us.davinci-pas-2.2.1.tgz"
R4_EXAMPLES = CORPUS / "fhir-r4-examples"
PAS = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"
MISSING = f"the shared PAS corpus is not on this machine ({CORPUS})"

# The payer answers (ClaimResponses and response Bundles, some deliberately broken) the reader must
# get through, relative to CORPUS: the same selection as before the corpus was read from ../shared.
# The corpus holds more (requests, Subscriptions, further must-support presets).
ANSWERS = (
    "pas-ig-2.0.1/package/example/Bundle-ErrorResponseBundleExample.json",
    "pas-ig-2.0.1/package/example/Bundle-PASClaimInquiryResponseBundleExample.json",
    "pas-ig-2.0.1/package/example/Bundle-ReferralAuthorizationResponseBundleExample.json",
    "pas-ig-2.0.1/package/example/ClaimResponse-ErrorResponseExample.json",
    "pas-ig-2.0.1/package/example/ClaimResponse-PASClaimInquiryResponseExample.json",
    "pas-ig-2.0.1/package/example/ClaimResponse-PractitionerRequestorResponseExample.json",
    "pas-ig-2.0.1/package/example/ClaimResponse-ReferralAuthorizationResponseExample.json",
    "inferno-pas-test-kit/fixtures/PAS_notification_example_full_resource.json",
    "inferno-pas-test-kit/fixtures/invalid_first_entry_response_bundle.json",
    "inferno-pas-test-kit/fixtures/missing_referenced_resource_response_bundle.json",
    "inferno-pas-test-kit/fixtures/pa_response_bundle_missing_elements.json",
    "inferno-pas-test-kit/fixtures/response_bundle_patient_wrong_fullurl.json",
    "inferno-pas-test-kit/fixtures/valid_pa_inquire_response_bundle.json",
    "inferno-pas-test-kit/fixtures/valid_pa_response_bundle.json",
    "inferno-pas-test-kit/fixtures/valid_pa_response_bundle_denial.json",
    "inferno-pas-test-kit/presets/client_example__denial_json_response.json",
    "inferno-pas-test-kit/presets/client_example__pended_json_response.json",
    "inferno-pas-test-kit/presets/client_v201__denial_json_response.json",
    "inferno-pas-test-kit/presets/client_v201__pended_json_response.json",
    "inferno-pas-test-kit/presets/client_v221__approval_json_response.json",
    "inferno-pas-test-kit/presets/client_v221__denial_json_response.json",
    "inferno-pas-test-kit/presets/client_v221__modification_json_response.json",
    "inferno-pas-test-kit/presets/client_v221__ms_inquire_responses.json",
    "inferno-pas-test-kit/presets/client_v221__ms_submit_responses.json",
    "inferno-pas-test-kit/presets/client_v221__pended_json_response.json",
    "inferno-pas-test-kit/presets/client_v221__processing_error_response.json",
    "inferno-pas-test-kit/presets/client_v221_mustsupport__approval_json_response.json",
    "prior-auth-ri/main_resources_DatabaseResources_DeniedResponse.json",
    "prior-auth-ri/main_resources_DatabaseResources_GrantedResponse.json",
    "prior-auth-ri/main_resources_DatabaseResources_PendedClaimResponse.json",
    "prior-auth-ri/main_resources_DatabaseResources_PendedFinalResponse.json",
    "prior-auth-ri/main_resources_PendedClaimResponsewithRequest.json",
    "prior-auth-ri/test_resources_bundle-response.json",
    "prior-auth-ri/test_resources_claimresponse-minimal.json",
    "prior-auth-ri/test_resources_claimresponse-only.json",
    "prior-auth-ri/test_resources_claimresponse-pended.json",
)


def require() -> Path:
    """CORPUS, or skip the calling test. Only a missing folder skips (under CI=true too: a clone
    without ../shared beside it cannot run these); a missing file inside it fails the test."""
    if not CORPUS.is_dir():
        pytest.skip(MISSING)
    return CORPUS


@cache
def pas_221() -> Path:
    """The PAS 2.2.1 package, extracted once per test session: `<dir>/package/...`."""
    require()
    target = Path(tempfile.mkdtemp(prefix="pas-2.2.1-"))
    with tarfile.open(PAS_221_PACKAGE) as archive:
        archive.extractall(target, filter="data")
    return target / "package"


def pas_221_examples() -> list[Path]:
    return sorted((pas_221() / "example").glob("*.json"))


@cache
def conformance() -> dict[str, dict[str, Any]]:
    """The package's StructureDefinitions and ValueSets by canonical URL (versions stripped)."""
    found: dict[str, dict[str, Any]] = {}
    for path in pas_221().glob("*.json"):
        resource = json.loads(path.read_text())
        if resource.get("resourceType") in ("StructureDefinition", "ValueSet", "CodeSystem"):
            found[resource["url"]] = resource
    return found


def load(path: Path) -> Any:
    require()
    return json.loads(path.read_text())
