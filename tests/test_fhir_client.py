"""The FHIR client: against the local test server for everything it can do, and with `responses`
only for what a real server cannot be made to do (429/503 with Retry-After, 502/504, connection
errors, HAPI's "201 Created" / numeric versions / absolute Locations, a SMART token endpoint)."""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import gzip
import json
import logging
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
import requests
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fhirserver import FhirTestServer

from adapter.errors import (
    EXIT_UPSTREAM,
    FhirAuthError,
    FhirConflict,
    FhirDeadlineExceeded,
    FhirNotFound,
    FhirPageLimitError,
    FhirProtocolError,
    FhirRequestRejected,
    FhirResponseTooLarge,
    FhirServerError,
    FhirServerUnavailable,
)
from adapter.fhir.auth import BearerToken, SmartBackendServices
from adapter.fhir.client import FhirClient
from adapter.fhir.responses import entry_results, outcome_errors, parse_etag, parse_location, parse_status
from adapter.fhir.transport import parse_retry_after

MRN = "urn:test:mrn"
BASE = "http://fhir.test/baseR4"


def patient(mrn: str | None = None, family: str = "Testperson") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": MRN, "value": mrn or uuid.uuid4().hex}],
        "name": [{"family": family}],
    }


@pytest.fixture
def client(fhir_server: FhirTestServer) -> Iterator[FhirClient]:
    with FhirClient(fhir_server.base_url, retries=1, backoff=0.01) as c:
        yield c


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """time.sleep recorded instead of slept."""
    calls: list[float] = []
    monkeypatch.setattr(time, "sleep", calls.append)
    return calls


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def fhir_json(body: Any, status: int = 200, **headers: str) -> dict[str, Any]:
    return {"status": status, "body": json.dumps(body), "content_type": "application/fhir+json", "headers": headers}


OUTCOME_WITH_PATIENT_DATA = {
    "resourceType": "OperationOutcome",
    "issue": [
        {
            "severity": "error",
            "code": "invalid",
            "diagnostics": "Patient.name 'Jane Q. Doe' born 1961-04-12 is invalid",
            "expression": ["Patient.birthDate"],
        }
    ],
}


# --------------------------------------------------------------------------- the real server


@pytest.mark.server
def test_create_read_update_vread_delete(client: FhirClient) -> None:
    stored, created = client.create(patient())
    assert created and stored["id"]
    first_version = stored["meta"]["versionId"]
    assert client.read("Patient", stored["id"])["id"] == stored["id"]

    changed = client.update(dict(stored, gender="female"), if_match=first_version)
    assert changed["gender"] == "female"
    assert changed["meta"]["versionId"] != first_version
    assert "gender" not in client.vread("Patient", stored["id"], first_version)

    with pytest.raises(FhirConflict) as stale:  # If-Match with the old version: 412
        client.update(dict(stored, gender="male"), if_match=first_version)
    assert stale.value.status == 412 and stale.value.exit_code == EXIT_UPSTREAM

    client.delete("Patient", stored["id"])
    with pytest.raises(FhirNotFound):
        client.read("Patient", stored["id"])
    with pytest.raises(FhirNotFound) as missing:
        client.read("Patient", "does-not-exist")
    assert missing.value.status == 404


