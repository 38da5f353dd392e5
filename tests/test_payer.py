"""The sandbox payer (issue 10, item 4; docs/payer.md, the sandbox payer): Claim/$submit adjudicated with
the same rule packs from the payer's side, deterministically; A1 / A3 / A4 for prior authorizations,
amounts and CARCs for claims; `$inquire`; the fee table a site pack replaces; OperationOutcomes and
the right 4xx for bad requests."""

from __future__ import annotations

import copy
import datetime as dt
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from builders import CaseBuilder
from conftest import REPO

from adapter.claimresponse.answer import read_answer
from adapter.payer.adjudicate import PayerSettings, authorization_number, verify_authorization
from adapter.payer.app import create_payer_app
from adapter.payer.policy import fee_table
from adapter.pipeline import Options, process
from adapter.tables import OVERLAY_ENV, load_toml

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette asks for the httpx2 package; the httpx TestClient works the same.
    from fastapi.testclient import TestClient

SUBMIT = "/fhir/Claim/$submit"
INQUIRE = "/fhir/Claim/$inquire"
FHIR = {"Content-Type": "application/fhir+json"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def payer(clock: Clock) -> Iterator[TestClient]:
    with TestClient(create_payer_app(PayerSettings(review_seconds=30), clock=clock)) as client:
        yield client


def example_request(name: str, **options: Any) -> dict[str, Any]:
    folder = REPO / "examples" / name
    args = json.loads((folder / "args.json").read_text())
    source = next(folder.glob("input.*"))
    return dict(process(source.read_bytes(), Options(**{**args, **options})).bundle)


def post(client: TestClient, path: str, body: Any) -> Any:
    return client.post(path, content=orjson.dumps(body), headers=FHIR)


def planned(dx: str = "M47.816", **builder: Any) -> CaseBuilder:
    case = CaseBuilder("2026-12-15", dx=dx, **builder)
    case.block(["L4-L5"], intent="diagnostic", resource_type="ServiceRequest", status="active")
    return case


# --------------------------------------------------------------------------- prior authorization


def test_an_approved_request_gets_a1_with_a_number_and_a_period(payer: TestClient) -> None:
    request = example_request("medicare-preauthorization-pas")
    answer = post(payer, SUBMIT, request)
    assert answer.status_code == 200
    bundle = answer.json()
    assert bundle["meta"]["profile"][0].endswith("profile-pas-response-bundle")
    assert bundle["identifier"] == request["identifier"]  # the response keeps the request's identifier
    response = bundle["entry"][0]["resource"]
    parsed = read_answer(bundle)
    assert [(i.decision, i.review_code) for i in parsed.items] == [("approved", "A1"), ("approved", "A1")]
    claim = request["entry"][0]["resource"]
    day = claim["billablePeriod"]["start"]
    coverage = next(e["resource"] for e in request["entry"] if e["resource"]["resourceType"] == "Coverage")
    number = authorization_number(coverage["subscriberId"], dt.date.fromisoformat(day))
    assert response["preAuthRef"] == number == parsed.authorization_number
    assert all(item.number == number and item.period for item in parsed.items)
    assert response["request"] == {"reference": request["entry"][0]["fullUrl"]}
    echoed = {e["fullUrl"] for e in bundle["entry"][1:]}
    assert echoed == {claim["patient"]["reference"], claim["insurer"]["reference"], claim["provider"]["reference"]}
    # Deterministic: the same request, the same answer.
    assert post(payer, SUBMIT, request).content == answer.content


def test_a_request_for_an_uncovered_diagnosis_gets_a3_with_carc_50(payer: TestClient) -> None:
    result = planned(dx="M54.16").run(payer="medicare", use="preauthorization")
    assert "dx-not-covered" in {f.rule_id for f in result.findings}
    parsed = read_answer(post(payer, SUBMIT, result.bundle).json())
    assert [(i.decision, i.review_code) for i in parsed.items] == [("denied", "A3")]
    assert [(r.kind, r.code) for r in parsed.items[0].reasons] == [("carc", "50")]
    assert parsed.authorization_number is None and parsed.resource.get("preAuthRef") is None
    assert any("dx-not-covered" in note for note in parsed.notes) and any("N115" in n for n in parsed.notes)


def test_a_request_without_documentation_is_pended_then_decided_through_inquire(
    payer: TestClient, clock: Clock
) -> None:
    result = planned(pain_score=None).run(payer="medicare", use="preauthorization")
    assert "pain-score-missing" in {f.rule_id for f in result.findings}
    first = read_answer(post(payer, SUBMIT, result.bundle).json())
    assert [(i.decision, i.review_code) for i in first.items] == [("pended", "A4")]
    assert any("Documentation requested: pain-score-missing" in note for note in first.notes)
    inquiry = copy.deepcopy(result.bundle)
    inquiry["identifier"] = {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:inquiry-1"}
    still = post(payer, INQUIRE, inquiry)
    assert still.status_code == 200 and still.json()["resourceType"] == "Parameters"
    assert read_answer(still.json()).pended
    clock.now += 31
    decided = read_answer(post(payer, INQUIRE, inquiry).json())
    assert [(i.decision, i.review_code) for i in decided.items] == [("approved", "A1")]
    assert decided.authorization_number and decided.authorization_number.startswith("FA20261215")


# --------------------------------------------------------------------------- claims


def test_an_approved_claim_gets_amounts_from_the_fee_table(payer: TestClient) -> None:
    request = example_request("medicare-lumbar-bilateral")
    response = post(payer, SUBMIT, request).json()
    assert response["resourceType"] == "ClaimResponse" and response["use"] == "claim"
    parsed = read_answer(response)
    assert parsed.approved
    amounts = [
        {a.category: a.value for a in item.amounts} for item in parsed.items
    ]  # 64493-50 and 64494-50: bilateral, 150 % of one side
    assert amounts == [
        {"submitted": 1350.0, "eligible": 540.0, "benefit": 432.0},
        {"submitted": 675.0, "eligible": 270.0, "benefit": 216.0},
    ]
    assert {t.category: t.value for t in parsed.totals} == {"submitted": 2025.0, "eligible": 810.0, "benefit": 648.0}
    assert response["payment"]["amount"] == {"value": 648.0, "currency": "USD"}


def test_a_third_level_is_denied_with_carc_119_and_the_others_paid(payer: TestClient) -> None:
    case = CaseBuilder("2026-10-15")
    case.block(["L3-L4", "L4-L5", "L5-S1"], side="bilateral", intent="diagnostic")
    result = case.run(payer="medicare")
    assert "levels-exceed-limit" in {f.rule_id for f in result.findings}
    parsed = read_answer(post(payer, SUBMIT, {**result.bundle, "entry": result.bundle["entry"]}).json())
    decisions = [(i.sequence, i.decision, [r.code for r in i.reasons]) for i in parsed.items]
    assert decisions == [(1, "approved", []), (2, "approved", []), (3, "denied", ["119"])]
    assert parsed.items[2].amount("benefit").value == 0  # type: ignore[union-attr]
    assert parsed.items[0].amount("benefit").value > 0  # type: ignore[union-attr]


def test_a_hospital_outpatient_claim_without_authorization_gets_carc_197(payer: TestClient) -> None:
    request = example_request("medicare-hopd-prior-auth-missing")
    parsed = read_answer(post(payer, SUBMIT, request).json())
    assert [(i.decision, [r.code for r in i.reasons]) for i in parsed.items] == [("denied", ["197"])]


def test_a_claim_with_the_payers_own_authorization_number_is_paid(payer: TestClient) -> None:
    request = example_request("medicare-hopd-prior-auth-missing")
    claim = request["entry"][0]["resource"]
    day = dt.date.fromisoformat(claim["billablePeriod"]["start"])
    coverage = next(e["resource"] for e in request["entry"] if e["resource"]["resourceType"] == "Coverage")
    number = authorization_number(coverage["subscriberId"], day)
    assert verify_authorization(number, coverage["subscriberId"], day)
    assert not verify_authorization(number, "someone-else", day)
    with_number = example_request("medicare-hopd-prior-auth-missing", prior_auth=number)
    assert read_answer(post(payer, SUBMIT, with_number).json()).approved
    forged = example_request("medicare-hopd-prior-auth-missing", prior_auth="FA20260101ABCDEF")
    parsed = read_answer(post(payer, SUBMIT, forged).json())
    assert parsed.items[0].decision == "denied" and any("was not issued by this payer" in n for n in parsed.notes)


def test_a_line_coded_with_other_modifiers_gets_carc_4(payer: TestClient) -> None:
    request = example_request("medicare-lumbar-bilateral")
    request["entry"][0]["resource"]["item"][0]["modifier"] = [
        {"coding": [{"system": "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", "code": "RT"}]}
    ]
    parsed = read_answer(post(payer, SUBMIT, request).json())
    assert [(i.decision, [r.code for r in i.reasons]) for i in parsed.items] == [("denied", ["4"]), ("approved", [])]


def test_a_site_pack_replaces_the_fee_table(payer: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "payer").mkdir()
    (tmp_path / "payer" / "fees.toml").write_text(
        'version = "site-1"\ncurrency = "USD"\nbilateral_factor = 2\nplan_percent = 50\n'
        "[fees]\n64493 = { charge = 1000.00, allowed = 500.00 }\n64494 = { charge = 500.00, allowed = 250.00 }\n"
    )
    monkeypatch.setenv(OVERLAY_ENV, str(tmp_path))
    load_toml.cache_clear()
    fee_table.cache_clear()
    try:
        parsed = read_answer(post(payer, SUBMIT, example_request("medicare-lumbar-bilateral")).json())
        amounts = {a.category: a.value for a in parsed.items[0].amounts}
        assert amounts == {"submitted": 2000.0, "eligible": 1000.0, "benefit": 500.0}
    finally:
        monkeypatch.delenv(OVERLAY_ENV)
        load_toml.cache_clear()
        fee_table.cache_clear()


# --------------------------------------------------------------------------- bad requests


def _status(response: Any) -> tuple[int, str]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return response.status_code, body["issue"][0]["code"]


def test_bad_requests_get_an_operation_outcome_and_the_right_4xx(payer: TestClient) -> None:
    request = example_request("medicare-lumbar-bilateral")
    assert _status(payer.post(SUBMIT, content=b"not json", headers=FHIR)) == (400, "structure")
    assert _status(payer.post(SUBMIT, content=b"", headers=FHIR)) == (400, "required")
    assert _status(post(payer, SUBMIT, {"resourceType": "Patient"})) == (400, "structure")
    reordered = {**request, "entry": request["entry"][1:] + request["entry"][:1]}
    assert _status(post(payer, SUBMIT, reordered)) == (400, "invalid")
    no_identifier = copy.deepcopy(request)
    del no_identifier["entry"][0]["resource"]["identifier"]
    assert _status(post(payer, SUBMIT, no_identifier)) == (400, "required")
    predetermination = copy.deepcopy(request)
    predetermination["entry"][0]["resource"]["use"] = "predetermination"
    assert _status(post(payer, SUBMIT, predetermination)) == (422, "not-supported")
    not_facet = copy.deepcopy(request)
    for entry in not_facet["entry"]:
        if entry["resource"]["resourceType"] == "Procedure":
            entry["resource"]["code"] = {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "99213"}]}
    assert _status(post(payer, SUBMIT, not_facet)) == (422, "processing")
    xml = payer.post(SUBMIT, content=b"<Bundle/>", headers={"Content-Type": "application/fhir+xml"})
    assert _status(xml) == (415, "not-supported")
    assert payer.get(SUBMIT).status_code == 405 and _status(payer.get(SUBMIT))[0] == 405
    assert _status(payer.get("/fhir/Patient/1")) == (404, "not-found")
    unknown = copy.deepcopy(request)
    unknown["entry"][0]["resource"]["identifier"] = [{"system": "urn:x", "value": "never-submitted"}]
    assert _status(post(payer, INQUIRE, unknown)) == (404, "not-found")
    wrapped = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": request}]}
    assert post(payer, SUBMIT, wrapped).status_code == 200  # the operation's Parameters form


def test_the_payer_states_its_operations(payer: TestClient) -> None:
    statement = payer.get("/fhir/metadata").json()
    (claim,) = statement["rest"][0]["resource"]
    assert {op["name"] for op in claim["operation"]} == {"submit", "inquire"}
