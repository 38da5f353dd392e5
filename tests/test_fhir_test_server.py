"""Tests against the local FHIR R4 test server (tools/fhir-test-server), started once per session.

Set FHIR_BASE_URL to run them against another server instead (the rest-hook tests need that
server to reach this machine's loopback address).
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from fhirserver import FhirTestServer

pytestmark = pytest.mark.server


FHIR_JSON = "application/fhir+json"
CPT = "http://www.ama-assn.org/go/cpt"
MRN = "urn:test:mrn"


class Fhir:
    """Tiny FHIR client bound to the test server's base URL."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers.update({"Accept": FHIR_JSON})

    def url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.base_url}/{path.lstrip('/')}"

    def request(self, method: str, path: str, body: Any = None, **headers: str) -> requests.Response:
        hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
        data = None
        if body is not None:
            hdrs.setdefault("Content-Type", FHIR_JSON)
            data = json.dumps(body).encode()
        return self.session.request(method, self.url(path), data=data, headers=hdrs, timeout=30)

    def get(self, path: str, **headers: str) -> requests.Response:
        return self.request("GET", path, **headers)

    def post(self, path: str, body: Any, **headers: str) -> requests.Response:
        return self.request("POST", path, body, **headers)

    def put(self, path: str, body: Any, **headers: str) -> requests.Response:
        return self.request("PUT", path, body, **headers)

    def delete(self, path: str) -> requests.Response:
        return self.request("DELETE", path)

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        r = self.post(resource["resourceType"], resource)
        assert r.status_code == 201, r.text
        created: dict[str, Any] = r.json()
        return created

    def search(self, query: str) -> dict[str, Any]:
        r = self.get(query)
        assert r.status_code == 200, r.text
        bundle: dict[str, Any] = r.json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
        return bundle


def matches(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]


def includes(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "include"]


def errors(outcome: dict[str, Any]) -> list[dict[str, Any]]:
    assert outcome["resourceType"] == "OperationOutcome", outcome
    return [i for i in outcome.get("issue", []) if i["severity"] in ("error", "fatal")]


@pytest.fixture(scope="session")
def fhir(fhir_server: FhirTestServer) -> Iterator[Fhir]:
    client = Fhir(fhir_server.base_url)
    yield client
    client.session.close()


def patient(mrn: str | None = None, family: str = "Testpatient", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": MRN, "value": mrn or uuid.uuid4().hex}],
        "name": [{"family": family, "given": ["Test"]}],
        "gender": "female",
        "birthDate": "1961-04-12",
        **extra,
    }


def procedure(patient_ref: str, cpt: str = "64493", status: str = "completed") -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "status": status,
        "subject": {"reference": patient_ref},
        "code": {"coding": [{"system": CPT, "code": cpt, "display": "Facet joint injection"}]},
        "performedDateTime": "2024-03-01T10:00:00Z",
    }


def valid_claim(patient_ref: str, coverage_ref: str, provider_ref: str) -> dict[str, Any]:
    return {
        "resourceType": "Claim",
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
        "use": "claim",
        "patient": {"reference": patient_ref},
        "created": "2024-03-02",
        "provider": {"reference": provider_ref},
        "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": coverage_ref}}],
    }


# --------------------------------------------------------------------------------------------
# basics
# --------------------------------------------------------------------------------------------


def test_metadata(fhir: Fhir) -> None:
    r = fhir.get("metadata")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith(FHIR_JSON)
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    types = {res["type"] for res in cs["rest"][0]["resource"]}
    assert {"Patient", "Procedure", "Claim", "Coverage", "Subscription"} <= types