@pytest.mark.server
def test_the_client_sends_a_quoted_weak_etag_and_the_server_refuses_any_other_if_match(
    client: FhirClient, fhir_server: FhirTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored, _ = client.create(patient())
    url = f"{fhir_server.base_url}/Patient/{stored['id']}"
    version = stored["meta"]["versionId"]
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    body = json.dumps(dict(stored, gender="other"))
    for bad in (version, f"W/{version}", f'"{version}", "x"', "*", '""', f'W/"{version}'):
        r = requests.put(url, data=body, headers={**headers, "If-Match": bad}, timeout=10)
        assert r.status_code == 400, (bad, r.status_code, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
        r = requests.delete(url, headers={"If-Match": bad}, timeout=10)
        assert r.status_code == 400, (bad, r.status_code, r.text)
    # The same malformed value as a transaction entry's request.ifMatch: the transaction fails whole.
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": dict(stored, gender="other"),
                "request": {"method": "PUT", "url": f"Patient/{stored['id']}", "ifMatch": version},
            }
        ],
    }
    r = requests.post(fhir_server.base_url, data=json.dumps(transaction), headers=headers, timeout=10)
    assert r.status_code == 400, r.text
    assert client.read("Patient", stored["id"])["meta"]["versionId"] == version  # nothing was written

    sent: list[str] = []
    original = client.session.request

    def recording(method: str, url: str, **kwargs: Any) -> Any:
        sent.append((kwargs.get("headers") or {}).get("If-Match", ""))
        return original(method, url, **kwargs)

    monkeypatch.setattr(client.session, "request", recording)
    updated = client.update(dict(stored, gender="female"), if_match=version)
    assert sent == [f'W/"{version}"'] and updated["gender"] == "female"
    r = requests.put(url, data=body, headers={**headers, "If-Match": f'"{updated["meta"]["versionId"]}"'}, timeout=10)
    assert r.status_code == 200, r.text  # a strong (quoted) tag is accepted too


@pytest.mark.server
def test_conditional_create_finds_the_first(client: FhirClient) -> None:
    mrn = uuid.uuid4().hex
    condition = f"identifier={MRN}|{mrn}"
    first, created_first = client.create(patient(mrn), if_none_exist=condition)
    second, created_second = client.create(patient(mrn), if_none_exist=condition)
    assert (created_first, created_second) == (True, False)
    assert first["id"] == second["id"]
    assert [r["id"] for r in client.search("Patient", {"identifier": f"{MRN}|{mrn}"})] == [first["id"]]


@pytest.mark.server
def test_search_follows_next_links_with_a_page_cap(client: FhirClient) -> None:
    family = f"Paging{uuid.uuid4().hex[:10]}"
    created = {client.create(patient(family=family))[0]["id"] for _ in range(5)}
    found = [r["id"] for r in client.search("Patient", [("family", family), ("_count", "2")])]
    assert sorted(found) == sorted(created)
    pages = list(client.pages("Patient", {"family": family, "_count": "2"}))
    assert [len(p.get("entry", [])) for p in pages] == [2, 2, 1]
    # Exactly as many pages as the cap: complete, no error.
    assert len(list(client.search("Patient", {"family": family, "_count": "2"}, max_pages=3))) == 5
    # One page more than the cap: an error, never the first 4 resources as if they were all.
    with pytest.raises(FhirPageLimitError) as capped:
        list(client.search("Patient", {"family": family, "_count": "2"}, max_pages=2))
    assert isinstance(capped.value, FhirProtocolError) and capped.value.exit_code == EXIT_UPSTREAM
    assert capped.value.max_pages == 2 and "more than 2 pages" in capped.value.message
    assert client.search_bundle("Patient", {"family": family, "_summary": "count"})["total"] == 5


@pytest.mark.server
def test_search_with_include_returns_both(client: FhirClient) -> None:
    pat, _ = client.create(patient())
    proc, _ = client.create(
        {"resourceType": "Procedure", "status": "completed", "subject": {"reference": f"Patient/{pat['id']}"}}
    )
    got = {
        (r["resourceType"], r["id"])
        for r in client.search("Procedure", [("patient", pat["id"]), ("_include", "Procedure:patient")])
    }
    assert got == {("Procedure", proc["id"]), ("Patient", pat["id"])}
    assert client.supports_include("Procedure", "Procedure:patient")
    assert client.supports_include("Procedure", "Observation:part-of", reverse=True)
    assert client.capabilities()["fhirVersion"] == "4.0.1"


