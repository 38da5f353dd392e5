"""The CDS Hooks service over HTTP (FastAPI TestClient): discovery, hook requests of several
shapes and what they are answered, the EHR's JWT, malformed requests, missing prefetch and the
allowed FHIR bases. Coverage-information content and its invariants are in test_cds_coverage.py;
the service reading from the local FHIR test server and the golden cases in test_cds_server.py."""

from __future__ import annotations

import copy
import json
import logging
import re
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from builders import CaseBuilder
from cdshooks import BASE, ISSUER, Ehr, extension_of, hook_request, prefetch_from, service_url, split_record, values
from conftest import REPO
from fhir.resources.R4B import get_fhir_model_class

from adapter.cds import hooks
from adapter.cds.discovery import prefetch_keys
from adapter.cds.security import JwtVerifier, KeyStore, ReplayCache, ReplayCacheFull, TokenRefused
from adapter.cds.settings import CdsSettings
from adapter.fhir import r4schema
from adapter.service.app import create_app
from adapter.service.settings import Settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

SIGN = "facet-order-sign"
SELECT = "facet-order-select"
UNREACHABLE = "http://127.0.0.1:9/fhir"  # the discard port: nothing answers there


def assert_valid_r4(resource: dict[str, Any]) -> None:
    issues = r4schema.validate(resource)
    assert not issues, [f"{i.path}: {i.message}" for i in issues]
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


class Cds:
    """The service with one EHR's keys, and what the tests send it."""

    def __init__(self, client: TestClient, ehr: Ehr) -> None:
        self.client = client
        self.ehr = ehr

    def call(self, body: Any, service_id: str = SIGN, *, headers: dict[str, str] | None = None) -> Any:
        sent = headers if headers is not None else self.ehr.auth(service_url(service_id))
        return self.client.post(f"/cds-services/{service_id}", json=body, headers=sent)


@pytest.fixture
def make_cds(tmp_path: Path) -> Iterator[Callable[..., Cds]]:
    opened: list[TestClient] = []

    def make(*, allowed: tuple[str, ...] = (UNREACHABLE,), jwks: tuple[str, ...] | None = None) -> Cds:
        ehr = Ehr(tmp_path)
        cds = CdsSettings(
            base_url=BASE,
            jwks_sources=jwks if jwks is not None else (str(ehr.jwks_path),),
            issuers=(ISSUER,),
            allowed_fhir_bases=allowed,
        )
        settings = Settings(
            fhir_base="http://fhir.invalid/fhir",
            db_path=tmp_path / f"queue{len(opened)}.sqlite",
            cds=cds,
            fhir_timeout=2.0,
            fhir_retries=0,
        )
        client = TestClient(
            create_app(settings, handler=lambda job: "ok", run_worker=False), raise_server_exceptions=False
        )
        client.__enter__()
        opened.append(client)
        return Cds(client, ehr)

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def cds(make_cds: Callable[..., Cds]) -> Cds:
    return make_cds()


def planned(**options: Any) -> tuple[CaseBuilder, str]:
    """A record with one draft facet ServiceRequest (bilateral L4-L5 diagnostic block)."""
    case = CaseBuilder(dos="2026-12-15", **options)
    key = case.procedure("L4-L5", resource_type="ServiceRequest", status="draft")
    return case, key


def request_for(case: CaseBuilder, keys: list[str], **options: Any) -> dict[str, Any]:
    drafts, rest = split_record(case.resources, keys)
    skip = options.pop("skip", ())
    prefetch = options.pop("prefetch", prefetch_from(rest, "p1", skip=skip))
    return hook_request(drafts, "p1", prefetch=prefetch, encounter_id="enc", **options)


def only_update(answer: dict[str, Any]) -> dict[str, Any]:
    actions = answer.get("systemActions", [])
    assert len(actions) == 1, answer
    assert actions[0]["type"] == "update"
    return actions[0]["resource"]


# --------------------------------------------------------------------------- discovery