def test_patient_create_read_update_vread_history(fhir: Fhir) -> None:
    r = fhir.post("Patient", patient())
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"].startswith(FHIR_JSON)
    created = r.json()
    pid, v1 = created["id"], created["meta"]["versionId"]
    assert r.headers["Location"] == f"{fhir.base_url}/Patient/{pid}/_history/{v1}"
    assert r.headers["ETag"] == f'W/"{v1}"'

    r = fhir.get(f"Patient/{pid}")
    assert r.status_code == 200
    assert r.json()["name"][0]["family"] == "Testpatient"
    assert r.headers["ETag"] == f'W/"{v1}"'

    changed = dict(r.json(), name=[{"family": "Renamed"}])
    r = fhir.put(f"Patient/{pid}", changed)
    assert r.status_code == 200, r.text
    v2 = r.json()["meta"]["versionId"]
    assert v2 != v1
    assert r.headers["ETag"] == f'W/"{v2}"'
    assert r.headers["Location"].startswith(f"{fhir.base_url}/Patient/{pid}/_history/")

    assert fhir.get(f"Patient/{pid}").json()["name"][0]["family"] == "Renamed"
    assert fhir.get(f"Patient/{pid}/_history/{v1}").json()["name"][0]["family"] == "Testpatient"
    history = fhir.get(f"Patient/{pid}/_history").json()
    assert history["type"] == "history"
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == [v2, v1]

    # optimistic locking with a stale version
    r = fhir.put(f"Patient/{pid}", changed, If_Match=f'W/"{v1}"')
    assert r.status_code == 412
    assert r.json()["resourceType"] == "OperationOutcome"


def test_update_as_create_and_delete(fhir: Fhir) -> None:
    pid = f"client-{uuid.uuid4().hex[:12]}"
    r = fhir.put(f"Patient/{pid}", dict(patient(), id=pid))
    assert r.status_code == 201, r.text
    assert fhir.delete(f"Patient/{pid}").status_code == 200
    r = fhir.get(f"Patient/{pid}")
    assert r.status_code == 410
    assert r.json()["resourceType"] == "OperationOutcome"
    assert fhir.get(f"Patient/never-{pid}").status_code == 404


def test_procedure_create_read_update(fhir: Fhir) -> None:
    pat = fhir.create(patient())
    proc = fhir.create(procedure(f"Patient/{pat['id']}", status="in-progress"))
    r = fhir.get(f"Procedure/{proc['id']}")
    assert r.status_code == 200
    assert r.json()["code"]["coding"][0] == {"system": CPT, "code": "64493", "display": "Facet joint injection"}
    r = fhir.put(f"Procedure/{proc['id']}", dict(r.json(), status="completed"))
    assert r.status_code == 200, r.text
    assert fhir.get(f"Procedure/{proc['id']}").json()["status"] == "completed"


def test_errors_are_operation_outcomes(fhir: Fhir) -> None:
    r = fhir.session.post(fhir.url("Patient"), data=b"{not json", headers={"Content-Type": FHIR_JSON}, timeout=30)
    assert r.status_code == 400
    assert r.headers["Content-Type"].startswith(FHIR_JSON)
    assert errors(r.json())
    r = fhir.post("Patient", {"resourceType": "Procedure", "status": "completed"})
    assert r.status_code == 400
    assert errors(r.json())


# --------------------------------------------------------------------------------------------
# search
# --------------------------------------------------------------------------------------------


def test_search_references_include_tokens(fhir: Fhir) -> None:
    mrn = uuid.uuid4().hex
    pat = fhir.create(patient(mrn))
    pid = pat["id"]
    p1 = fhir.create(procedure(f"Patient/{pid}", "64493"))
    p2 = fhir.create(procedure(f"Patient/{pid}", "64494"))
    fhir.create(procedure(f"Patient/{pid}", "64490"))

    for query in (f"Procedure?patient=Patient/{pid}", f"Procedure?patient={pid}", f"Procedure?subject=Patient/{pid}"):
        assert len(matches(fhir.search(query))) == 3, query
    assert matches(fhir.search("Procedure?patient=Patient/does-not-exist")) == []

    # token search, comma = OR
    both = fhir.search(f"Procedure?patient={pid}&code={CPT}|64493,{CPT}|64494")
    assert {p["id"] for p in matches(both)} == {p1["id"], p2["id"]}
    assert [p["id"] for p in matches(fhir.search(f"Procedure?patient={pid}&code={CPT}|64494"))] == [p2["id"]]

    # _include / _revinclude
    bundle = fhir.search(f"Procedure?patient={pid}&_include=Procedure:patient")
    assert len(matches(bundle)) == 3
    assert [r["id"] for r in includes(bundle)] == [pid]
    assert all(e["fullUrl"].startswith(fhir.base_url) for e in bundle["entry"])
    bundle = fhir.search(f"Patient?_id={pid}&_revinclude=Procedure:patient")
    assert [r["id"] for r in matches(bundle)] == [pid]
    assert len(includes(bundle)) == 3

    # identifier=system|value and _lastUpdated
    assert [r["id"] for r in matches(fhir.search(f"Patient?identifier={MRN}|{mrn}"))] == [pid]
    last_updated = pat["meta"]["lastUpdated"]
    assert len(matches(fhir.search(f"Patient?identifier={MRN}|{mrn}&_lastUpdated=ge{last_updated}"))) == 1
    assert matches(fhir.search(f"Patient?identifier={MRN}|{mrn}&_lastUpdated=gt2999-01-01")) == []

    # unknown search parameters are an error (as in HAPI), not an empty result
    r = fhir.get(f"Patient?identifer={MRN}|{mrn}")
    assert r.status_code == 400
    assert errors(r.json())