@pytest.mark.server
def test_transaction_with_urn_uuid_and_if_none_exist(client: FhirClient) -> None:
    mrn = uuid.uuid4().hex
    u_pat = f"urn:uuid:{uuid.uuid4()}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": u_pat,
                "resource": patient(mrn),
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={MRN}|{mrn}"},
            },
            {
                "resource": {"resourceType": "Procedure", "status": "completed", "subject": {"reference": u_pat}},
                "request": {"method": "POST", "url": "Procedure"},
            },
        ],
    }
    first = entry_results(client.transaction(bundle))
    assert [r.status for r in first] == [201, 201]
    assert first[0].location is not None and first[0].location.type == "Patient"
    assert first[0].version
    proc = client.read("Procedure", str(first[1].id))
    assert proc["subject"]["reference"] == f"Patient/{first[0].id}"
    again = entry_results(client.transaction(bundle))
    assert again[0].status == 200 and not again[0].created and again[0].id == first[0].id


@pytest.mark.server
def test_invalid_resource_is_a_typed_error_with_the_outcome(client: FhirClient) -> None:
    with pytest.raises(FhirRequestRejected) as caught:
        client.create({"resourceType": "Patient", "gender": "banana"})
    error = caught.value
    assert error.status == 400 and error.exit_code == EXIT_UPSTREAM
    assert outcome_errors(error.outcome)
    outcome = error.to_operation_outcome()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "banana" not in json.dumps(outcome)  # server texts quote values: kept out of messages


@pytest.mark.server
def test_validate_returns_the_outcome_for_valid_and_invalid(client: FhirClient) -> None:
    assert outcome_errors(client.validate(patient())) == []
    invalid = client.validate({"resourceType": "Patient", "birthDate": "12/04/1961"})
    assert outcome_errors(invalid)


def test_bearer_token_is_sent(mocked: responses.RequestsMock) -> None:
    mocked.add(responses.GET, f"{BASE}/Patient/p1", **fhir_json({"resourceType": "Patient", "id": "p1"}))
    with FhirClient(BASE, auth=BearerToken("s3cret")) as c:
        c.read("Patient", "p1")
    assert mocked.calls[0].request.headers["Authorization"] == "Bearer s3cret"
    assert "s3cret" not in repr(BearerToken("s3cret"))


# --------------------------------------------------------------------------- retries (mocked)


def test_429_honours_retry_after_seconds(mocked: responses.RequestsMock, sleeps: list[float]) -> None:
    url = f"{BASE}/Patient/p1"
    mocked.add(responses.GET, url, status=429, headers={"Retry-After": "7"})
    mocked.add(responses.GET, url, **fhir_json({"resourceType": "Patient", "id": "p1"}))
    with FhirClient(BASE) as c:
        assert c.read("Patient", "p1")["id"] == "p1"
    assert sleeps == [7.0]
    assert len(mocked.calls) == 2


def test_retry_after_http_date_and_cap(mocked: responses.RequestsMock, sleeps: list[float]) -> None:
    url = f"{BASE}/Patient/p1"
    later = email.utils.format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=20), usegmt=True)
    mocked.add(responses.GET, url, status=503, headers={"Retry-After": later})
    mocked.add(responses.GET, url, status=503, headers={"Retry-After": "86400"})
    mocked.add(responses.GET, url, **fhir_json({"resourceType": "Patient", "id": "p1"}))
    with FhirClient(BASE, max_retry_after=30) as c:
        c.read("Patient", "p1")
    assert 15 <= sleeps[0] <= 20
    assert sleeps[1] == 30  # capped
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:10 GMT", now=now) == 10
    assert parse_retry_after("Wed, 31 Dec 2025 23:00:00 GMT", now=now) == 0
    assert parse_retry_after("soon") is None


def test_503_twice_then_success_with_jittered_backoff(mocked: responses.RequestsMock, sleeps: list[float]) -> None:
    url = f"{BASE}/Patient"
    mocked.add(responses.GET, url, status=503)
    mocked.add(responses.GET, url, status=503)
    mocked.add(responses.GET, url, **fhir_json({"resourceType": "Bundle", "type": "searchset", "entry": []}))
    with FhirClient(BASE, backoff=0.5) as c:
        assert list(c.search("Patient", {"name": "x"})) == []
    assert len(mocked.calls) == 3
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.5 and 0 <= sleeps[1] <= 1.0  # full jitter under 0.5 * 2^attempt