def test_discovery_lists_order_sign_and_order_select_with_prefetch_for_what_the_rules_read(cds: Cds) -> None:
    response = cds.client.get("/cds-services", headers=cds.ehr.auth(f"{BASE}/cds-services"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    services = {s["id"]: s for s in response.json()["services"]}
    assert {s["hook"] for s in services.values()} == {"order-sign", "order-select"}
    prefetch = services[SIGN]["prefetch"]
    assert prefetch["patient"] == "Patient/{{context.patientId}}"
    assert prefetch["coverage"].startswith("Coverage?beneficiary=Patient/{{context.patientId}}")
    assert "_include=Coverage:payor" in prefetch["coverage"]
    assert prefetch["conditions"].startswith("Condition?subject=Patient/{{context.patientId}}")
    # the Observations the evidence rules read: pain (72514-3) and disability (97909-6) scores
    assert "72514-3" in prefetch["observations"] and "97909-6" in prefetch["observations"]
    # earlier procedures, with the Observations reporting relief after a block
    assert "_revinclude=Observation:part-of" in prefetch["procedures"]
    # the order's Encounter with its Location
    assert prefetch["encounter"].startswith("Encounter?_id={{context.encounterId}}")
    assert "_include=Encounter:location" in prefetch["encounter"]
    assert "claimResponses" in prefetch and "use=preauthorization" in prefetch["claimResponses"]
    assert services[SIGN]["extension"]["davinci-crd.version"] == ["2.0", "2.2"]


def test_discovery_needs_a_jwt_for_its_own_url(cds: Cds) -> None:
    assert cds.client.get("/cds-services").status_code == 401
    wrong = cds.ehr.auth(service_url(SIGN))
    assert cds.client.get("/cds-services", headers=wrong).status_code == 401


# --------------------------------------------------------------------------- hook requests of several shapes


def test_order_sign_with_full_prefetch_updates_the_draft_with_coverage_information(cds: Cds) -> None:
    case, key = planned(pos="22")
    case.add(
        {
            "resourceType": "ClaimResponse",
            "id": "pa",
            "status": "active",
            "type": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]
            },
            "use": "preauthorization",
            "patient": {"reference": "Patient/p1"},
            "created": "2026-12-01",
            "insurer": {"reference": "Organization/payer"},
            "outcome": "complete",
            "preAuthRef": "UTN-12345",
            "preAuthPeriod": {"start": "2026-12-01", "end": "2027-02-28"},
        }
    )
    body = request_for(case, [key])
    response = cds.call(body)
    assert response.status_code == 200, response.text
    answer = response.json()
    resource = only_update(answer)
    draft = body["context"]["draftOrders"]["entry"][0]["resource"]
    assert resource["id"] == draft["id"]
    assert {k: v for k, v in resource.items() if k != "extension"} == draft  # nothing else changes
    assert_valid_r4(resource)
    extension = extension_of(resource)
    assert values(extension, "coverage") == [{"reference": "Coverage/cov"}]
    assert values(extension, "covered") == ["covered"]
    assert values(extension, "pa-needed") == ["satisfied"]
    assert values(extension, "satisfied-pa-id") == ["UTN-12345"]
    assert [c["code"] for c in values(extension, "billingCode")] == ["64493:50:KX"]
    assert len(values(extension, "coverage-assertion-id")) == 1
    assert answer["cards"] == []  # nothing for a person to do


def test_several_draft_orders_with_a_non_facet_order_among_them(cds: Cds) -> None:
    case, key = planned()
    therapy = {
        "resourceType": "ServiceRequest",
        "id": "pt-referral",
        "status": "draft",
        "intent": "order",
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "97110"}], "text": "Physical therapy"},
        "subject": {"reference": "Patient/p1"},
        "occurrenceDateTime": "2026-12-15",
    }
    medication = {
        "resourceType": "MedicationRequest",
        "id": "naproxen",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"text": "naproxen 500 mg"},
        "subject": {"reference": "Patient/p1"},
    }
    case.add(therapy)
    case.add(medication)
    body = request_for(case, [key, "ServiceRequest/pt-referral", "MedicationRequest/naproxen"])
    response = cds.call(body)
    assert response.status_code == 200, response.text
    assert only_update(response.json())["id"] == key.split("/")[1]