def test_paging_follows_next_links(fhir: Fhir) -> None:
    family = f"Paging{uuid.uuid4().hex[:10]}"
    created = {fhir.create(patient(family=family))["id"] for _ in range(5)}
    url: str | None = f"Patient?family={family}&_count=2"
    seen: list[str] = []
    page_sizes = []
    while url:
        bundle = fhir.search(url)
        assert bundle["total"] == 5
        page_sizes.append(len(matches(bundle)))
        seen += [r["id"] for r in matches(bundle)]
        url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
        assert len(page_sizes) <= 5, "paging does not end"
    assert page_sizes == [2, 2, 1]
    assert len(seen) == 5 and set(seen) == created


# --------------------------------------------------------------------------------------------
# transactions and conditional create
# --------------------------------------------------------------------------------------------


def test_transaction_with_urn_uuid_and_if_none_exist(fhir: Fhir) -> None:
    pat = fhir.create(patient())
    proc = fhir.create(procedure(f"Patient/{pat['id']}"))
    mrn = uuid.uuid4().hex
    u_org, u_pat, u_cov = (f"urn:uuid:{uuid.uuid4()}" for _ in range(3))
    claim = valid_claim(u_pat, u_cov, u_org)
    claim["procedure"] = [{"sequence": 1, "procedureReference": {"reference": f"Procedure/{proc['id']}"}}]
    tx: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": u_org,
                "resource": {"resourceType": "Organization", "name": "Test Payer"},
                "request": {"method": "POST", "url": "Organization"},
            },
            {
                "fullUrl": u_pat,
                "resource": patient(mrn),
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={MRN}|{mrn}"},
            },
            {
                "fullUrl": u_cov,
                "resource": {
                    "resourceType": "Coverage",
                    "status": "active",
                    "beneficiary": {"reference": u_pat},
                    "payor": [{"reference": u_org}],
                },
                "request": {"method": "POST", "url": "Coverage"},
            },
            {"resource": claim, "request": {"method": "POST", "url": "Claim"}},
        ],
    }
    r = fhir.post("", tx)
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert all(s.startswith("201") for s in statuses), statuses
    org_id, pat_id, cov_id, claim_id = (e["resource"]["id"] for e in result["entry"])

    stored = fhir.get(f"Claim/{claim_id}").json()
    assert stored["patient"]["reference"] == f"Patient/{pat_id}"
    assert stored["provider"]["reference"] == f"Organization/{org_id}"
    assert stored["insurance"][0]["coverage"]["reference"] == f"Coverage/{cov_id}"
    assert stored["procedure"][0]["procedureReference"]["reference"] == f"Procedure/{proc['id']}"
    assert fhir.get(f"Coverage/{cov_id}").json()["beneficiary"]["reference"] == f"Patient/{pat_id}"

    # the same transaction again: ifNoneExist finds the Patient, references point to it
    for entry in tx["entry"]:
        entry["resource"].pop("id", None)
    r = fhir.post("", tx)
    assert r.status_code == 200, r.text
    again = r.json()["entry"]
    assert again[1]["response"]["status"].startswith("200")
    assert again[1]["resource"]["id"] == pat_id
    assert fhir.get(f"Claim/{again[3]['resource']['id']}").json()["patient"]["reference"] == f"Patient/{pat_id}"
    assert len(matches(fhir.search(f"Patient?identifier={MRN}|{mrn}"))) == 1


