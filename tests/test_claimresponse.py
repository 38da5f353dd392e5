"""`facet-adapter response`: every published example is read correctly, the reference
implementation's older style without crashing, and each denial is explained with the words of its
codes and this product's rule ids (issue 10, item 3; docs/payer.md, reading an answer)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from builders import CaseBuilder, rule_ids
from conftest import REPO, run_cli
from pascorpus import CORPUS, R4_EXAMPLES, load, pas_221_examples

from adapter.claimresponse.answer import authorization, read_answer
from adapter.claimresponse.codes import remittance_codes
from adapter.claimresponse.explain import answer_text, result_of
from adapter.rules.registry import RULES

# file → (result, [(item, decision, review action)], authorization number)
PAS_221 = {
    "Bundle-ErrorResponseBundleExample.json": ("ERROR", [(None, "error", None)], None),
    "Bundle-PASClaimInquiryResponseBundleExample.json": ("APPROVED", [(1, "approved", "A1")], "AUTH0001"),
    "Bundle-PASSubscriptionNotification.json": ("APPROVED", [(1, "approved", "A1")], "AUTH0001"),
    "Bundle-ReferralAuthorizationResponseBundleExample.json": ("APPROVED", [(1, "approved", "A1")], "AUTH0001"),
    "Bundle-ReferralPendingAuthorizationResponseBundleExample.json": ("PENDED", [(1, "pended", "A4")], None),
    "Bundle-RejectionResponseBundleExample.json": ("DENIED", [(1, "denied", "A3")], None),
    "ClaimResponse-ErrorResponseExample.json": ("ERROR", [(None, "error", None)], None),
    "ClaimResponse-PASClaimInquiryResponseExample.json": ("APPROVED", [(1, "approved", "A1")], "AUTH0001"),
    "ClaimResponse-PractitionerRequestorAdditionalContentResponseExample.json": (
        "APPROVED",
        [(1, "approved", "A1"), (2, "approved", "A1")],
        "AUTH0001",
    ),
    "ClaimResponse-PractitionerRequestorPendingResponseExample.json": ("PENDED", [(1, "pended", "A4")], None),
    "ClaimResponse-PractitionerRequestorResponseExample.json": ("APPROVED", [(1, "approved", "A1")], "AUTH0001"),
    "ClaimResponse-RejectionResponseExample.json": ("DENIED", [(1, "denied", "A3")], None),
    "Parameters-PASClaimInquiryOperationResponseExample.json": ("APPROVED", [(1, "approved", "A1")], "AUTH0001"),
}
OTHERS = {
    # PAS 2.0.1 (its error Bundle example carries an approved ClaimResponse, as published)
    "pas-2.0.1/Bundle-ErrorResponseBundleExample.json": ("APPROVED", [(1, "approved", "A1")], "AUTH0001"),
    "pas-2.0.1/ClaimResponse-ErrorResponseExample.json": ("ERROR", [(None, "error", None)], None),
    "pas-2.0.1/ClaimResponse-ReferralAuthorizationResponseExample.json": (
        "APPROVED",
        [(1, "approved", "A1")],
        "AUTH0001",
    ),
    # Inferno's PAS test kit
    "inferno/client_v221__approval_json_response.json": (
        "APPROVED",
        [(1, "approved", "A1"), (1, "approved", "A1")],
        None,
    ),
    "inferno/client_v221__denial_json_response.json": ("DENIED", [(1, "denied", "A3"), (2, "approved", "A1")], None),
    "inferno/client_v221__modification_json_response.json": (
        "MODIFIED",
        [(1, "modified", "A6"), (1, "approved", "A1")],
        None,
    ),
    "inferno/client_v221__pended_json_response.json": ("PENDED", [(1, "pended", "A4")], None),
    "inferno/client_v221__processing_error_response.json": ("ERROR", [(None, "error", None)], None),
    "inferno/client_v201__denial_json_response.json": ("DENIED", [(1, "denied", "A3"), (2, "approved", "A1")], None),
    "inferno/valid_pa_response_bundle_denial.json": ("DENIED", [(1, "denied", "A3")], None),
    # placeholder codes (DENIEDCODE, PENDEDCODE): not an X12 review action, so not decided
    "inferno/client_example__pended_json_response.json": ("UNDECIDED", [(1, "unknown", "PENDEDCODE")], None),
    # the reference implementation's older style: the review action on ClaimResponse.extension
    "prior-auth-ri/main_resources_DatabaseResources_GrantedResponse.json": (
        "APPROVED",
        [(None, "approved", "A1")],
        "ee7f76f8-5e4e-4733-8f85-3fe3c29cf30f",
    ),
    "prior-auth-ri/main_resources_DatabaseResources_DeniedResponse.json": ("DENIED", [(None, "denied", "A3")], None),
    "prior-auth-ri/main_resources_DatabaseResources_PendedClaimResponse.json": (
        "PENDED",
        [(None, "pended", "A4")],
        None,
    ),
    "prior-auth-ri/test_resources_claimresponse-pended.json": ("PENDED", [(None, "pended", None)], None),
}
R4_CORE = {
    "ClaimResponse-R3500.json": ("APPROVED", [(1, "approved", None)], None),
    "ClaimResponse-R3501.json": ("ERROR", [(None, "error", None)], None),
    "ClaimResponse-R3502.json": ("APPROVED", [(1, "approved", None)], None),
    # item 1 (a package code) paid nothing and replaced by the insurer's added items: modified
    "ClaimResponse-R3503.json": (
        "MODIFIED",
        [
            (1, "modified", None),
            (2, "approved", None),
            (3, "approved", None),
            (1, "approved", None),
            (1, "approved", None),
            (3, "approved", None),
        ],
        None,
    ),
    "ClaimResponse-UR3503.json": ("APPROVED", [(1, "approved", None), (1, "approved", None)], "18SS12345"),
}


def _check(data: Any, expected: tuple[str, list[tuple[int | None, str, str | None]], str | None]) -> None:
    answer = read_answer(data)
    label, code = result_of(answer)
    assert label == expected[0]
    assert code == (0 if label == "APPROVED" else 1)
    assert [(i.sequence, i.decision, i.review_code) for i in answer.items] == expected[1]
    assert answer.authorization_number == expected[2]
    assert answer_text(answer).endswith(f"Result: {label} (exit {code})\n")


def test_every_published_pas_2_2_1_response_is_read_correctly() -> None:
    paths = {p.name: p for p in pas_221_examples()}
    answers = [name for name, path in paths.items() if '"ClaimResponse"' in path.read_text()]
    assert sorted(answers) == sorted(PAS_221)  # every example that holds a ClaimResponse
    for name, expected in PAS_221.items():
        _check(load(paths[name]), expected)


@pytest.mark.parametrize("name", sorted(OTHERS))
def test_other_pas_responses_are_read_correctly(name: str) -> None:
    _check(load(CORPUS / name), OTHERS[name])


@pytest.mark.skipif(not R4_EXAMPLES.is_dir(), reason="make fixtures fetches the R4 examples")
@pytest.mark.parametrize("name", sorted(R4_CORE))
def test_the_r4_core_claim_responses_are_read_correctly(name: str) -> None:
    _check(load(R4_EXAMPLES / name), R4_CORE[name])


def test_every_corpus_answer_is_read_without_crashing() -> None:
    paths = sorted(CORPUS.glob("*/*.json"))
    assert len(paths) > 30
    for path in paths:
        answer = read_answer(load(path))
        assert answer_text(answer)


def test_the_amounts_and_reasons_of_a_claim_answer() -> None:
    answer = read_answer(load(R4_EXAMPLES / "ClaimResponse-R3500.json")) if R4_EXAMPLES.is_dir() else None
    if answer is None:
        pytest.skip("make fixtures fetches the R4 examples")
    item = answer.items[0]
    assert item.amount("eligible").value == 135.57  # type: ignore[union-attr]
    assert item.amount("benefit").value == 90.47  # type: ignore[union-attr]
    assert [(r.kind, r.code, r.display) for r in item.reasons] == [("other", "ar002", "Plan Limit Reached")]


def _denial(carc: str, rarc: str | None = None) -> dict[str, Any]:
    reason = {"coding": [{"system": "https://x12.org/codes/claim-adjustment-reason-codes", "code": carc}]}
    adjudication: list[dict[str, Any]] = [
        {"category": {"coding": [{"code": "submitted"}]}, "amount": {"value": 900, "currency": "USD"}},
        {"category": {"coding": [{"code": "eligible"}]}, "reason": reason, "amount": {"value": 0, "currency": "USD"}},
        {"category": {"coding": [{"code": "benefit"}]}, "amount": {"value": 0, "currency": "USD"}},
    ]
    if rarc:
        remark = {"coding": [{"system": "https://x12.org/codes/remittance-advice-remark-codes", "code": rarc}]}
        adjudication.append({"category": {"coding": [{"code": "benefit"}]}, "reason": remark})
    return {
        "resourceType": "ClaimResponse",
        "id": "cr1",
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
        "use": "claim",
        "patient": {"reference": "Patient/p1"},
        "created": "2026-12-01",
        "insurer": {"display": "Payer"},
        "outcome": "complete",
        "item": [{"itemSequence": 1, "adjudication": adjudication}],
    }


@pytest.mark.parametrize(
    ("carc", "rules"),
    [
        ("50", {"dx-not-covered", "pain-duration", "conservative-care", "diagnostic-block-prerequisite"}),
        ("4", {"laterality-unknown"}),
        ("119", {"frequency-limit", "levels-exceed-limit"}),
        ("151", {"frequency-limit", "levels-exceed-limit"}),
        ("197", {"prior-auth-required"}),
        ("16", {"levels-unknown", "intent-unknown", "claim-data-missing"}),
    ],
)
def test_each_denial_says_what_to_do_and_names_the_rules(carc: str, rules: set[str]) -> None:
    text = answer_text(read_answer(_denial(carc)))
    entry = remittance_codes().carc[carc]
    assert f"CARC {carc}: {entry.words}" in text and entry.action in text
    listed = next(line for line in text.splitlines() if "facet-adapter checks this with:" in line)
    assert rules <= {rule.strip() for rule in listed.split(":", 1)[1].split(",")}
    assert "Result: DENIED (exit 1)" in text


def test_remark_codes_are_read_with_their_words() -> None:
    answer = read_answer(_denial("50", "N115"))
    assert [(r.kind, r.code) for r in answer.items[0].reasons] == [("carc", "50"), ("rarc", "N115")]
    assert "RARC N115: This decision was based on a Local Coverage Determination (LCD)." in answer_text(answer)


def test_the_remittance_table_links_every_rule_that_names_its_carc() -> None:
    """A rule whose pack gives a CARC is linked from that CARC's entry, and every linked rule exists."""
    base = tomllib.loads((REPO / "mappings" / "packs" / "base.toml").read_text())
    codes = remittance_codes()
    registered = {rule_id for rule_id, _ in RULES}
    for carc in codes.carc.values():
        assert set(carc.rules) <= registered, carc.code
    for rule_id, rule in base["rules"].items():
        if rule.get("carc") in codes.carc:
            assert rule_id in codes.carc[rule["carc"]].rules, (rule_id, rule["carc"])