def test_only_non_facet_orders_get_an_empty_answer_without_needing_prefetch(cds: Cds) -> None:
    order = {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"text": "ibuprofen"},
        "subject": {"reference": "Patient/p1"},
    }
    response = cds.call(hook_request([order], "p1"))
    assert response.status_code == 200
    assert response.json() == {"cards": []}


def test_medicare_hospital_outpatient_without_prior_authorization_is_auth_needed(cds: Cds) -> None:
    case, key = planned(pos="22")
    answer = cds.call(request_for(case, [key])).json()
    extension = extension_of(only_update(answer))
    assert values(extension, "covered") == ["covered"]
    assert values(extension, "pa-needed") == ["auth-needed"]
    assert not values(extension, "satisfied-pa-id")
    reasons = values(extension, "reason")
    assert any("prior-auth-required" in json.dumps(r) and "42 CFR 419.83" in r["text"] for r in reasons)
    [card] = answer["cards"]
    assert card["indicator"] == "warning"  # the claim would be held: a warning, never critical
    assert card["summary"].startswith("Prior authorization needed for 64493:50:KX")
    assert "medicare 2026.11.1" in card["source"]["label"] and "facet-adapter" in card["source"]["label"]
    assert card["source"]["topic"]["code"] == "claim"
    assert {link["url"] for link in card["links"]} >= {"https://www.ecfr.gov/current/title-42/section-419.83"}


def test_an_uncovered_diagnosis_is_not_covered_with_its_reason_and_the_lcd(cds: Cds) -> None:
    case, key = planned(dx="M54.50")
    answer = cds.call(request_for(case, [key])).json()
    extension = extension_of(only_update(answer))
    assert values(extension, "covered") == ["not-covered"]
    assert not values(extension, "pa-needed")  # crd-ci-q2
    [reason] = [r for r in values(extension, "reason") if "dx-not-covered" in json.dumps(r)]
    assert reason["coding"][0] == {
        "system": "urn:facet-adapter:rule",
        "code": "dx-not-covered",
        "display": reason["coding"][0]["display"],
    }
    assert reason["text"].startswith("Not covered as ordered:")
    details = [{p["url"]: p for p in d["extension"]} for d in values_parts(extension, "detail")]
    links = {d["value"]["valueUrl"] for d in details if "valueUrl" in d["value"]}
    assert "https://www.cms.gov/medicare-coverage-database/view/article.aspx?articleid=58364" in links
    assert any("A58364" in d.get("qualification", {}).get("valueString", "") for d in details)
    [card] = answer["cards"]
    assert card["summary"] == "Not covered as ordered: 64493:50:KX (dx-not-covered)"
    assert card["indicator"] == "warning"
    assert "dx-not-covered" in card["detail"] and "To fix:" in card["detail"] and "A58364" in card["detail"]
    assert len(card["summary"]) < 140