def test_failed_transaction_is_rolled_back(fhir: Fhir) -> None:
    existing = fhir.create(patient(family="Unchanged"))
    family = f"Rollback{uuid.uuid4().hex[:10]}"
    tx = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(family=family), "request": {"method": "POST", "url": "Patient"}},
            {
                "resource": dict(existing, name=[{"family": "Changed"}]),
                "request": {"method": "PUT", "url": f"Patient/{existing['id']}"},
            },
            # invalid: Procedure without status and subject
            {
                "resource": {"resourceType": "Procedure", "code": {"text": "x"}},
                "request": {"method": "POST", "url": "Procedure"},
            },
        ],
    }
    r = fhir.post("", tx)
    assert r.status_code in (400, 422), r.text
    assert errors(r.json())
    assert matches(fhir.search(f"Patient?family={family}")) == []
    after = fhir.get(f"Patient/{existing['id']}").json()
    assert after["name"][0]["family"] == "Unchanged"
    assert after["meta"]["versionId"] == existing["meta"]["versionId"]
    assert len(fhir.get(f"Patient/{existing['id']}/_history").json()["entry"]) == 1


def test_batch_reports_each_entry(fhir: Fhir) -> None:
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Procedure"}, "request": {"method": "POST", "url": "Procedure"}},
        ],
    }
    r = fhir.post("", batch)
    assert r.status_code == 200, r.text
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses[0].startswith("201") and statuses[1].startswith("4"), statuses


def test_conditional_create_with_if_none_exist_header(fhir: Fhir) -> None:
    mrn = uuid.uuid4().hex
    condition = f"identifier={MRN}|{mrn}"
    first = fhir.post("Patient", patient(mrn), If_None_Exist=condition)
    second = fhir.post("Patient", patient(mrn), If_None_Exist=condition)
    assert first.status_code == 201, first.text
    assert second.status_code == 200, second.text
    assert first.json()["id"] == second.json()["id"]
    assert len(matches(fhir.search(f"Patient?{condition}"))) == 1


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def test_validate_accepts_valid_claim(fhir: Fhir) -> None:
    claim = valid_claim("Patient/p1", "Coverage/c1", "Organization/o1")
    r = fhir.post("Claim/$validate", claim)
    assert r.status_code == 200, r.text
    assert errors(r.json()) == []
    wrapped = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": claim}]}
    r = fhir.post("Claim/$validate", wrapped)
    assert r.status_code == 200, r.text
    assert errors(r.json()) == []


def test_validate_rejects_invalid_claim(fhir: Fhir) -> None:
    r = fhir.post("Claim/$validate", {"resourceType": "Claim", "status": "active"})
    assert r.status_code in (400, 422)
    paths = {e for issue in errors(r.json()) for e in issue.get("expression", [])}
    assert {"Claim.patient", "Claim.insurance", "Claim.type"} <= paths

    bad_date = dict(valid_claim("Patient/p1", "Coverage/c1", "Organization/o1"), created="2024-1-2")
    r = fhir.post(
        "Claim/$validate", {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": bad_date}]}
    )
    assert r.status_code in (400, 422)
    assert any("Claim.created" in issue.get("expression", []) for issue in errors(r.json()))

    # creates are validated the same way and store nothing
    r = fhir.post("Claim", bad_date)
    assert r.status_code in (400, 422)
    assert errors(r.json())


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "Patient", "gender": "banana"},
        {"resourceType": "Patient", "birthDate": "12/04/1961"},
        {"resourceType": "Patient", "unknownElement": True},
        {"resourceType": "Patient", "name": "Bob"},
        {"resourceType": "Procedure", "status": "nope", "subject": {"reference": "Patient/x"}},
    ],
    ids=["bad-gender-code", "bad-date", "unknown-element", "name-not-array", "bad-status-code"],
)
def test_invalid_resources_are_rejected(fhir: Fhir, resource: dict[str, Any]) -> None:
    r = fhir.post(resource["resourceType"], resource)
    assert r.status_code in (400, 422), r.text
    assert errors(r.json())


# --------------------------------------------------------------------------------------------
# rest-hook subscriptions
# --------------------------------------------------------------------------------------------


@dataclass
class Hook:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class HookReceiver:
    server: ThreadingHTTPServer
    received: queue.Queue[Hook] = field(default_factory=queue.Queue)
    fail_first: int = 0

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def next(self, timeout: float = 10.0) -> Hook:
        try:
            return self.received.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no rest-hook notification within {timeout} s")

    def assert_quiet(self, seconds: float = 1.0) -> None:
        time.sleep(seconds)
        assert self.received.empty(), f"unexpected notification: {self.received.get()}"