def test_authorization_reads_only_what_grants_one() -> None:
    granted = load(CORPUS / "pas-2.0.1" / "ClaimResponse-ReferralAuthorizationResponseExample.json")
    assert authorization(granted) is not None and authorization(granted)[0] == "AUTH0001"  # type: ignore[index]
    denied = load(CORPUS / "prior-auth-ri" / "main_resources_DatabaseResources_DeniedResponse.json")["entry"][0]
    assert denied["resource"]["preAuthRef"] and denied["resource"]["outcome"] == "complete"
    assert authorization(denied["resource"]) is None  # the older style's A3 grants nothing
    core = {"resourceType": "ClaimResponse", "use": "preauthorization", "outcome": "complete", "preAuthRef": "PA-1"}
    assert authorization(core) == ("PA-1", None)
    assert authorization({**core, "outcome": "partial"}) is None
    assert authorization({**core, "use": "claim"}) is None


# --------------------------------------------------------------------------- the command


def test_response_command_exit_statuses(tmp_path: Path) -> None:
    approved = CORPUS / "pas-2.0.1" / "ClaimResponse-ReferralAuthorizationResponseExample.json"
    run = run_cli("response", str(approved), "--format", "json")
    assert run.code == 0 and run.json()["result"] == "APPROVED" and run.json()["authorization"]["number"] == "AUTH0001"
    denied = tmp_path / "denied.json"
    denied.write_text(json.dumps(_denial("197")))
    run = run_cli("response", str(denied), "--format", "text")
    assert run.code == 1 and b"CARC 197" in run.stdout and b"prior-auth-required" in run.stdout
    patient = tmp_path / "patient.json"
    patient.write_text(json.dumps({"resourceType": "Patient", "id": "p1"}))
    run = run_cli("response", str(patient))
    assert run.code == 2 and run.stdout == b"" and b"not a ClaimResponse" in run.stderr
    text = tmp_path / "text.json"
    text.write_text("not json")
    assert run_cli("response", str(text)).code == 2
    assert run_cli("response", str(tmp_path / "missing.json")).code == 2
    assert b"Traceback" not in run.stderr