@pytest.mark.parametrize("status", [502, 504])
def test_gateway_errors_are_retried_for_reads(status: int, mocked: responses.RequestsMock, sleeps: list[float]) -> None:
    url = f"{BASE}/Patient/p1"
    mocked.add(responses.GET, url, status=status)
    mocked.add(responses.GET, url, **fhir_json({"resourceType": "Patient", "id": "p1"}))
    with FhirClient(BASE) as c:
        c.read("Patient", "p1")
    assert len(mocked.calls) == 2 and len(sleeps) == 1


def test_gateway_error_on_a_plain_create_is_not_retried(mocked: responses.RequestsMock, sleeps: list[float]) -> None:
    # The server may have created the resource before the gateway gave up: a retry could duplicate it.
    mocked.add(responses.POST, f"{BASE}/Patient", status=502)
    with FhirClient(BASE) as c, pytest.raises(FhirServerUnavailable) as caught:
        c.create(patient())
    assert caught.value.status == 502 and caught.value.exit_code == EXIT_UPSTREAM
    assert len(mocked.calls) == 1 and sleeps == []


def test_gateway_error_on_a_conditional_create_is_retried(mocked: responses.RequestsMock, sleeps: list[float]) -> None:
    stored = {"resourceType": "Patient", "id": "p9", "meta": {"versionId": "1"}}
    mocked.add(responses.POST, f"{BASE}/Patient", status=504)
    mocked.add(responses.POST, f"{BASE}/Patient", **fhir_json(stored, 200))
    with FhirClient(BASE) as c:
        resource, created = c.create(patient(), if_none_exist="identifier=urn:test:mrn|1")
    assert resource["id"] == "p9" and not created
    assert mocked.calls[1].request.headers["If-None-Exist"] == "identifier=urn:test:mrn|1"


def test_429_on_a_plain_create_is_retried(mocked: responses.RequestsMock, sleeps: list[float]) -> None:
    # 429 says the request was not processed, so even a non-idempotent one may be repeated.
    mocked.add(responses.POST, f"{BASE}/Patient", status=429, headers={"Retry-After": "1"})
    mocked.add(responses.POST, f"{BASE}/Patient", **fhir_json({"resourceType": "Patient", "id": "p2"}, 201))
    with FhirClient(BASE) as c:
        assert c.create(patient()) == ({"resourceType": "Patient", "id": "p2"}, True)
    assert sleeps == [1.0]


def test_400_with_outcome_is_not_retried(
    mocked: responses.RequestsMock, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    mocked.add(responses.POST, f"{BASE}/Patient", **fhir_json(OUTCOME_WITH_PATIENT_DATA, 400))
    caplog.set_level(logging.DEBUG)
    with FhirClient(BASE) as c, pytest.raises(FhirRequestRejected) as caught:
        c.create(patient(), if_none_exist="identifier=urn:test:mrn|MRN-12345")
    error = caught.value
    assert len(mocked.calls) == 1 and sleeps == []
    assert error.outcome == OUTCOME_WITH_PATIENT_DATA
    assert error.status == 400
    shown = str(error) + json.dumps(error.to_operation_outcome()) + caplog.text
    assert "Jane" not in shown and "1961" not in shown and "MRN-12345" not in shown
    assert "Patient.birthDate" in json.dumps(error.to_operation_outcome())


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (404, FhirNotFound),
        (410, FhirNotFound),
        (409, FhirConflict),
        (401, FhirAuthError),
        (403, FhirAuthError),
        (500, FhirServerError),
        (422, FhirRequestRejected),
    ],
)
def test_status_to_typed_error_without_retry(
    status: int, error_type: type[Exception], mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.add(responses.GET, f"{BASE}/Patient/p1", status=status)
    with FhirClient(BASE) as c, pytest.raises(error_type):
        c.read("Patient", "p1")
    assert len(mocked.calls) == 1 and sleeps == []


def test_connection_error_becomes_unavailable_after_retries(
    mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.add(responses.GET, f"{BASE}/Patient/p1", body=requests.exceptions.ConnectionError("connection reset"))
    with FhirClient(BASE, retries=3) as c, pytest.raises(FhirServerUnavailable) as caught:
        c.read("Patient", "p1")
    assert len(mocked.calls) == 4 and len(sleeps) == 3
    assert caught.value.exit_code == EXIT_UPSTREAM


def test_refused_connection_on_a_real_socket(sleeps: list[float]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with FhirClient(f"http://127.0.0.1:{port}/fhir", retries=2) as c, pytest.raises(FhirServerUnavailable):
        c.create(patient())  # even a plain create: nothing was sent
    assert len(sleeps) == 2


def test_read_timeout_on_a_plain_create_is_not_retried(mocked: responses.RequestsMock, sleeps: list[float]) -> None:
    mocked.add(responses.POST, f"{BASE}/Patient", body=requests.exceptions.ReadTimeout("slow"))
    with FhirClient(BASE) as c, pytest.raises(FhirServerUnavailable):
        c.create(patient())
    assert len(mocked.calls) == 1 and sleeps == []


def test_transaction_of_conditional_creates_is_retried(mocked: responses.RequestsMock, sleeps: list[float]) -> None:
    mocked.add(responses.POST, BASE, status=502)
    mocked.add(responses.POST, BASE, **fhir_json({"resourceType": "Bundle", "type": "transaction-response"}))
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(), "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=a|b"}}
        ],
    }
    with FhirClient(BASE) as c:
        c.transaction(bundle)
    assert len(mocked.calls) == 2
    plain = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": patient(), "request": {"method": "POST", "url": "Patient"}}],
    }
    mocked.add(responses.POST, BASE, status=502)
    with FhirClient(BASE) as c, pytest.raises(FhirServerUnavailable):
        c.transaction(plain)