@pytest.fixture
def hook() -> Iterator[HookReceiver]:
    """A tiny HTTP receiver on 127.0.0.1 that records every request."""
    receiver: HookReceiver

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            receiver.received.put(Hook(self.command, self.path, headers, body))
            failing = receiver.fail_first > 0
            receiver.fail_first -= 1
            self.send_response(500 if failing else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_PUT = _record

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = HookReceiver(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def subscribe(fhir: Fhir) -> Iterator[Any]:
    """Create Subscriptions; they are deleted after the test so later tests don't trigger them."""
    created: list[str] = []

    def _subscribe(
        criteria: str, endpoint: str, payload: str | None = None, headers: list[str] | None = None
    ) -> dict[str, Any]:
        channel: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint}
        if payload:
            channel["payload"] = payload
        if headers:
            channel["header"] = headers
        sub = {
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "test",
            "criteria": criteria,
            "channel": channel,
        }
        r = fhir.post("Subscription", sub)
        assert r.status_code == 201, r.text
        created.append(r.json()["id"])
        result: dict[str, Any] = r.json()
        return result

    yield _subscribe
    for sid in created:
        fhir.delete(f"Subscription/{sid}")


def test_rest_hook_with_payload_puts_resource(fhir: Fhir, hook: HookReceiver, subscribe: Any) -> None:
    sub = subscribe(
        f"Procedure?code={CPT}|64493,{CPT}|64494",
        hook.url,
        payload=FHIR_JSON,
        headers=["Authorization: Bearer hook-secret", "X-Test-Run: facet"],
    )
    assert sub["status"] == "active"
    assert fhir.get(f"Subscription/{sub['id']}").json()["status"] == "active"
    hook.assert_quiet(0.3)  # creating the Subscription itself does not notify

    pat = fhir.create(patient())
    fhir.create(procedure(f"Patient/{pat['id']}", "64490"))  # does not match the criteria
    proc = fhir.create(procedure(f"Patient/{pat['id']}", "64494"))

    got = hook.next()
    assert got.method == "PUT"
    assert got.path == f"/hook/Procedure/{proc['id']}"
    assert got.headers["authorization"] == "Bearer hook-secret"
    assert got.headers["x-test-run"] == "facet"
    assert got.headers["content-type"].startswith(FHIR_JSON)
    body = json.loads(got.body)
    assert body["resourceType"] == "Procedure" and body["id"] == proc["id"]
    assert body["code"]["coding"][0]["code"] == "64494"

    # an update of a matching resource notifies again
    fhir.put(f"Procedure/{proc['id']}", dict(proc, status="completed", note=[{"text": "updated"}]))
    got = hook.next()
    assert (got.method, got.path) == ("PUT", f"/hook/Procedure/{proc['id']}")
    assert json.loads(got.body)["note"][0]["text"] == "updated"
    hook.assert_quiet(0.5)


def test_rest_hook_without_payload_posts_empty_body(fhir: Fhir, hook: HookReceiver, subscribe: Any) -> None:
    mrn = uuid.uuid4().hex
    subscribe(f"Patient?identifier={MRN}|{mrn}", hook.url, headers=["X-Hook-Token: abc123"])
    fhir.create(patient(mrn))
    got = hook.next()
    assert (got.method, got.path, got.body) == ("POST", "/hook", b"")
    assert got.headers["x-hook-token"] == "abc123"
    hook.assert_quiet(0.5)


def test_rest_hook_is_retried_after_a_failure(fhir: Fhir, hook: HookReceiver, subscribe: Any) -> None:
    hook.fail_first = 1
    mrn = uuid.uuid4().hex
    subscribe(f"Patient?identifier={MRN}|{mrn}", hook.url, payload=FHIR_JSON)
    pat = fhir.create(patient(mrn))
    first, second = hook.next(), hook.next()
    assert first.path == second.path == f"/hook/Patient/{pat['id']}"


def test_rest_hook_not_sent_for_rolled_back_transaction(fhir: Fhir, hook: HookReceiver, subscribe: Any) -> None:
    mrn = uuid.uuid4().hex
    subscribe(f"Patient?identifier={MRN}|{mrn}", hook.url)
    tx = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(mrn), "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Procedure"}, "request": {"method": "POST", "url": "Procedure"}},
        ],
    }
    assert fhir.post("", tx).status_code in (400, 422)
    hook.assert_quiet(1.0)