# --------------------------------------------------------------------------- the reader: prior authorization on record


ADJUDICATION = "http://terminology.hl7.org/CodeSystem/adjudication"


def _pas_answer(code: str, *, number: str | None = None, preauth_ref: str | None = None) -> dict[str, Any]:
    review: list[dict[str, Any]] = [
        {
            "url": "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-reviewActionCode",
            "valueCodeableConcept": {"coding": [{"system": "https://codesystem.x12.org/005010/306", "code": code}]},
        }
    ]
    if number:
        review.append({"url": "number", "valueString": number})
    answer: dict[str, Any] = {
        "resourceType": "ClaimResponse",
        "id": f"cr-{code}",
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
        "use": "preauthorization",
        "patient": {"reference": "Patient/p1"},
        "created": "2026-09-20",
        "insurer": {"reference": "Organization/payer"},
        "outcome": "complete",
        "item": [
            {
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-itemPreAuthPeriod",
                        "valuePeriod": {"start": "2026-10-01", "end": "2026-12-31"},
                    }
                ],
                "itemSequence": 1,
                "adjudication": [
                    {
                        "extension": [
                            {
                                "url": "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-reviewAction",
                                "extension": review,
                            }
                        ],
                        "category": {
                            "coding": [
                                {"system": "http://terminology.hl7.org/CodeSystem/adjudication", "code": "submitted"}
                            ]
                        },
                    }
                ],
            }
        ],
    }
    if preauth_ref:
        answer["preAuthRef"] = preauth_ref
    return answer


