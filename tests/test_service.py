"""The service's HTTP layer (FastAPI TestClient, a fake job handler): notifications in every shape
HAPI and the Subscriptions Backport IG send, malformed ones refused and not queued, auth, size
limits, the synchronous /claim and /check API, the OpenAPI document. Queue and worker tests are
in test_service_queue.py; the real service process against the FHIR test server in
test_service_e2e.py."""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from fhir.resources.R4B import get_fhir_model_class

from adapter.service.app import create_app
from adapter.service.queue import Job
from adapter.service.settings import Settings

with warnings.catch_warnings():
    # Starlette asks for the httpx2 package; the httpx TestClient works the same.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

FHIR_JSON = "application/fhir+json"
TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = sorted(p for p in (REPO / "examples").iterdir() if p.is_dir())
STATUS_PROFILE = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4"

MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[MakeClient]:
    opened: list[TestClient] = []

    def make(
        handler: Callable[[Job], str | None] | None = None, run_worker: bool = False, **options: Any
    ) -> TestClient:
        settings = Settings(
            fhir_base="http://fhir.invalid/fhir", db_path=tmp_path / f"queue{len(opened)}.sqlite", **options
        )
        app = create_app(settings, handler=handler or (lambda job: "ok"), run_worker=run_worker)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client(token=TOKEN)


def jobs(client: TestClient) -> list[Job]:
    return list(client.app.state.queue.jobs())  # type: ignore[attr-defined]


def assert_valid_r4(resource: dict[str, Any]) -> None:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def procedure(id_: str = "p1", version: str | None = "1", **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Procedure",
        "id": id_,
        "status": "completed",
        "subject": {"reference": "Patient/pt1"},
        **extra,
    }
    if version is not None:
        resource["meta"] = {"versionId": version, "lastUpdated": "2026-11-27T10:00:00Z"}
    return resource


def put(client: TestClient, resource: dict[str, Any], *, path: str | None = None, **headers: str) -> Any:
    path = path or f"/notify/{resource['resourceType']}/{resource['id']}"
    return client.put(
        path,
        content=json.dumps(resource),
        headers={"Content-Type": f"{FHIR_JSON}; charset=UTF-8", **AUTH, **headers},
    )


def post(client: TestClient, body: Any = None, **headers: str) -> Any:
    content = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    return client.post("/notify", content=content, headers={"Content-Type": FHIR_JSON, **AUTH, **headers})


# --------------------------------------------------------------------------- Backport bundles


def status_parameters(
    kind: str, *, events: list[dict[str, Any]] | None = None, status: str = "active"
) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": "https://example.org/fhir/Subscription/admission"}},
        {"name": "topic", "valueCanonical": "http://example.org/SubscriptionTopic/facet"},
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": "2"},
    ]
    for event in events or []:
        parts: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": event["number"]},
            {"name": "timestamp", "valueInstant": "2020-05-29T11:44:13.1882432-05:00"},
        ]
        if "focus" in event:
            parts.append({"name": "focus", "valueReference": {"reference": event["focus"]}})
        parameters.append({"name": "notification-event", "part": parts})
    return {
        "resourceType": "Parameters",
        "id": "385b23bd-6d03-462e-894d-a0694045d65c",
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": parameters,
    }


def notification(kind: str, *, events: list[dict[str, Any]] | None = None, entries: list[Any] = ()) -> dict[str, Any]:
    """A Backport R4 notification Bundle in the IG examples' shape."""
    return {
        "resourceType": "Bundle",
        "id": "r4-notification",
        "type": "history",
        "timestamp": "2020-05-29T11:44:13.1882432-05:00",
        "entry": [
            {
                "fullUrl": "urn:uuid:385b23bd-6d03-462e-894d-a0694045d65c",
                "resource": status_parameters(kind, events=events),
                "request": {"method": "GET", "url": "https://example.org/fhir/Subscription/admission/$status"},
                "response": {"status": "200"},
            },
            *entries,
        ],
    }