# --------------------------------------------------------------------------- bounded answers


class RawServer:
    """A plain socket HTTP server on 127.0.0.1 that answers every request with `respond(conn)`:
    for what neither the test server nor `responses` can do (a body that trickles in, a chunked
    body with no end in sight)."""

    def __init__(self, respond: Callable[[socket.socket], None]) -> None:
        self.respond = respond
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/fhir"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    data = conn.recv(65536)
                    if not data:
                        break
                    request += data
                with contextlib.suppress(OSError):
                    self.respond(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket], None]], RawServer]]:
    started: list[RawServer] = []

    def start(respond: Callable[[socket.socket], None]) -> RawServer:
        server = RawServer(respond)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def _headers(*lines: str) -> bytes:
    return (
        "HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\n" + "".join(f"{h}\r\n" for h in lines) + "\r\n"
    ).encode()


def test_a_body_over_the_size_cap_is_a_typed_error(mocked: responses.RequestsMock, sleeps: list[float]) -> None:
    big = {"resourceType": "Patient", "id": "p1", "text": {"status": "generated", "div": "x" * 5000}}
    mocked.add(responses.GET, f"{BASE}/Patient/p1", **fhir_json(big))
    with FhirClient(BASE, max_response_bytes=1000) as c, pytest.raises(FhirResponseTooLarge) as caught:
        c.read("Patient", "p1")
    assert isinstance(caught.value, FhirProtocolError) and caught.value.exit_code == EXIT_UPSTREAM
    assert caught.value.limit == 1000 and "1,000 bytes" in caught.value.message
    assert len(mocked.calls) == 1 and sleeps == []  # the same answer would come back: no retry
    with FhirClient(BASE, max_response_bytes=100_000) as c:
        assert c.read("Patient", "p1")["id"] == "p1"
    assert FhirClient(BASE).max_response_bytes == 64 * 1024 * 1024


def test_a_chunked_body_is_cut_off_at_the_cap(raw_server: Any) -> None:
    def endless(conn: socket.socket) -> None:
        conn.sendall(_headers("Transfer-Encoding: chunked"))
        for _ in range(10_000):  # 10 MB if nobody stops reading
            conn.sendall(b"400\r\n" + b" " * 1024 + b"\r\n")

    server = raw_server(endless)
    with FhirClient(server.base_url, max_response_bytes=50_000, retries=0) as c, pytest.raises(FhirResponseTooLarge):
        c.read("Patient", "p1")


