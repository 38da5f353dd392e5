"""The `--use preauthorization` Bundle conforms to Da Vinci PAS 2.2.1 (issue 10, item 1; docs/output.md,
PAS request Bundle): each rule by name, then every resource of the Bundle validated with the local
test server's `$validate` against the published PAS 2.2.1 StructureDefinitions (FHIR_PROFILES).

The validator is calibrated first: it accepts every published PAS 2.2.1 example Bundle entry by
entry and rejects broken variants of ours. What it cannot check (a slice's content, X12 codes) is
checked here by name; the X12-bound codes, which nobody can check offline, are listed.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from builders import CaseBuilder, shift, with_pas_parties
from conftest import REPO
from fhirserver import make_fhir_server_fixture
from pascorpus import PAS, PAS_221_PACKAGE, conformance, pas_221_examples

from adapter.fhir.client import FhirClient
from adapter.pipeline import Options, process

pytestmark = pytest.mark.server

pas_server = make_fhir_server_fixture("pas_server", scope="module", profiles=[PAS_221_PACKAGE])
EXAMPLE = REPO / "examples" / "medicare-preauthorization-pas" / "input.json"
X12_VALUE_SETS = "https://valueset.x12.org/"
X12_CODE_SYSTEMS = "https://codesystem.x12.org/005010/"
PAS_TEMP_CODES = "http://hl7.org/fhir/us/davinci-pas/CodeSystem/PASTempCodes"


def rich_case() -> CaseBuilder:
    """A planned lumbar RFA after two diagnostic blocks: every kind of evidence, an urgent order, a
    clinic that requests it, a member id and identifiers on every party."""
    case = CaseBuilder("2026-12-15", payer_name="Medicare Part B")
    case.block(["L4-L5", "L5-S1"], intent="diagnostic", date="2026-09-01", relief=85)
    case.block(["L4-L5", "L5-S1"], intent="diagnostic", date="2026-09-20", relief=90)
    key = case.procedure(
        ["L4-L5", "L5-S1"], rfa=True, intent="therapeutic", resource_type="ServiceRequest", status="active"
    )
    with_pas_parties(case, urgent=key)
    case.add(
        {
            "resourceType": "Observation",
            "id": "odi",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "97909-6"}]},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": shift(case.dos, -10),
            "valueQuantity": {"value": 42, "unit": "%"},
        }
    )
    return case


def bundles() -> dict[str, dict[str, Any]]:
    example = process(EXAMPLE.read_bytes(), Options(payer="medicare", use="preauthorization", pos="22"))
    rich = rich_case().run(payer="medicare", use="preauthorization", pos="22")
    assert not rich.held, [f.rule_id for f in rich.findings if f.severity == "error"]
    return {"example": example.bundle, "rich": rich.bundle}


BUNDLES = bundles()
NAMES = sorted(BUNDLES)


def claim_of(bundle: dict[str, Any]) -> dict[str, Any]:
    return bundle["entry"][0]["resource"]


def by_url(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["fullUrl"]: entry["resource"] for entry in bundle["entry"]}


def target(bundle: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    found = by_url(bundle).get(reference.get("reference", ""))
    assert found is not None, f"{reference} does not resolve in the Bundle"
    return found


def extensions(element: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [e for e in element.get("extension", []) if e["url"] == PAS + name]


def references(value: Any) -> list[str]:
    found: list[str] = []
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            found.append(value["reference"])
        for inner in value.values():
            found += references(inner)
    elif isinstance(value, list):
        for inner in value:
            found += references(inner)
    return found


# --------------------------------------------------------------------------- the rules, by name


@pytest.mark.parametrize("name", NAMES)
def test_identifier_and_timestamp(name: str) -> None:
    bundle = BUNDLES[name]
    assert bundle["meta"]["profile"] == [PAS + "profile-pas-request-bundle"]
    assert bundle["type"] == "collection"
    assert bundle["identifier"]["system"] and bundle["identifier"]["value"].startswith("urn:uuid:")
    assert bundle["timestamp"] == claim_of(bundle)["created"]


@pytest.mark.parametrize("name", NAMES)
def test_claim_first(name: str) -> None:
    bundle = BUNDLES[name]
    claims = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Claim"]
    assert bundle["entry"][0]["resource"]["resourceType"] == "Claim" and len(claims) == 1
    claim = claim_of(bundle)
    assert claim["meta"]["profile"] == [PAS + "profile-claim"]
    assert (claim["status"], claim["use"]) == ("active", "preauthorization")


@pytest.mark.parametrize("name", NAMES)
def test_every_referenced_resource_once(name: str) -> None:
    bundle = BUNDLES[name]
    urls = [entry["fullUrl"] for entry in bundle["entry"]]
    assert len(urls) == len(set(urls))
    keys = [(e["resource"]["resourceType"], e["resource"].get("id")) for e in bundle["entry"]]
    assert len(keys) == len(set(keys))
    for entry in bundle["entry"]:
        for reference in references(entry["resource"]):
            assert reference in urls, f"{entry['resource']['resourceType']} refers to {reference}, not in the Bundle"


@pytest.mark.parametrize("name", NAMES)
def test_insurer(name: str) -> None:
    bundle = BUNDLES[name]
    insurer = target(bundle, claim_of(bundle)["insurer"])
    assert insurer["resourceType"] == "Organization"
    assert insurer["meta"]["profile"] == [PAS + "profile-insurer"]
    assert insurer["active"] is True and insurer["name"]
    coverage = target(bundle, claim_of(bundle)["insurance"][0]["coverage"])
    assert coverage["payor"] == [claim_of(bundle)["insurer"]]


@pytest.mark.parametrize("name", NAMES)
def test_requestor(name: str) -> None:
    bundle = BUNDLES[name]
    requestor = target(bundle, claim_of(bundle)["provider"])
    assert requestor["resourceType"] == "Organization"
    assert requestor["meta"]["profile"] == [PAS + "profile-requestor"]
    assert requestor["active"] is True and requestor["name"]
    assert any(i["system"] == "http://hl7.org/fhir/sid/us-npi" for i in requestor["identifier"])


@pytest.mark.parametrize("name", NAMES)
def test_beneficiary_member_id(name: str) -> None:
    bundle = BUNDLES[name]
    claim = claim_of(bundle)
    patient = target(bundle, claim["patient"])
    assert patient["meta"]["profile"] == [PAS + "profile-beneficiary"]
    assert patient["identifier"] and all(i["system"] and i["value"] for i in patient["identifier"])
    assert patient["name"] and patient["gender"]
    coverage = target(bundle, claim["insurance"][0]["coverage"])
    assert coverage["meta"]["profile"] == [PAS + "profile-coverage"]
    member = [i for i in coverage["identifier"] if i["type"]["coding"][0]["code"] == "MB"]
    assert len(member) == 1 and member[0]["value"] == coverage["subscriberId"]
    assert coverage["beneficiary"] == claim["patient"] and coverage["subscriber"] == claim["patient"]
    assert coverage["status"] == "active" and coverage["relationship"]["coding"][0]["code"] == "self"


@pytest.mark.parametrize("name", NAMES)
def test_item_trace_number(name: str) -> None:
    items = claim_of(BUNDLES[name])["item"]
    numbers = []
    for item in items:
        (trace,) = extensions(item, "extension-itemTraceNumber")
        assert trace["valueIdentifier"]["system"] and trace["valueIdentifier"]["value"]
        numbers.append(trace["valueIdentifier"]["value"])
    assert len(set(numbers)) == len(items)


@pytest.mark.parametrize("name", NAMES)
def test_certification_type(name: str) -> None:
    for item in claim_of(BUNDLES[name])["item"]:
        (certification,) = extensions(item, "extension-certificationType")
        assert certification["valueCodeableConcept"]["coding"][0] == {
            "system": X12_CODE_SYSTEMS + "1322",
            "code": "I",
            "display": "Initial",
        }


@pytest.mark.parametrize("name", NAMES)
def test_service_item_request_type(name: str) -> None:
    for item in claim_of(BUNDLES[name])["item"]:
        (request,) = extensions(item, "extension-serviceItemRequestType")
        assert request["valueCodeableConcept"]["coding"][0]["system"] == X12_CODE_SYSTEMS + "1525"
        assert request["valueCodeableConcept"]["coding"][0]["code"] == "HS"


@pytest.mark.parametrize("name", NAMES)
def test_item_category_and_place_of_service(name: str) -> None:
    for item in claim_of(BUNDLES[name])["item"]:
        assert item["category"]["coding"][0]["system"] == X12_CODE_SYSTEMS + "1365"
        (pos,) = item["locationCodeableConcept"]["coding"]
        assert pos == {
            "system": "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set",
            "code": "22",
        }
        (requested,) = extensions(item, "extension-requestedService")
        assert target(BUNDLES[name], requested["valueReference"])["resourceType"] == "ServiceRequest"


@pytest.mark.parametrize(("name", "code"), [("example", "E"), ("rich", "U")])
def test_level_of_service_code(name: str, code: str) -> None:
    (level,) = extensions(claim_of(BUNDLES[name]), "extension-levelOfServiceCode")
    assert level["valueCodeableConcept"]["coding"][0]["system"] == X12_CODE_SYSTEMS + "1338"
    assert level["valueCodeableConcept"]["coding"][0]["code"] == code


@pytest.mark.parametrize("name", NAMES)
def test_supporting_documentation_is_additional_information(name: str) -> None:
    bundle = BUNDLES[name]
    claim = claim_of(bundle)
    assert claim["supportingInfo"]
    for info in claim["supportingInfo"]:
        assert info["category"]["coding"][0] == {"system": PAS_TEMP_CODES, "code": "additionalInformation"}
        assert "timingDate" not in info and "timingPeriod" not in info  # 0..0 in the slice
        assert target(bundle, info["valueReference"])
        (document,) = extensions(info, "extension-documentInformation")
        parts = {part["url"]: part for part in document["extension"]}
        assert parts["reportTypeCode"]["valueCodeableConcept"]["coding"][0]["system"] == X12_CODE_SYSTEMS + "755"
        assert parts["transmissionMethod"]["valueCodeableConcept"]["coding"][0]["code"] == "EL"
        assert parts["description"]["valueString"]
    sequences = [info["sequence"] for info in claim["supportingInfo"]]
    assert len(set(sequences)) == len(sequences)
    for item in claim["item"]:
        assert set(item["informationSequence"]) <= set(sequences)


def test_the_rich_case_attaches_every_kind_of_evidence() -> None:
    kinds = {
        part["valueCodeableConcept"]["coding"][0]["code"]
        for info in claim_of(BUNDLES["rich"])["supportingInfo"]
        for ext in extensions(info, "extension-documentInformation")
        for part in ext["extension"]
        if part["url"] == "reportTypeCode"
    }
    assert kinds == {"P5", "SG", "OZ", "OD", "OB", "09"}


# --------------------------------------------------------------------------- validation against PAS 2.2.1


def errors_of(outcome: dict[str, Any]) -> list[str]:
    return [
        f"{issue.get('expression')}: {issue.get('details', {}).get('text')}"
        for issue in outcome.get("issue", [])
        if issue.get("severity") in ("error", "fatal")
    ]


@pytest.fixture(scope="module")
def validator(pas_server: Any) -> FhirClient:
    return FhirClient(pas_server.base_url)


@pytest.mark.parametrize("name", NAMES)
def test_every_resource_of_the_bundle_validates_against_pas_2_2_1(name: str, validator: FhirClient) -> None:
    bundle = BUNDLES[name]
    assert errors_of(validator.validate(bundle)) == []
    profiled = 0
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert errors_of(validator.validate(resource)) == [], resource["resourceType"]
        profiled += bool(resource.get("meta", {}).get("profile"))
    assert profiled == 5  # the Claim, beneficiary, insurer, requestor and Coverage claim PAS profiles


def test_the_validator_accepts_every_published_pas_example(validator: FhirClient) -> None:
    checked = 0
    for path in pas_221_examples():
        example = json.loads(path.read_text())
        if example["resourceType"] != "Bundle" or not example.get("meta", {}).get("profile"):
            continue
        assert errors_of(validator.validate(example)) == [], path.name
        for entry in example["entry"]:
            assert errors_of(validator.validate(entry["resource"])) == [], f"{path.name}: {entry['fullUrl']}"
            checked += 1
    assert checked > 50


def _broken(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    claim = claim_of(bundle)
    variants: dict[str, dict[str, Any]] = {}
    no_certification = copy.deepcopy(claim)
    no_certification["item"][0]["extension"] = [
        e for e in no_certification["item"][0]["extension"] if not e["url"].endswith("certificationType")
    ]
    variants["certificationType missing"] = no_certification
    no_insurer = copy.deepcopy(claim)
    del no_insurer["insurer"]
    variants["insurer missing"] = no_insurer
    no_category = copy.deepcopy(claim)
    del no_category["item"][0]["category"]
    variants["item category missing"] = no_category
    claim_last = copy.deepcopy(bundle)
    claim_last["entry"] = claim_last["entry"][1:] + claim_last["entry"][:1]
    variants["Claim not first"] = claim_last
    coverage = copy.deepcopy(target(bundle, claim["insurance"][0]["coverage"]))
    del coverage["identifier"]
    variants["member id missing"] = coverage
    insurer = copy.deepcopy(target(bundle, claim["insurer"]))
    insurer["active"] = False
    variants["insurer inactive"] = insurer
    return variants


@pytest.mark.parametrize("broken", sorted(_broken(BUNDLES["example"])))
def test_the_validator_rejects_a_broken_request(broken: str, validator: FhirClient) -> None:
    assert errors_of(validator.validate(_broken(BUNDLES["example"])[broken])) != []


# --------------------------------------------------------------------------- bindings that cannot be checked offline

# Every value the request writes under a required binding to an X12 value set (X12 code lists are
# licensed and published with no FHIR package): the only bindings exempt from validation.
X12_EXEMPT = {
    ("Claim.extension:levelOfServiceCode", "https://valueset.x12.org/x217/005010/request/2000E/UM/1/06/00/1338"),
    ("Claim.item.category", "https://valueset.x12.org/x217/005010/request/2000F/UM/1/03/00/1365"),
    ("Claim.item.extension:certificationType", "https://valueset.x12.org/x217/005010/request/2000F/UM/1/02/00/1322"),
    (
        "Claim.item.extension:serviceItemRequestType",
        "https://valueset.x12.org/x217/005010/request/2000E/UM/1/01/00/1525",
    ),
    (
        "Claim.supportingInfo.extension:documentInformation.reportTypeCode",
        "http://hl7.org/fhir/us/davinci-pas/ValueSet/pas-pwk01-attachment-report-type-code",
    ),
    (
        "Claim.supportingInfo.extension:documentInformation.transmissionMethod",
        "https://valueset.x12.org/x217/005010/request/2000E/PWK/1/02/00/756",
    ),
}


def _required_binding(url: str, element_id: str) -> str:
    sd = conformance()[url]
    (element,) = [e for e in sd["snapshot"]["element"] if e["id"] == element_id]
    assert element["binding"]["strength"] == "required"
    return str(element["binding"]["valueSet"]).split("|")[0]


def _x12_only(value_set: str) -> bool:
    if value_set.startswith(X12_VALUE_SETS):
        return True
    vs = conformance().get(value_set)
    systems = [part.get("system", "") for part in (vs or {}).get("compose", {}).get("include", [])]
    return bool(systems) and all(s.startswith(X12_CODE_SYSTEMS) for s in systems)


def test_the_x12_bound_codes_are_listed_and_are_the_only_exemption() -> None:
    """The bindings behind each coded value the request writes, read from the PAS snapshots: exactly
    the listed ones are X12's; each value at least uses the X12 code system of its element."""
    ext = PAS + "extension-"
    found = {
        ("Claim.extension:levelOfServiceCode", _required_binding(ext + "levelOfServiceCode", "Extension.value[x]")),
        ("Claim.item.category", _required_binding(PAS + "profile-claim", "Claim.item.category")),
        ("Claim.item.extension:certificationType", _required_binding(ext + "certificationType", "Extension.value[x]")),
        (
            "Claim.item.extension:serviceItemRequestType",
            _required_binding(ext + "serviceItemRequestType", "Extension.value[x]"),
        ),
        (
            "Claim.supportingInfo.extension:documentInformation.reportTypeCode",
            _required_binding(ext + "documentInformation", "Extension.extension:reportTypeCode.value[x]"),
        ),
        (
            "Claim.supportingInfo.extension:documentInformation.transmissionMethod",
            _required_binding(ext + "documentInformation", "Extension.extension:transmissionMethod.value[x]"),
        ),
    }
    assert found == X12_EXEMPT
    assert all(_x12_only(value_set) for _, value_set in found)
    # The other required bindings of what the Claim writes are checkable: by the server (R4 and
    # PAS value sets it can expand) or, for whole external code systems, by the system written.
    claim = claim_of(BUNDLES["rich"])
    for element_id, written in (
        ("Claim.type", claim["type"]),
        ("Claim.diagnosis.diagnosis[x]", claim["diagnosis"][0]["diagnosisCodeableConcept"]),
        ("Claim.item.productOrService", claim["item"][0]["productOrService"]),
        ("Claim.item.modifier", claim["item"][0]["modifier"][0]),
        ("Claim.item.location[x]", claim["item"][0]["locationCodeableConcept"]),
    ):
        value_set = _required_binding(PAS + "profile-claim", element_id)
        assert not _x12_only(value_set), element_id
        vs = conformance()[value_set]
        systems = {part["system"] for part in vs["compose"]["include"]}
        assert {c["system"] for c in written["coding"]} <= systems, element_id