def values_parts(extension: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [part for part in extension["extension"] if part["url"] == name]


def test_documentation_is_asked_for_on_order_sign_but_not_on_order_select(cds: Cds) -> None:
    case, key = planned(pos="22", pain_score=None)
    signed = extension_of(only_update(cds.call(request_for(case, [key])).json()))
    assert values(signed, "doc-needed") == ["clinical"]
    assert values(signed, "doc-purpose") == ["withpa"]  # prior authorization is needed too
    selected = extension_of(only_update(cds.call(request_for(case, [key], hook="order-select"), SELECT).json()))
    assert not values(selected, "doc-needed") and not values(selected, "doc-purpose")  # CRD hook-17
    assert values(selected, "covered") == ["covered"]


def test_order_select_answers_only_the_orders_just_selected(cds: Cds) -> None:
    case, first = planned()
    second = case.procedure("L5-S1", resource_type="ServiceRequest", status="draft")
    body = request_for(case, [first, second], hook="order-select", selections=[second])
    resource = only_update(cds.call(body, SELECT).json())
    assert resource["id"] == second.split("/")[1]


def test_an_order_without_levels_needs_more_detail(cds: Cds) -> None:
    case = CaseBuilder(dos="2026-12-15")
    key = case.procedure(None, resource_type="ServiceRequest", status="draft", codes=["64493"])
    extension = extension_of(only_update(cds.call(request_for(case, [key])).json()))
    assert values(extension, "covered") == ["conditional"]
    assert "detail-code" in values(extension, "info-needed")


def test_an_order_without_a_date_needs_a_timeframe(cds: Cds) -> None:
    case, key = planned()
    order = next(
        r for r in case.resources if f"ServiceRequest/{r['id']}" == key and r["resourceType"] == "ServiceRequest"
    )
    del order["occurrenceDateTime"]
    extension = extension_of(only_update(cds.call(request_for(case, [key])).json()))
    assert values(extension, "covered") == ["conditional"]
    assert values(extension, "info-needed") == ["timeframe"]


def test_no_coverage_on_record_is_a_card_and_no_update(cds: Cds) -> None:
    case, key = planned(coverage=False)
    answer = cds.call(request_for(case, [key])).json()
    assert "systemActions" not in answer
    [card] = answer["cards"]
    assert card["summary"].startswith("No coverage on record")


def test_a_coverage_not_in_force_is_not_covered_with_the_crd_reason(cds: Cds) -> None:
    case, key = planned()
    coverage = next(r for r in case.resources if r["resourceType"] == "Coverage")
    coverage["period"] = {"end": "2026-11-30"}
    extension = extension_of(only_update(cds.call(request_for(case, [key])).json()))
    assert values(extension, "covered") == ["not-covered"]
    [reason] = [
        r for r in values(extension, "reason") if "coding" in r and r["coding"][0]["code"] == "no-active-coverage"
    ]
    assert reason["coding"][0]["system"] == "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp"


def test_an_order_that_already_carries_the_assertion_is_not_updated_again(cds: Cds) -> None:
    case, key = planned(pos="22")
    body = request_for(case, [key])
    resource = only_update(cds.call(body).json())
    again = copy.deepcopy(body)
    again["context"]["draftOrders"]["entry"][0]["resource"] = resource
    again["hookInstance"] = "another-call"
    answer = cds.call(again).json()
    assert "systemActions" not in answer  # CRD resp-35: nothing new, no update
    assert len(answer["cards"]) == 1  # a person must still act (prior authorization)


def test_the_configuration_options_coverage_info_and_max_cards(cds: Cds) -> None:
    case, key = planned(pos="22")
    off = {"davinci-crd.configuration": {"coverage-info": False, "max-cards": 0}}
    answer = cds.call(request_for(case, [key], extension=off)).json()
    assert answer == {"cards": []}


def test_an_stu2_client_gets_the_stu2_codes(cds: Cds) -> None:
    case = CaseBuilder(dos="2026-12-15")
    key = case.procedure(None, resource_type="ServiceRequest", status="draft", codes=["64493"])
    stu2 = {"davinci-crd.requestedVersion": "2.0"}
    answer = cds.call(request_for(case, [key], extension=stu2)).json()
    extension = extension_of(only_update(answer))
    assert values(extension, "covered") == ["conditional"]
    assert "detail-code" not in values(extension, "info-needed")  # a reason in STU2
    assert any(c.get("code") == "detail-code" for r in values(extension, "reason") for c in r.get("coding", []))
    assert not values_parts(extension, "detail")  # no detail codes for instructions or links in STU2
    assert answer["cards"][0]["source"]["topic"]["system"] == "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp"


# --------------------------------------------------------------------------- missing prefetch and fhirServer


def test_missing_prefetch_without_a_fhir_server_is_412_naming_the_keys(cds: Cds) -> None:
    case, key = planned()
    response = cds.call(request_for(case, [key], skip=["conditions", "observations"]))
    assert response.status_code == 412
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["prefetch.conditions", "prefetch.observations"]


def test_a_disallowed_fhir_server_is_never_contacted(cds: Cds, monkeypatch: pytest.MonkeyPatch) -> None:
    contacted: list[Any] = []
    monkeypatch.setattr("adapter.cds.record.make_client", lambda *a, **k: contacted.append(a))
    case, key = planned()
    body = request_for(case, [key], skip=["conditions"], fhir_server="https://evil.example.org/fhir")
    response = cds.call(body)
    assert response.status_code == 412
    assert "not a FHIR base this service may read" in response.json()["issue"][0]["details"]["text"]
    # with every key prefetched the server is not needed, allowed or not
    complete = request_for(case, [key], fhir_server="https://evil.example.org/fhir")
    assert cds.call(complete).status_code == 200
    assert contacted == []


def test_a_prefetch_key_the_ehr_could_not_fill_counts_as_missing(cds: Cds) -> None:
    case, key = planned()
    body = request_for(case, [key])
    body["prefetch"]["conditions"] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout", "details": {"text": "upstream"}}],
    }
    assert cds.call(body).status_code == 412
    body["prefetch"]["conditions"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [{"relation": "next", "url": "x"}],
    }
    assert cds.call(body).status_code == 412