def test_a_small_gzip_body_cannot_expand_past_the_cap(raw_server: Any) -> None:
    bomb = gzip.compress(b" " * 5_000_000)  # about 5 kB on the wire

    def gzipped(conn: socket.socket) -> None:
        conn.sendall(_headers("Content-Encoding: gzip", f"Content-Length: {len(bomb)}") + bomb)

    server = raw_server(gzipped)
    with FhirClient(server.base_url, max_response_bytes=100_000, retries=0) as c, pytest.raises(FhirResponseTooLarge):
        c.read("Patient", "p1")


def test_a_trickling_body_hits_the_overall_deadline(raw_server: Any) -> None:
    # A byte every 50 ms never trips a 2 s read timeout; only the per-request deadline stops it.
    def trickle(conn: socket.socket) -> None:
        conn.sendall(_headers("Content-Length: 100000"))
        for _ in range(400):
            conn.sendall(b" ")
            time.sleep(0.05)

    server = raw_server(trickle)
    started = time.monotonic()
    with (
        FhirClient(server.base_url, timeout=(2, 2), deadline=0.5, retries=1, backoff=0.01) as c,
        pytest.raises(FhirDeadlineExceeded) as caught,
    ):
        c.read("Patient", "p1")
    elapsed = time.monotonic() - started
    assert isinstance(caught.value, FhirServerUnavailable) and caught.value.deadline == 0.5
    assert "0.5 s deadline" in caught.value.message and "2 attempt(s)" in caught.value.message
    assert server.connections == 2  # a read is retried after a deadline, like after a read timeout
    assert elapsed < 4, elapsed


def test_paging_links_that_loop_are_an_error_not_a_prefix(mocked: responses.RequestsMock) -> None:
    looping = {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [{"relation": "next", "url": f"{BASE}/Patient?_offset=1"}],
        "entry": [{"resource": {"resourceType": "Patient", "id": "a"}}],
    }
    mocked.add(responses.GET, f"{BASE}/Patient", **fhir_json(looping))
    with FhirClient(BASE) as c, pytest.raises(FhirProtocolError) as caught:
        list(c.search("Patient"))
    assert "loop" in caught.value.message


# --------------------------------------------------------------------------- HAPI differences (mocked)


def test_hapi_transaction_response_created_statuses_numeric_versions() -> None:
    response = {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [
            {"response": {"status": "201 Created", "location": f"{BASE}/Claim/123/_history/1", "etag": 'W/"1"'}},
            {"response": {"status": "200 OK", "location": "Task/77/_history/3"}},
            {
                "response": {"status": "201", "location": "Claim/0b5c8a1e-4c39-4c7a-9f0e-3f0d1b1e2a3c"},
                "resource": {
                    "resourceType": "Claim",
                    "id": "0b5c8a1e-4c39-4c7a-9f0e-3f0d1b1e2a3c",
                    "meta": {"versionId": "8f1d2c3b-aaaa-4bbb-8ccc-123456789abc"},
                },
            },
        ],
    }
    first, second, third = entry_results(response)
    assert (first.status, first.created, first.id, first.version) == (201, True, "123", "1")
    assert (second.status, second.created, second.id, second.version) == (200, False, "77", "3")
    assert (third.created, third.version) == (True, "8f1d2c3b-aaaa-4bbb-8ccc-123456789abc")
    assert parse_status("201 Created") == parse_status("201") == 201
    assert parse_etag('W/"12"') == "12" and parse_etag('"abc"') == "abc"
    loc = parse_location("https://hapi.fhir.org/baseR4/Claim/42/_history/2")
    assert loc is not None and (loc.reference, loc.version) == ("Claim/42", "2")