def hapi_notification(resource: dict[str, Any]) -> dict[str, Any]:
    """HAPI's own shape: status entry without request/response, timestamp as valueDate, the
    resource as an update entry."""
    bundle = notification("event-notification", events=[{"number": "7", "focus": f"Procedure/{resource['id']}"}])
    status = bundle["entry"][0]
    del status["request"], status["response"]
    for parameter in status["resource"]["parameter"]:
        for part in parameter.get("part", []):
            if part["name"] == "timestamp":
                part.pop("valueInstant")
                part["valueDate"] = "2026-11-27"
    bundle["entry"].append(
        {
            "fullUrl": f"http://hapi.example/fhir/Procedure/{resource['id']}",
            "resource": resource,
            "request": {"method": "PUT", "url": f"Procedure/{resource['id']}"},
        }
    )
    return bundle


# --------------------------------------------------------------------------- metadata, healthz, auth


def test_metadata_is_an_open_capability_statement(client: TestClient) -> None:
    r = client.get("/notify/metadata")  # no token: HAPI's reachability check sends none
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(FHIR_JSON)
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert (cs["fhirVersion"], cs["status"], cs["kind"]) == ("4.0.1", "active", "instance")
    assert cs["rest"][0]["mode"] == "server"
    assert {res["type"] for res in cs["rest"][0]["resource"]} == {"Procedure", "ServiceRequest"}
    assert cs["implementation"]["url"].endswith("/notify")
    assert_valid_r4(cs)


def test_healthz_reports_queue_depth_and_worker(make_client: MakeClient) -> None:
    client = make_client(token=TOKEN, run_worker=True, handler=lambda job: "ok")
    r = client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["worker"]["alive"] is True
    assert body["queue"]["depth"] == 0


def test_healthz_is_503_when_the_worker_is_not_running(make_client: MakeClient) -> None:
    client = make_client(run_worker=True)
    client.app.state.worker.stop()  # type: ignore[attr-defined]
    r = client.get("/healthz")
    assert r.status_code == 503 and r.json()["worker"]["alive"] is False


def test_healthz_reports_a_stuck_worker(make_client: MakeClient) -> None:
    entered, release = threading.Event(), threading.Event()

    def hangs(job: Job) -> str:
        entered.set()
        release.wait(30)
        return "ok"

    # Budget: 3 x 0.05 s polls + a 0.3 s job lease.
    client = make_client(run_worker=True, handler=hangs, lease_seconds=0.3, poll_seconds=0.05)
    worker = client.app.state.worker  # type: ignore[attr-defined]
    assert worker.stall_seconds == pytest.approx(0.45)
    try:
        assert client.get("/healthz").status_code == 200
        post(client)
        assert entered.wait(5)
        deadline = time.monotonic() + 5
        while (r := client.get("/healthz")).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.status_code == 503, r.json()
        body = r.json()
        assert body["status"] == "error"
        assert body["worker"]["alive"] is False and body["worker"]["stalled"] is True
        assert body["worker"]["seconds_since_loop"] > 0.45
        assert worker.alive  # the thread exists; only the loop tells that it is stuck
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while (r := client.get("/healthz")).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert r.status_code == 200 and r.json()["worker"]["alive"] is True
    assert r.json()["worker"]["processed"] == 1


def test_healthz_counts_waiting_jobs(client: TestClient) -> None:
    post(client)
    put(client, procedure())
    body = client.get("/healthz").json()
    assert body["queue"]["depth"] == 2 and body["queue"]["pending"] == 2


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer"}],
    ids=["missing", "wrong", "not-bearer", "empty"],
)
def test_token_required_on_notify_claim_check(client: TestClient, headers: dict[str, str]) -> None:
    requests = [
        ("PUT", "/notify/Procedure/p1", json.dumps(procedure()).encode()),
        ("POST", "/notify", b""),
        ("POST", "/notify", json.dumps(notification("heartbeat")).encode()),
        ("DELETE", "/notify/Procedure/p1", b""),
        ("POST", "/claim?payer=medicare", b"{}"),
        ("POST", "/check?payer=medicare", b"{}"),
    ]
    for method, path, body in requests:
        r = client.request(method, path, content=body, headers={"Content-Type": FHIR_JSON, **headers})
        assert r.status_code == 401, (method, path, r.text)
        assert r.headers["content-type"].startswith(FHIR_JSON)
        assert r.headers["www-authenticate"].startswith("Bearer")
        outcome = r.json()
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "login"
    assert jobs(client) == []


def test_right_token_accepted_and_open_endpoints_stay_open(client: TestClient) -> None:
    assert put(client, procedure()).status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/notify/metadata").status_code == 200
    assert client.get("/openapi.json").status_code == 200