def test_the_sandbox_payers_answers_validate_against_pas_2_2_1(validator: FhirClient) -> None:
    """A1, A3 and A4 response Bundles of `facet-adapter payer serve`, entry by entry."""
    import warnings

    from adapter.claimresponse.answer import read_answer
    from adapter.payer.adjudicate import PayerSettings
    from adapter.payer.app import create_payer_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    denied = CaseBuilder("2026-12-15", dx="M54.16")
    denied.block(["L4-L5"], intent="diagnostic", resource_type="ServiceRequest", status="active")
    pended = CaseBuilder("2026-12-15", pain_score=None)
    pended.block(["L4-L5"], intent="diagnostic", resource_type="ServiceRequest", status="active")
    with_pas_parties(denied)
    with_pas_parties(pended)
    requests = {
        "A1": BUNDLES["rich"],
        "A3": denied.run(payer="medicare", use="preauthorization").bundle,
        "A4": pended.run(payer="medicare", use="preauthorization").bundle,
    }
    with TestClient(create_payer_app(PayerSettings(review_seconds=60))) as payer:
        for code, request in requests.items():
            answer = payer.post("/fhir/Claim/$submit", json=request).json()
            assert {i.review_code for i in read_answer(answer).items} == {code}
            assert errors_of(validator.validate(answer)) == [], code
            for entry in answer["entry"]:
                assert errors_of(validator.validate(entry["resource"])) == [], (code, entry["fullUrl"])


def test_the_test_server_loads_profiles_from_folders_and_json_files(tmp_path: Any) -> None:
    """FHIR_PROFILES names an extracted package folder and a JSON file (an array) as well as a .tgz."""
    from fhirserver import start_fhir_test_server
    from pascorpus import pas_221

    beneficiary = json.loads((pas_221() / "StructureDefinition-profile-beneficiary.json").read_text())
    renamed = {**beneficiary, "url": "http://example.org/StructureDefinition/my-beneficiary", "id": "my-beneficiary"}
    single = tmp_path / "profiles.json"
    single.write_text(json.dumps([renamed]))
    with start_fhir_test_server(profiles=[pas_221().parent, single]) as server:
        client = FhirClient(server.base_url)
        patient = {"resourceType": "Patient", "gender": "female"}  # no identifier, no name
        for profile in (PAS + "profile-beneficiary", renamed["url"]):
            assert any("Missing required property" in e for e in errors_of(client.validate(patient, profile)))
        log = server.log_tail(20000)
    assert f"from {pas_221().parent}" in log and f"from {single}" in log