def test_hapi_create_with_location_and_no_body(mocked: responses.RequestsMock) -> None:
    mocked.add(responses.POST, f"{BASE}/Claim", status=201, headers={"Location": f"{BASE}/Claim/123/_history/1"})
    mocked.add(
        responses.GET,
        f"{BASE}/Claim/123/_history/1",
        **fhir_json({"resourceType": "Claim", "id": "123", "meta": {"versionId": "1"}}),
    )
    mocked.add(
        responses.PUT,
        f"{BASE}/Claim/123",
        **fhir_json({"resourceType": "Claim", "id": "123", "meta": {"versionId": "2"}}),
    )
    with FhirClient(BASE) as c:
        stored, created = c.create({"resourceType": "Claim"})
        assert created and stored["meta"]["versionId"] == "1"
        updated = c.update(stored, if_match="1")
    assert updated["meta"]["versionId"] == "2"
    assert mocked.calls[-1].request.headers["If-Match"] == 'W/"1"'


def test_paging_with_relative_absolute_and_foreign_links(
    mocked: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    def page(ids: list[str], next_url: str | None) -> dict[str, Any]:
        links = [{"relation": "self", "url": "x"}] + ([{"relation": "next", "url": next_url}] if next_url else [])
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "link": links,
            "entry": [{"resource": {"resourceType": "Patient", "id": i}} for i in ids],
        }

    mocked.add(responses.GET, f"{BASE}/Patient", **fhir_json(page(["a"], f"{BASE}?_getpages=abc&_getpagesoffset=1")))
    mocked.add(responses.GET, BASE, **fhir_json(page(["b"], "Patient?identifier=urn:test:mrn|SECRET-9&_offset=2")))
    mocked.add(
        responses.GET,
        f"{BASE}/Patient",
        **fhir_json(page(["c"], "http://internal-host:8080/baseR4?_getpages=abc&_getpagesoffset=3")),
    )
    mocked.add(responses.GET, BASE, **fhir_json(page(["d"], "https://elsewhere.example/steal?x=1")))
    caplog.set_level(logging.INFO)
    with FhirClient(BASE) as c:
        got: list[str] = []
        with pytest.raises(FhirProtocolError):
            for resource in c.search("Patient", {"identifier": "urn:test:mrn|SECRET-9"}):
                got.append(resource["id"])
    assert got == ["a", "b", "c", "d"]
    assert "_getpages" in urllib.parse.unquote(mocked.calls[1].request.url)
    assert mocked.calls[2].request.url.startswith(f"{BASE}/Patient?identifier=")
    assert mocked.calls[3].request.url.startswith(BASE)  # the proxy's internal host, rebased
    assert "SECRET-9" not in caplog.text and "GET Patient?identifier" in caplog.text


# --------------------------------------------------------------------------- SMART Backend Services (mocked)


TOKEN_URL = "https://auth.test/token"