def test_a_fhir_server_that_fails_is_answered_indeterminate_not_500(cds: Cds) -> None:
    case, key = planned()
    answer = cds.call(request_for(case, [key], skip=["conditions"], fhir_server=UNREACHABLE))
    assert answer.status_code == 200, answer.text
    extension = extension_of(only_update(answer.json()))
    assert values(extension, "covered") == ["indeterminate"]
    [reason] = values(extension, "reason")
    assert reason["coding"] == [{"system": "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp", "code": "technical"}]
    assert reason["text"].startswith("The EHR's FHIR server could not be read")


def test_a_failure_while_coding_is_answered_not_determined(cds: Cds, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(hooks, "process_index", broken)
    case, key = planned()
    response = cds.call(request_for(case, [key]))
    assert response.status_code == 200
    assert values(extension_of(only_update(response.json())), "covered") == ["indeterminate"]


# --------------------------------------------------------------------------- malformed requests, unknown services


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda b: b.pop("context"), "context"),
        (lambda b: b.update(hook="order-select"), "answers the order-sign hook"),
        (lambda b: b["context"].pop("patientId"), "patientId"),
        (lambda b: b["context"]["draftOrders"].update(resourceType="Parameters"), "draftOrders"),
        (lambda b: b["context"]["draftOrders"]["entry"][0]["resource"].pop("id"), "valid id"),
        (
            lambda b: b.update(
                fhirAuthorization={"access_token": "t", "token_type": "Bearer", "scope": "s", "subject": "x"}
            ),
            "fhirServer is required",
        ),
        (lambda b: b.update(fhirServer="ftp://ehr/fhir"), "fhirServer"),
        (lambda b: b.update(extension={"davinci-crd.requestedVersion": "1.0"}), "not supported"),
        (lambda b: b.update(prefetch={"patient": "Patient/p1"}), "prefetch"),
    ],
)
def test_a_malformed_hook_request_is_400_with_an_operation_outcome(cds: Cds, change: Any, says: str) -> None:
    case, key = planned()
    body = request_for(case, [key])
    change(body)
    response = cds.call(body)
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert says in json.dumps(outcome)