def test_without_token_setting_no_auth_needed(make_client: MakeClient) -> None:
    client = make_client()
    r = client.post("/notify", content=b"")
    assert r.status_code == 200
    assert "security" not in json.dumps(client.get("/openapi.json").json()["paths"]["/notify"])


# --------------------------------------------------------------------------- HAPI rest-hook


def test_hapi_put_queued_once_when_delivered_twice(client: TestClient) -> None:
    first = put(client, procedure(version="1"))
    assert first.status_code == 200
    assert first.headers["content-type"].startswith(FHIR_JSON)
    outcome = first.json()
    assert outcome["resourceType"] == "OperationOutcome"  # HAPI fails on an empty or {} answer
    assert "job 1 queued" in outcome["issue"][0]["details"]["text"]
    assert_valid_r4(outcome)

    again = put(client, procedure(version="1"))
    assert again.status_code == 200
    assert "already queued" in again.json()["issue"][0]["details"]["text"]
    [job] = jobs(client)
    assert (job.kind, job.resource_type, job.resource_id, job.version) == ("resource", "Procedure", "p1", "1")
    assert job.deliveries == 2 and job.state == "pending"


def test_a_new_version_is_a_new_job(client: TestClient) -> None:
    put(client, procedure(version="1"))
    put(client, procedure(version="2"))
    assert [j.version for j in jobs(client)] == ["1", "2"]


def test_without_version_id_last_updated_or_body_tells_deliveries_apart(client: TestClient) -> None:
    bare = procedure(version=None)
    put(client, bare)
    put(client, bare)  # byte-identical: the same delivery
    assert len(jobs(client)) == 1
    put(client, {**bare, "meta": {"lastUpdated": "2026-11-27T11:00:00Z"}})
    put(client, {**bare, "meta": {"lastUpdated": "2026-11-27T11:00:00Z"}})
    assert len(jobs(client)) == 2


def test_service_request_is_queued_other_types_ignored(client: TestClient) -> None:
    sr = {
        "resourceType": "ServiceRequest",
        "id": "sr1",
        "status": "active",
        "intent": "order",
        "meta": {"versionId": "3"},
    }
    assert put(client, sr).status_code == 200
    observation = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"}}
    r = put(client, observation)
    assert r.status_code == 200 and "nothing to do" in r.json()["issue"][0]["details"]["text"]
    assert [(j.resource_type, j.resource_id) for j in jobs(client)] == [("ServiceRequest", "sr1")]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/fhir+json",
        "application/json",
        "application/fhir+json;charset=utf-8",
        "application/json; charset=UTF-8",
    ],
)
def test_json_content_types_accepted(client: TestClient, content_type: str) -> None:
    assert put(client, procedure(), **{"Content-Type": content_type}).status_code == 200


def test_delete_notification_acknowledged_not_queued(client: TestClient) -> None:
    r = client.delete("/notify/Procedure/p1", headers=AUTH)
    assert r.status_code == 200 and r.json()["resourceType"] == "OperationOutcome"
    assert jobs(client) == []


def test_empty_post_is_a_ping_that_queues_one_requery(client: TestClient) -> None:
    # HAPI's ping for a Subscription without payload: an empty (form) POST to the endpoint.
    r = client.post("/notify", content=b"", headers={"Content-Type": "application/x-www-form-urlencoded", **AUTH})
    assert r.status_code == 200
    assert r.json()["resourceType"] == "OperationOutcome"
    post(client)
    client.post("/notify/", content=b"", headers=AUTH)  # an endpoint configured with a trailing slash
    [job] = jobs(client)
    assert (job.kind, job.source, job.deliveries) == ("requery", "ping", 3)


# --------------------------------------------------------------------------- Subscriptions Backport


@pytest.mark.parametrize("kind", ["handshake", "heartbeat", "query-status"])
def test_backport_handshake_heartbeat_status_acknowledged_no_job(client: TestClient, kind: str) -> None:
    r = post(client, notification(kind))
    assert r.status_code == 200
    answer = r.json()
    # HAPI posts these with its transaction() client, which parses a Bundle from the answer.
    assert answer["resourceType"] == "Bundle" and answer["type"] == "transaction-response"
    assert answer["entry"][0]["response"]["status"] == "200"
    assert answer["entry"][0]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert_valid_r4(answer)
    assert jobs(client) == []