def _rsa_pem() -> tuple[bytes, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem, key.public_key()


@pytest.fixture(scope="module")
def rsa_key() -> tuple[bytes, Any]:
    return _rsa_pem()


def _token_calls(mocked: responses.RequestsMock) -> list[dict[str, str]]:
    return [
        dict(urllib.parse.parse_qsl(str(call.request.body))) for call in mocked.calls if call.request.url == TOKEN_URL
    ]


def test_smart_token_request_and_signed_assertion(rsa_key: tuple[bytes, Any], mocked: responses.RequestsMock) -> None:
    pem, public = rsa_key
    mocked.add(responses.POST, TOKEN_URL, json={"access_token": "tok-1", "token_type": "bearer", "expires_in": 300})
    mocked.add(responses.GET, f"{BASE}/Patient/p1", **fhir_json({"resourceType": "Patient", "id": "p1"}))
    auth = SmartBackendServices(TOKEN_URL, "facet-client", pem, "kid-1", "system/*.read")
    with FhirClient(BASE, auth=auth) as c:
        c.read("Patient", "p1")
        c.read("Patient", "p1")  # the token is cached
    forms = _token_calls(mocked)
    assert len(forms) == 1
    form = forms[0]
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "system/*.read"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    header = jwt.get_unverified_header(form["client_assertion"])
    assert (header["alg"], header["kid"], header["typ"]) == ("RS384", "kid-1", "JWT")
    claims = jwt.decode(form["client_assertion"], public, algorithms=["RS384"], audience=TOKEN_URL)
    assert claims["iss"] == claims["sub"] == "facet-client"
    assert 0 < claims["exp"] - time.time() <= 300
    assert (
        claims["jti"]
        and claims["jti"] != jwt.decode(auth.assertion(), public, algorithms=["RS384"], audience=TOKEN_URL)["jti"]
    )
    fhir_calls = [call for call in mocked.calls if call.request.url.startswith(BASE)]
    assert all(call.request.headers["Authorization"] == "Bearer tok-1" for call in fhir_calls)
    assert "Authorization" not in mocked.calls[0].request.headers  # never send a token to the token endpoint


def test_smart_token_refreshed_before_expiry(
    rsa_key: tuple[bytes, Any], mocked: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    pem, _ = rsa_key
    mocked.add(responses.POST, TOKEN_URL, json={"access_token": "tok-1", "expires_in": 300})
    mocked.add(responses.POST, TOKEN_URL, json={"access_token": "tok-2", "expires_in": 300})
    mocked.add(responses.GET, f"{BASE}/Patient/p1", **fhir_json({"resourceType": "Patient", "id": "p1"}))
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    auth = SmartBackendServices(TOKEN_URL, "facet-client", pem, "kid-1", "system/*.read", refresh_margin=60)
    with FhirClient(BASE, auth=auth) as c:
        c.read("Patient", "p1")
        clock[0] += 230  # still 70 s left: cached
        c.read("Patient", "p1")
        clock[0] += 20  # 50 s left, inside the margin: refreshed
        c.read("Patient", "p1")
    assert len(_token_calls(mocked)) == 2
    assert mocked.calls[-1].request.headers["Authorization"] == "Bearer tok-2"


def test_smart_401_refreshes_once(rsa_key: tuple[bytes, Any], mocked: responses.RequestsMock) -> None:
    pem, _ = rsa_key
    mocked.add(responses.POST, TOKEN_URL, json={"access_token": "revoked", "expires_in": 3600})
    mocked.add(responses.POST, TOKEN_URL, json={"access_token": "fresh", "expires_in": 3600})
    mocked.add(responses.GET, f"{BASE}/Patient/p1", status=401)
    mocked.add(responses.GET, f"{BASE}/Patient/p1", **fhir_json({"resourceType": "Patient", "id": "p1"}))
    with FhirClient(BASE, auth=SmartBackendServices(TOKEN_URL, "c", pem, "k", "system/*.read")) as c:
        assert c.read("Patient", "p1")["id"] == "p1"
    assert [
        call.request.headers.get("Authorization") for call in mocked.calls if call.request.url.startswith(BASE)
    ] == [
        "Bearer revoked",
        "Bearer fresh",
    ]
    mocked.add(responses.POST, TOKEN_URL, json={"access_token": "still-bad", "expires_in": 3600})
    mocked.add(responses.GET, f"{BASE}/Patient/p2", status=401)
    with (
        FhirClient(BASE, auth=SmartBackendServices(TOKEN_URL, "c", pem, "k", "system/*.read")) as c,
        pytest.raises(FhirAuthError),
    ):
        c.read("Patient", "p2")


def test_smart_token_endpoint_refusal(rsa_key: tuple[bytes, Any], mocked: responses.RequestsMock) -> None:
    pem, _ = rsa_key
    mocked.add(
        responses.POST, TOKEN_URL, status=401, json={"error": "invalid_client", "error_description": "unknown key"}
    )
    with FhirClient(BASE, auth=SmartBackendServices(TOKEN_URL, "c", pem, "k", "system/*.read")) as c:
        with pytest.raises(FhirAuthError) as caught:
            c.read("Patient", "p1")
    assert "invalid_client" in str(caught.value) and caught.value.exit_code == EXIT_UPSTREAM


def test_smart_es384(mocked: responses.RequestsMock) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    auth = SmartBackendServices(TOKEN_URL, "c", pem, "k", "system/*.read", algorithm="ES384")
    claims = jwt.decode(auth.assertion(), key.public_key(), algorithms=["ES384"], audience=TOKEN_URL)
    assert claims["iss"] == "c"
    with pytest.raises(ValueError):
        SmartBackendServices(TOKEN_URL, "c", pem, "k", "s", algorithm="HS256")