def test_a_body_that_is_not_json_is_400(cds: Cds) -> None:
    response = cds.client.post(
        f"/cds-services/{SIGN}",
        content=b"{not json",
        headers={**cds.ehr.auth(service_url(SIGN)), "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_selections_must_name_draft_orders(cds: Cds) -> None:
    case, key = planned()
    body = request_for(case, [key], hook="order-select", selections=["ServiceRequest/elsewhere"])
    assert cds.call(body, SELECT).status_code == 400


def test_an_unknown_service_id_is_404(cds: Cds) -> None:
    response = cds.call({"hook": "patient-view"}, "patient-greeter")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


# --------------------------------------------------------------------------- the EHR's JWT


def _tokens(ehr: Ehr, tmp_path: Path) -> dict[str, str]:
    aud = service_url(SIGN)
    other = Ehr(tmp_path, kid=KID_OTHER)  # a key the service was not given
    now = int(time.time())
    hmac = jwt.encode(
        {"iss": ISSUER, "aud": aud, "exp": now + 60, "iat": now, "jti": "h"},
        "secret" * 8,
        algorithm="HS256",
        headers={"kid": ehr.kid},
    )
    unsigned = jwt.encode(
        {"iss": ISSUER, "aud": aud, "exp": now + 60, "iat": now, "jti": "n"},
        None,
        algorithm="none",
        headers={"kid": ehr.kid},
    )
    signed = ehr.token(aud)
    header, _, signature = signed.split(".")
    tampered_payload = jwt.utils.base64url_encode(
        json.dumps(
            {**jwt.decode(signed, options={"verify_signature": False}), "iss": "https://attacker.example"}
        ).encode()
    ).decode()
    return {
        "not a jwt": "abc.def",
        "unsigned (alg none)": unsigned,
        "symmetric HS256": hmac,
        "unknown key": other.token(aud),
        "other key, our kid": jwt.encode(
            {"iss": ISSUER, "aud": aud, "exp": now + 60, "iat": now, "jti": "o"},
            other.key,
            algorithm="ES384",
            headers={"kid": ehr.kid},
        ),
        "tampered payload": f"{header}.{tampered_payload}.{signature}",
        "wrong audience": ehr.token(service_url(SELECT)),
        "audience of discovery": ehr.token(f"{BASE}/cds-services"),
        "expired": ehr.token(aud, iat=now - 400, exp=now - 100),
        "issued in the future": ehr.token(aud, iat=now + 600, exp=now + 700),
        "lives too long": ehr.token(aud, exp=now + 3600),
        "unknown issuer": ehr.token(aud, iss="https://other-ehr.example.org"),
        "no jti": ehr.token(aud, jti=None),
        "no exp": ehr.token(aud, exp=None),
        "no iat": ehr.token(aud, iat=None),
    }


KID_OTHER = "ehr-key-2"


def test_an_unsigned_or_bad_jwt_is_401(cds: Cds, tmp_path: Path) -> None:
    case, key = planned()
    body = request_for(case, [key])
    assert cds.call(body, headers={}).status_code == 401
    assert cds.call(body, headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 401
    for what, token in _tokens(cds.ehr, tmp_path).items():
        response = cds.call(body, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, what
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["issue"][0]["code"] == "login", what
    assert cds.call(body).status_code == 200  # a good token still works


def test_a_replayed_jti_is_refused(cds: Cds) -> None:
    case, key = planned()
    body = request_for(case, [key])
    headers = cds.ehr.auth(service_url(SIGN))
    assert cds.call(body, headers=headers).status_code == 200
    replay = cds.call(body, headers=headers)
    assert replay.status_code == 401
    assert "used before" in replay.json()["issue"][0]["details"]["text"]


def test_without_ehr_keys_the_endpoints_are_not_served(make_cds: Callable[..., Cds], tmp_path: Path) -> None:
    cds = make_cds(jwks=())
    response = cds.client.get("/cds-services", headers=cds.ehr.auth(f"{BASE}/cds-services"))
    assert response.status_code == 404
    assert "/cds-services" not in cds.client.get("/openapi.json").json()["paths"]
    with pytest.raises(TokenRefused, match="--cds-client-jwks"):
        JwtVerifier(KeyStore(()), [ISSUER]).verify(f"Bearer {cds.ehr.token(BASE)}", BASE)


def test_logs_hold_ids_only(cds: Cds, caplog: pytest.LogCaptureFixture) -> None:
    case, key = planned(pos="22")
    patient = case.resources[0]
    patient["name"] = [{"family": "Zebulonova", "given": ["Quintessa"]}]
    patient["birthDate"] = "1951-04-17"
    body = request_for(case, [key])
    body["fhirServer"] = "https://ehr.example.org/fhir"
    body["fhirAuthorization"] = {
        "access_token": "secret-access-token-xyz",
        "token_type": "Bearer",
        "scope": "user/*.read",
        "subject": "facet-adapter",
    }
    caplog.set_level(logging.DEBUG)
    assert cds.call(body).status_code == 200
    assert cds.call(body, headers={"Authorization": "Bearer not.a.jwt"}).status_code == 401
    logged = caplog.text
    assert "facet order" in logged  # the service does log the call
    for secret in ("Zebulonova", "Quintessa", "1951-04-17", "M47.816", "secret-access-token-xyz", "Bearer"):
        assert secret not in logged


def test_openapi_lists_the_cds_endpoints(cds: Cds) -> None:
    paths = cds.client.get("/openapi.json").json()["paths"]
    assert "/cds-services" in paths and "/cds-services/{service_id}" in paths


def test_every_prefetch_key_is_filled_from_one_context_field() -> None:
    for key in prefetch_keys():
        assert key.template.count("{{") == 1, key
        assert f"{{{{context.{key.needs}}}}}" in key.template


def test_the_readme_example_request_is_answered(cds: Cds) -> None:
    """docs/cds-hooks.md shows one hook request and its answer; the request is a real one."""
    doc = (REPO / "docs" / "cds-hooks.md").read_text()
    request = json.loads(doc.split("<!-- example request -->")[1].split("```json")[1].split("```")[0])
    shown = json.loads(doc.split("<!-- example answer -->")[1].split("```json")[1].split("```")[0])
    response = cds.call(request)
    assert response.status_code == 200, response.text
    got = response.json()
    extension = extension_of(only_update(got))
    shown_extension = extension_of(only_update(shown))
    for name in ("covered", "pa-needed", "billingCode", "coverage", "coverage-assertion-id"):
        assert values(extension, name) == values(shown_extension, name), name
    assert [c["summary"] for c in got["cards"]] == [c["summary"] for c in shown["cards"]]


def test_a_facet_draft_order_that_is_not_valid_r4_or_about_another_patient_is_400(cds: Cds) -> None:
    case, key = planned()
    body = request_for(case, [key])
    body["context"]["draftOrders"]["entry"][0]["resource"]["occurrenceDateTime"] = "next tuesday"
    response = cds.call(body)
    assert response.status_code == 400
    assert "not valid FHIR R4" in response.json()["issue"][0]["details"]["text"]
    other = request_for(case, [key])
    other["context"]["draftOrders"]["entry"][0]["resource"]["subject"] = {"reference": "Patient/someone-else"}
    response = cds.call(other)
    assert response.status_code == 400
    assert "not about context.patientId" in response.text


def test_a_failure_while_reading_the_record_is_answered_not_determined(
    cds: Cds, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr(hooks, "assemble", broken)
    case, key = planned()
    response = cds.call(request_for(case, [key]))
    assert response.status_code == 200
    extension = extension_of(only_update(response.json()))
    assert values(extension, "covered") == ["indeterminate"]
    assert values(extension, "coverage") == [{"reference": "Coverage/cov"}]  # from the prefetch


def test_a_hook_instance_that_is_not_an_id_is_not_logged(cds: Cds, caplog: pytest.LogCaptureFixture) -> None:
    case, key = planned()
    body = request_for(case, [key])
    body["hookInstance"] = "Quintessa Zebulonova 1951-04-17"
    caplog.set_level(logging.INFO)
    assert cds.call(body).status_code == 200
    assert "hook-" in caplog.text and "Quintessa" not in caplog.text


# --------------------------------------------------------------------------- serve's options


class _Started(Exception):
    pass


def test_serve_takes_the_cds_options_and_refuses_bad_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import uvicorn

    from adapter.errors import UsageError
    from adapter.service.cli import serve

    started: list[Settings] = []

    def fake_run(self: Any, *args: Any, **kwargs: Any) -> None:
        started.append(self.config.app.state.settings)
        raise _Started

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    ehr = Ehr(tmp_path)
    base = ["--port", "8090", "--db", str(tmp_path / "q.sqlite"), "--fhir-base", "http://127.0.0.1:8080/fhir"]

    def start(*args: str) -> Settings:
        with pytest.raises(_Started):
            serve.main([*base, *args], prog_name="serve", standalone_mode=False)
        return started[-1]

    cds_args = ["--cds-client-jwks", str(ehr.jwks_path), "--cds-issuer", ISSUER]
    settings = start(
        *cds_args,
        "--cds-allowed-fhir-base",
        "https://ehr.example.org/fhir/",
        "--cds-allowed-fhir-base",
        "https://b.example.org/r4",
    )
    assert settings.cds == CdsSettings(
        base_url="http://127.0.0.1:8090",
        jwks_sources=(str(ehr.jwks_path),),
        issuers=(ISSUER,),
        allowed_fhir_bases=("https://ehr.example.org/fhir", "https://b.example.org/r4"),
    )
    assert start().cds.enabled is False
    assert start(*cds_args, "--cds-base-url", "https://crd.example.org/").cds.base_url == "https://crd.example.org"

    private = tmp_path / "private.json"
    private.write_text(json.dumps({"keys": [{**ehr.jwk, "d": "secret"}]}))
    not_json = tmp_path / "not.json"
    not_json.write_text("{")
    for args, says in [
        (["--cds-client-jwks", str(ehr.jwks_path)], "--cds-issuer"),
        (["--cds-client-jwks", str(private), "--cds-issuer", ISSUER], "private key"),
        (["--cds-client-jwks", str(not_json), "--cds-issuer", ISSUER], "cannot be read"),
        (["--cds-client-jwks", str(tmp_path / "missing.json"), "--cds-issuer", ISSUER], "cannot be read"),
        ([*cds_args, "--cds-allowed-fhir-base", "ftp://x/fhir"], "--cds-allowed-fhir-base"),
        ([*cds_args, "--cds-base-url", "https://crd.example.org/?q=1"], "--cds-base-url"),
    ]:
        with pytest.raises(UsageError, match=re.escape(says)):
            serve.main([*base, *args], prog_name="serve", standalone_mode=False)
    with pytest.raises(UsageError, match="--cds-base-url"):
        serve.main([*base[:1], "0", *base[2:], *cds_args], prog_name="serve", standalone_mode=False)


def test_a_key_set_url_is_read_at_start_and_again_for_an_unknown_kid(tmp_path: Path) -> None:
    first, second = Ehr(tmp_path, kid="k1"), Ehr(tmp_path, kid="k2")
    served = {"keys": [first.jwk]}
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return json.dumps(served).encode()

    keys = KeyStore(["https://ehr.example.org/jwks.json"], fetch=fetch)
    verifier = JwtVerifier(keys, [ISSUER])
    verifier.verify(f"Bearer {first.token(BASE)}", BASE)
    assert len(fetched) == 1  # a known kid reads nothing
    served["keys"].append(second.jwk)  # the EHR rotates in a new key
    verifier.verify(f"Bearer {second.token(BASE)}", BASE)
    assert len(fetched) == 2
    with pytest.raises(TokenRefused, match="does not know"):
        verifier.verify(f"Bearer {Ehr(tmp_path, kid='k3').token(BASE)}", BASE)
    assert len(fetched) == 2  # at most once a minute


def test_the_replay_cache_forgets_expired_tokens_and_refuses_when_full() -> None:
    cache = ReplayCache(size=2)
    now = time.time()
    assert cache.first_use(ISSUER, "a", now + 10, now)
    assert not cache.first_use(ISSUER, "a", now + 10, now)
    assert cache.first_use("https://other.example.org", "a", now + 10, now)  # per issuer
    with pytest.raises(ReplayCacheFull):
        cache.first_use(ISSUER, "b", now + 10, now)
    assert cache.first_use(ISSUER, "b", now + 500, now + 100)  # the expired ones were dropped