def _hopd_claim() -> CaseBuilder:
    case = CaseBuilder("2026-10-15", pos="22")
    case.block("L4-L5", side="left", intent="diagnostic")
    return case


def test_a_pas_answer_that_certifies_is_the_prior_authorization_on_record() -> None:
    assert "prior-auth-required" in rule_ids(_hopd_claim().run(payer="medicare"))
    case = _hopd_claim()
    case.add(_pas_answer("A1", number="AUTH-PAS-1"))  # no header preAuthRef: the item's number counts
    result = case.run(payer="medicare")
    assert result.decision.prior_auth == "AUTH-PAS-1" and result.decision.prior_auth_source == "ClaimResponse/cr-A1"
    assert "prior-auth-required" not in rule_ids(result)
    assert result.bundle["entry"][0]["resource"]["insurance"][0]["preAuthRef"] == ["AUTH-PAS-1"]


@pytest.mark.parametrize("code", ["A3", "A4"])
def test_a_denied_or_pended_pas_answer_grants_nothing(code: str) -> None:
    case = _hopd_claim()
    case.add(_pas_answer(code, preauth_ref="PA-NOT-GRANTED"))
    result = case.run(payer="medicare")
    assert result.decision.prior_auth is None and "prior-auth-required" in rule_ids(result)


def test_a_pas_answer_whose_period_misses_the_date_of_service_is_not_on_record() -> None:
    case = CaseBuilder("2027-03-15", pos="22")
    case.block("L4-L5", side="left", intent="diagnostic")
    case.add(_pas_answer("A1", number="AUTH-PAS-1"))
    assert case.run(payer="medicare").decision.prior_auth is None