def test_backport_status_is_logged_only_when_it_is_a_known_code(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    def heartbeat(status: str) -> dict[str, Any]:
        bundle = notification("heartbeat")
        for parameter in bundle["entry"][0]["resource"]["parameter"]:
            if parameter["name"] == "status":
                parameter["valueCode"] = status
        return bundle

    assert post(client, heartbeat("error")).status_code == 200
    sent = "Rivera Ana 1958-04-02"  # whatever a sender puts there
    r = post(client, heartbeat(sent))
    assert r.status_code == 200 and sent not in r.text
    text = "\n".join(rec.getMessage() for rec in caplog.records if rec.name.startswith("adapter"))
    assert "backport heartbeat (error)" in text and "backport heartbeat (unknown status)" in text
    assert "Rivera" not in text


def test_backport_id_only_queues_each_focus(client: TestClient) -> None:
    bundle = notification(
        "event-notification",
        events=[
            {"number": "2", "focus": "https://example.org/fhir/Procedure/p1"},
            {"number": "3", "focus": "Procedure/p2/_history/4"},
        ],
    )
    r = post(client, bundle)
    assert r.status_code == 200
    assert len(r.json()["entry"]) == 1
    found = [(j.source, j.resource_id, j.version) for j in jobs(client)]
    assert found == [("backport", "p1", None), ("backport", "p2", "4")]
    post(client, bundle)  # the same events again: no new jobs
    assert len(jobs(client)) == 2


def test_backport_full_resource_queues_the_resource(client: TestClient) -> None:
    resource = procedure("p9", version="5")
    bundle = notification(
        "event-notification",
        events=[{"number": "2", "focus": "https://example.org/fhir/Procedure/p9"}],
        entries=[
            {
                "fullUrl": "https://example.org/fhir/Procedure/p9",
                "resource": resource,
                "request": {"method": "POST", "url": "Procedure"},
                "response": {"status": "201"},
            },
            {
                "fullUrl": "https://example.org/fhir/Patient/pt1",
                "resource": {"resourceType": "Patient", "id": "pt1"},
                "request": {"method": "GET", "url": "Patient/pt1"},
                "response": {"status": "200"},
            },
        ],
    )
    r = post(client, bundle)
    assert r.status_code == 200 and len(r.json()["entry"]) == 3
    [job] = jobs(client)
    assert (job.resource_type, job.resource_id, job.version) == ("Procedure", "p9", "5")
    # The same version through the rest-hook channel is the same notification.
    put(client, resource)
    assert len(jobs(client)) == 1


def test_backport_hapi_shape_accepted(client: TestClient) -> None:
    assert post(client, hapi_notification(procedure("h1", version="2"))).status_code == 200
    assert [(j.resource_id, j.version) for j in jobs(client)] == [("h1", "2")]


def test_backport_urn_uuid_focus_resolved_through_the_entries(client: TestClient) -> None:
    bundle = notification(
        "event-notification",
        events=[{"number": "1", "focus": "urn:uuid:0c6d3b0e-8b0a-4a1c-9a7e-1f0d6f5b2a11"}],
        entries=[
            {
                "fullUrl": "urn:uuid:0c6d3b0e-8b0a-4a1c-9a7e-1f0d6f5b2a11",
                "resource": procedure("u1", version="1"),
            }
        ],
    )
    assert post(client, bundle).status_code == 200
    assert [j.resource_id for j in jobs(client)] == ["u1"]


def test_backport_empty_content_queues_a_requery(client: TestClient) -> None:
    assert post(client, notification("event-notification", events=[{"number": "2"}])).status_code == 200
    [job] = jobs(client)
    assert (job.kind, job.source) == ("requery", "backport")


def test_backport_other_focus_types_ignored(client: TestClient) -> None:
    bundle = notification("event-notification", events=[{"number": "2", "focus": "Encounter/e1"}])
    assert post(client, bundle).status_code == 200
    assert jobs(client) == []


# --------------------------------------------------------------------------- malformed → 400, nothing queued


def _without(kind: str, name: str) -> dict[str, Any]:
    bundle = notification(kind)
    params = bundle["entry"][0]["resource"]["parameter"]
    bundle["entry"][0]["resource"]["parameter"] = [p for p in params if p["name"] != name]
    return bundle


def _bad_focus() -> dict[str, Any]:
    return notification("event-notification", events=[{"number": "1", "focus": "not a reference"}])


def _first_entry_procedure() -> dict[str, Any]:
    bundle = notification("event-notification")
    bundle["entry"][0]["resource"] = procedure()
    return bundle


MALFORMED_PUTS = {
    "not-json": ("/notify/Procedure/p1", b'{"resourceType": "Procedure", '),
    "array": ("/notify/Procedure/p1", b"[]"),
    "no-resource-type": ("/notify/Procedure/p1", json.dumps({"id": "p1"}).encode()),
    "type-mismatch": ("/notify/Procedure/p1", json.dumps({"resourceType": "Patient", "id": "p1"}).encode()),
    "id-mismatch": ("/notify/Procedure/p1", json.dumps(procedure("p2")).encode()),
    "id-missing": ("/notify/Procedure/p1", json.dumps({"resourceType": "Procedure", "status": "completed"}).encode()),
    "empty-body": ("/notify/Procedure/p1", b""),
    "lower-case-type": ("/notify/procedure/p1", json.dumps({**procedure(), "resourceType": "procedure"}).encode()),
    "bad-id": ("/notify/Procedure/p_1!", json.dumps(procedure("p_1!")).encode()),
}

MALFORMED_POSTS = {
    "not-json": b"<Bundle/>",
    "resource-not-bundle": json.dumps(procedure()).encode(),
    "not-history": json.dumps({**notification("heartbeat"), "type": "transaction"}).encode(),
    "no-entries": json.dumps({"resourceType": "Bundle", "type": "history"}).encode(),
    "first-entry-not-parameters": json.dumps(_first_entry_procedure()).encode(),
    "no-type": json.dumps(_without("heartbeat", "type")).encode(),
    "no-status": json.dumps(_without("heartbeat", "status")).encode(),
    "no-subscription": json.dumps(_without("heartbeat", "subscription")).encode(),
    "unknown-type": json.dumps(notification("tea-time")).encode(),
    "bad-focus": json.dumps(_bad_focus()).encode(),
}


@pytest.mark.parametrize(("path", "body"), MALFORMED_PUTS.values(), ids=MALFORMED_PUTS.keys())
def test_malformed_put_is_400_and_not_queued(client: TestClient, path: str, body: bytes) -> None:
    r = client.put(path, content=body, headers={"Content-Type": FHIR_JSON, **AUTH})
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith(FHIR_JSON)
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["severity"] == "error"
    assert_valid_r4(outcome)
    assert jobs(client) == []


@pytest.mark.parametrize("body", MALFORMED_POSTS.values(), ids=MALFORMED_POSTS.keys())
def test_malformed_post_is_400_and_not_queued(client: TestClient, body: bytes) -> None:
    r = post(client, body)
    assert r.status_code == 400, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert jobs(client) == []


def test_a_malformed_answer_does_not_echo_the_body(client: TestClient) -> None:
    r = client.put("/notify/Procedure/p1", content=b'{"name": "Rivera", ', headers={"Content-Type": FHIR_JSON, **AUTH})
    assert r.status_code == 400 and "Rivera" not in r.text


@pytest.mark.parametrize(
    "content_type", ["application/fhir+xml", "text/plain", "application/fhir+json; charset=latin-1"]
)
def test_unsupported_content_type_is_415_and_not_queued(client: TestClient, content_type: str) -> None:
    r = put(client, procedure(), **{"Content-Type": content_type})
    assert r.status_code == 415 and r.json()["resourceType"] == "OperationOutcome"
    assert jobs(client) == []


# --------------------------------------------------------------------------- size limits


def test_oversized_notification_413_by_content_length(make_client: MakeClient) -> None:
    client = make_client(token=TOKEN, max_notify_bytes=1000)
    big = procedure(note=[{"text": "x" * 2000}])
    r = put(client, big)
    assert r.status_code == 413
    assert r.json()["issue"][0]["code"] == "too-costly"
    assert jobs(client) == []


def test_oversized_streamed_body_413_without_content_length(make_client: MakeClient) -> None:
    client = make_client(token=TOKEN, max_notify_bytes=1000)

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b" " * 100  # 10 kB of whitespace, sent chunked

    r = client.post("/notify", content=chunks(), headers={"Content-Type": FHIR_JSON, **AUTH})
    assert r.status_code == 413
    assert jobs(client) == []


def test_oversized_claim_input_413(make_client: MakeClient) -> None:
    client = make_client(token=TOKEN, max_api_bytes=5000)
    body = (EXAMPLES[0] / next(p.name for p in EXAMPLES[0].glob("input.*"))).read_bytes()
    assert len(body) > 5000
    r = client.post("/check", content=body, headers={"Content-Type": FHIR_JSON, **AUTH})
    assert r.status_code == 413 and r.json()["resourceType"] == "OperationOutcome"


# --------------------------------------------------------------------------- /claim and /check


def _example_request(folder: Path) -> tuple[bytes, dict[str, str], dict[str, str]]:
    source = next(folder.glob("input.*"))
    args = json.loads((folder / "args.json").read_text())
    content_type = "application/fhir+ndjson" if source.suffix == ".ndjson" else FHIR_JSON
    return source.read_bytes(), {k: str(v) for k, v in args.items()}, {"Content-Type": content_type, **AUTH}


@pytest.mark.parametrize("folder", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_claim_and_check_answer_what_the_command_line_prints(client: TestClient, folder: Path) -> None:
    body, params, headers = _example_request(folder)
    expected_exit = int((folder / "expected-exit").read_text())

    check = client.post("/check", content=body, params=params, headers=headers)
    assert check.status_code == 200, check.text
    assert check.headers["content-type"].startswith(FHIR_JSON)
    assert check.headers["x-facet-adapter-held"] == ("true" if expected_exit == 1 else "false")
    assert check.json() == json.loads((folder / "expected-outcome.json").read_text())

    claim = client.post("/claim", content=body, params=params, headers=headers)
    assert claim.status_code == 200, claim.text  # held or not
    expected = json.loads((folder / "expected-bundle.json").read_text())
    got = claim.json()
    for bundle in (got, expected):  # only the clock differs
        bundle.pop("timestamp")
        bundle["entry"][0]["resource"].pop("created")
    assert got == expected
    if expected_exit == 1:
        assert claim.headers["x-facet-adapter-held"] == "true"


def test_claim_and_check_over_the_concurrency_limit_get_503_with_retry_after(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adapter.service import app as service_app

    real_process = service_app.process
    running, release = threading.Semaphore(0), threading.Event()

    def slow_process(*args: Any, **kwargs: Any) -> Any:
        running.release()
        release.wait(30)
        return real_process(*args, **kwargs)

    monkeypatch.setattr(service_app, "process", slow_process)
    client = make_client(token=TOKEN, max_api_concurrency=2)
    body, params, headers = _example_request(REPO / "examples" / "medicare-lumbar-bilateral")
    answers: list[int] = []

    def call(endpoint: str) -> None:
        answers.append(client.post(endpoint, content=body, params=params, headers=headers).status_code)

    threads = [threading.Thread(target=call, args=(e,)) for e in ("/claim", "/check")]
    try:
        for thread in threads:
            thread.start()
        assert running.acquire(timeout=10) and running.acquire(timeout=10)  # both slots taken
        for endpoint in ("/claim", "/check"):
            r = client.post(endpoint, content=body, params=params, headers=headers)
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "2"
            assert r.headers["content-type"].startswith(FHIR_JSON)
            outcome = r.json()
            assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "transient"
            assert_valid_r4(outcome)
    finally:
        release.set()
        for thread in threads:
            thread.join(30)
    assert answers == [200, 200]
    # The slots are free again.
    assert client.post("/check", content=body, params=params, headers=headers).status_code == 200


def test_ndjson_content_type_with_charset(client: TestClient) -> None:
    folder = next(p for p in EXAMPLES if (p / "input.ndjson").exists())
    body, params, _ = _example_request(folder)
    r = client.post(
        "/check", content=body, params=params, headers={"Content-Type": "application/x-ndjson; charset=utf-8", **AUTH}
    )
    assert r.status_code == 200
    assert r.json() == json.loads((folder / "expected-outcome.json").read_text())


BAD_API_REQUESTS = {
    "not-json": ({"payer": "medicare"}, b"this is not json"),
    "empty": ({"payer": "medicare"}, b""),
    "not-fhir": ({"payer": "medicare"}, b'{"hello": "world"}'),
    "unknown-payer": ({"payer": "acme-health"}, None),
    "bad-pos": ({"payer": "medicare", "pos": "999"}, None),
    "bad-use": ({"use": "invoice"}, None),
    "no-service-request-for-preauthorization": ({"payer": "medicare", "use": "preauthorization"}, None),
}


@pytest.mark.parametrize(("params", "body"), BAD_API_REQUESTS.values(), ids=BAD_API_REQUESTS.keys())
@pytest.mark.parametrize("endpoint", ["/claim", "/check"])
def test_bad_input_is_400_with_an_operation_outcome(
    client: TestClient, endpoint: str, params: dict[str, str], body: bytes | None
) -> None:
    if body is None:
        body = (REPO / "examples" / "medicare-lumbar-bilateral" / "input.json").read_bytes()
    r = client.post(endpoint, content=body, params=params, headers={"Content-Type": FHIR_JSON, **AUTH})
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith(FHIR_JSON)
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] in ("error", "fatal")
    assert "Traceback" not in r.text


def test_an_unexpected_failure_is_a_500_operation_outcome(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("Rivera")

    monkeypatch.setattr("adapter.service.app.process", broken)
    body = (REPO / "examples" / "medicare-lumbar-bilateral" / "input.json").read_bytes()
    r = client.post("/claim", content=body, headers={"Content-Type": FHIR_JSON, **AUTH})
    assert r.status_code == 500
    assert r.json()["resourceType"] == "OperationOutcome"
    assert "Rivera" not in r.text and "Traceback" not in r.text


def test_unknown_endpoint_and_method_are_operation_outcomes(client: TestClient) -> None:
    r = client.get("/nothing-here")
    assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"
    r = client.get("/claim")
    assert r.status_code == 405 and r.json()["resourceType"] == "OperationOutcome"


def test_logs_name_routes_and_ids_never_patient_data(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    record = (REPO / "examples" / "medicare-lumbar-bilateral" / "input.json").read_bytes()
    client.post(
        "/claim?payer=medicare&prior_auth=PA-SECRET-1", content=record, headers={"Content-Type": FHIR_JSON, **AUTH}
    )
    put(client, procedure(note=[{"text": "Rivera tolerated it"}]))
    client.put("/notify/Procedure/p1", content=b'{"name": "Rivera"', headers={"Content-Type": FHIR_JSON, **AUTH})
    # The test client's own httpx log lines are not the service's.
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("adapter"))
    assert "POST /claim 200" in text and "PUT /notify/{resource_type}/{resource_id} 200" in text
    assert "Procedure/p1" in text
    for secret in ("Rivera", "MRN-PT-ANA", "PA-SECRET-1", TOKEN):
        assert secret not in text


# --------------------------------------------------------------------------- OpenAPI


def test_openapi_describes_the_endpoints(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    expected = {
        "/notify/{resource_type}/{resource_id}": {"put", "delete"},
        "/notify": {"post"},
        "/notify/metadata": {"get"},
        "/claim": {"post"},
        "/check": {"post"},
        "/healthz": {"get"},
    }
    assert {path: set(ops) for path, ops in paths.items()} == expected
    for path, method in [("/notify/{resource_type}/{resource_id}", "put"), ("/notify", "post")]:
        operation = paths[path][method]
        assert {"200", "400", "401", "413", "503"} <= set(operation["responses"])
        assert FHIR_JSON in operation["responses"]["200"]["content"]
        assert {FHIR_JSON, "application/json"} <= set(operation["requestBody"]["content"])
        assert "422" not in operation["responses"]
    for path in ("/claim", "/check"):
        operation = paths[path]["post"]
        assert {"200", "400", "401", "413"} <= set(operation["responses"])
        assert "X-Facet-Adapter-Held" in operation["responses"]["200"]["headers"]
        assert {FHIR_JSON, "application/fhir+ndjson", "application/x-ndjson"} <= set(
            operation["requestBody"]["content"]
        )
        assert {p["name"] for p in operation["parameters"]} == {"payer", "use", "pos", "prior_auth"}
    assert "401" not in paths["/notify/metadata"]["get"]["responses"]
    assert doc["components"]["securitySchemes"]


def test_backport_answers_and_outcomes_are_valid_r4(client: TestClient) -> None:
    bundle = notification(
        "event-notification", events=[{"number": "4", "focus": "Procedure/v1"}], entries=[{"fullUrl": "Procedure/v1"}]
    )
    answer = post(client, copy.deepcopy(bundle)).json()
    assert len(answer["entry"]) == 2
    assert_valid_r4(answer)
    assert_valid_r4(post(client).json())
