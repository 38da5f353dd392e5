"""The HTTP transport uses requests' public API only, reuses connections, keeps an overall limit
per request, and its errors name the server, the request and what was answered.

`responses` stands in for the server where a real one cannot be made to answer (a streamed body
without end, a 502 HTML page, a token endpoint); a small local HTTP/1.1 server counts connections."""

from __future__ import annotations

import ast
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from conftest import REPO

from adapter.errors import (
    FhirAuthError,
    FhirDeadlineExceeded,
    FhirNotFound,
    FhirProtocolError,
    FhirRequestRejected,
    FhirResponseTooLarge,
    FhirServerError,
    FhirServerUnavailable,
)
from adapter.fhir.auth import SmartBackendServices
from adapter.fhir.client import FhirClient

BASE = "http://fhir.test/baseR4"
FHIR_MODULES = sorted((REPO / "adapter" / "fhir").glob("*.py"))


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    calls: list[float] = []
    monkeypatch.setattr(time, "sleep", calls.append)
    return calls


def fhir_json(body: Any, status: int = 200) -> dict[str, Any]:
    return {"status": status, "body": json.dumps(body), "content_type": "application/fhir+json"}


# --------------------------------------------------------------------------- public API only


def _private_uses(path: Path) -> list[str]:
    """`x._name` on anything but `self`, `getattr`/`setattr`/`hasattr` with a `_name`, and
    `repr(...)` (parsing an exception's repr is how internals leak in)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            name = node.func.id
            first = node.args[1] if name in ("getattr", "setattr", "hasattr") and len(node.args) > 1 else None
            if isinstance(first, ast.Constant) and str(first.value).startswith("_"):
                found.append(f"{path.name}:{node.lineno} {name}(..., {first.value!r})")
            if name == "repr":
                found.append(f"{path.name}:{node.lineno} repr()")
    return found


def test_the_fhir_package_touches_no_private_attribute_of_another_object() -> None:
    assert {"auth.py", "client.py", "responses.py", "transport.py"} <= {p.name for p in FHIR_MODULES}
    assert [use for path in FHIR_MODULES for use in _private_uses(path)] == []


def test_the_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f(response, exc):\n"
        "    response._content = b''\n"
        "    getattr(response, '_content_consumed')\n"
        "    return 'NewConnectionError' in repr(exc) or self._fine\n"
    )
    assert _private_uses(sample) == [
        "sample.py:2 ._content",
        "sample.py:3 getattr(..., '_content_consumed')",
        "sample.py:4 repr()",
    ]


class PublicOnly:
    """A `requests.Response` seen through its public attributes: reading a private one, or
    setting any attribute, fails the test."""

    def __init__(self, response: requests.Response) -> None:
        object.__setattr__(self, "wrapped", response)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AssertionError(f"the transport read the private attribute {name}")
        return getattr(object.__getattribute__(self, "wrapped"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AssertionError(f"the transport set {name} on requests' response")

    def __enter__(self) -> PublicOnly:
        return self

    def __exit__(self, *exc: object) -> None:
        object.__getattribute__(self, "wrapped").close()


class PublicOnlySession(requests.Session):
    def request(self, *args: Any, **kwargs: Any) -> Any:
        return PublicOnly(super().request(*args, **kwargs))


class EndlessBody(io.RawIOBase):
    """A streamed body that never ends; counts what was read from it."""

    def __init__(self) -> None:
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.served > 100_000_000:  # a transport without a cap would read forever: stop the test
            return 0
        size = len(buffer)
        buffer[:size] = b" " * size
        self.served += size
        return size


def test_a_streamed_body_is_cut_off_at_the_cap_through_public_attributes_only(
    mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    endless = EndlessBody()
    mocked.add(
        responses.GET, f"{BASE}/Patient/p1", body=io.BufferedReader(endless), content_type="application/fhir+json"
    )
    with (
        FhirClient(BASE, session=PublicOnlySession(), max_response_bytes=200_000) as c,
        pytest.raises(FhirResponseTooLarge) as caught,
    ):
        c.read("Patient", "p1")
    assert caught.value.limit == 200_000 and "200,000 bytes" in caught.value.message
    assert 200_000 < endless.served <= 200_000 + 2 * 64 * 1024  # stopped within a read of the cap
    assert len(mocked.calls) == 1 and sleeps == []


def test_reads_retries_and_errors_work_through_public_attributes_only(
    mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    body = io.BufferedReader(io.BytesIO(json.dumps({"resourceType": "Patient", "id": "p1"}).encode()))
    mocked.add(responses.GET, f"{BASE}/Patient/p1", status=503, headers={"Retry-After": "2"})
    mocked.add(responses.GET, f"{BASE}/Patient/p1", body=body, content_type="application/fhir+json")
    mocked.add(responses.GET, f"{BASE}/Patient/p2", status=404, content_type="application/fhir+json", body="{}")
    with FhirClient(BASE, session=PublicOnlySession()) as c:
        assert c.read("Patient", "p1") == {"resourceType": "Patient", "id": "p1"}
        with pytest.raises(FhirNotFound):
            c.read("Patient", "p2")
    assert sleeps == [2.0]


# --------------------------------------------------------------------------- connections and limits


class _Counting(ThreadingHTTPServer):
    connections = 0

    def get_request(self) -> tuple[socket.socket, Any]:
        self.connections += 1
        return super().get_request()


@pytest.fixture
def keep_alive_server() -> Iterator[_Counting]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = json.dumps({"resourceType": "Patient", "id": self.path.rsplit("/", 1)[-1]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = _Counting(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_connections_are_reused(keep_alive_server: _Counting) -> None:
    with FhirClient(f"http://127.0.0.1:{keep_alive_server.server_address[1]}/fhir") as c:
        assert [c.read("Patient", f"p{i}")["id"] for i in range(5)] == ["p0", "p1", "p2", "p3", "p4"]
    assert keep_alive_server.connections == 1


def test_retries_stop_at_the_overall_limit_of_one_request(
    mocked: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(time, "sleep", lambda seconds: clock.__setitem__(0, clock[0] + seconds))
    for _ in range(4):
        mocked.add(responses.GET, f"{BASE}/Patient/p1", status=503, headers={"Retry-After": "20"})
    with FhirClient(BASE, retries=3, total_deadline=45) as c, pytest.raises(FhirServerUnavailable) as caught:
        c.read("Patient", "p1")
    # Two waits of 20 s fit in 45 s, a third would not: three attempts, then the 503 itself.
    assert len(mocked.calls) == 3 and clock[0] == 1040.0
    assert caught.value.status == 503 and caught.value.retry_after == 20


def test_a_failed_read_is_not_retried_past_the_overall_limit(
    mocked: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(time, "sleep", lambda seconds: clock.__setitem__(0, clock[0] + seconds))
    monkeypatch.setattr("random.uniform", lambda low, high: high)
    for _ in range(5):
        mocked.add(responses.GET, f"{BASE}/Patient/p1", body=requests.exceptions.ConnectionError("reset"))
    with FhirClient(BASE, retries=4, backoff=4, total_deadline=20) as c, pytest.raises(FhirServerUnavailable) as caught:
        c.read("Patient", "p1")
    assert len(mocked.calls) == 3  # waits of 4 and 8 s; the next (16 s) would pass 20 s
    assert "3 attempt(s)" in caught.value.message


def test_a_trickle_within_the_attempt_deadline_is_stopped_by_the_overall_limit() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: 100000\r\n\r\n")
            while not stop.is_set():
                try:
                    conn.sendall(b" ")
                except OSError:
                    return
                time.sleep(0.05)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{listener.getsockname()[1]}/fhir"
    started = time.monotonic()
    try:
        with (
            FhirClient(base, timeout=(2, 2), deadline=30, total_deadline=0.5, retries=3) as c,
            pytest.raises(FhirDeadlineExceeded) as caught,
        ):
            c.read("Patient", "p1")
    finally:
        stop.set()
        thread.join(5)
        listener.close()
    assert time.monotonic() - started < 4
    assert caught.value.deadline == 0.5 and "0.5 s overall limit of one request" in caught.value.message


# --------------------------------------------------------------------------- what errors say


def test_a_status_error_names_the_server_the_request_and_the_answer(mocked: responses.RequestsMock) -> None:
    mocked.add(responses.GET, f"{BASE}/Patient/p1", **fhir_json({"resourceType": "OperationOutcome"}, 404))
    mocked.add(
        responses.GET, f"{BASE}/Observation", status=502, body="<html>bad gateway</html>", content_type="text/html"
    )
    mocked.add(responses.POST, f"{BASE}/Claim", status=422, body="", content_type=None)
    with FhirClient(BASE, retries=0) as c:
        with pytest.raises(FhirNotFound) as missing:
            c.read("Patient", "p1")
        with pytest.raises(FhirServerUnavailable) as gateway:
            list(c.search("Observation", [("subject", "Patient/MRN-SECRET-7"), ("code", "72514-3")]))
        with pytest.raises(FhirRequestRejected) as rejected:
            c.create({"resourceType": "Claim"}, if_none_exist="identifier=urn:x|SECRET-9")
    assert missing.value.message == (
        f"The FHIR server at {BASE} answered 404 (application/fhir+json) to GET Patient/p1."
    )
    assert (
        gateway.value.message == f"The FHIR server at {BASE} answered 502 (text/html) to GET Observation?subject&code."
    )
    assert "SECRET" not in gateway.value.message
    assert rejected.value.message == f"The FHIR server at {BASE} answered 422 (no content type) to POST Claim."
    error = missing.value
    assert (error.base_url, error.method, error.path, error.status, error.content_type) == (
        BASE,
        "GET",
        "Patient/p1",
        404,
        "application/fhir+json",
    )


def test_an_answer_that_is_not_fhir_json_says_what_it_was(mocked: responses.RequestsMock) -> None:
    mocked.add(responses.GET, f"{BASE}/Patient/p1", body="<html>login</html>", content_type="text/html")
    mocked.add(responses.POST, BASE, **fhir_json({"resourceType": "OperationOutcome"}))
    with FhirClient(BASE) as c:
        with pytest.raises(FhirProtocolError) as html:
            c.read("Patient", "p1")
        with pytest.raises(FhirProtocolError) as not_bundle:
            c.transaction({"resourceType": "Bundle", "type": "transaction", "entry": []})
    assert html.value.message == (
        f"The FHIR server at {BASE} answered 200 (text/html) to GET Patient/p1 without a JSON resource."
    )
    assert html.value.content_type == "text/html" and html.value.status == 200
    assert BASE in not_bundle.value.message and "not a Bundle" in not_bundle.value.message


def test_credentials_in_the_base_url_stay_out_of_messages(mocked: responses.RequestsMock) -> None:
    mocked.add(responses.GET, "http://user:s3cret@fhir.test/baseR4/Patient/p1", status=500, content_type=None)
    with FhirClient("http://user:s3cret@fhir.test/baseR4", retries=0) as c, pytest.raises(FhirServerError) as caught:
        c.read("Patient", "p1")
    assert (
        caught.value.message
        == "The FHIR server at http://fhir.test/baseR4 answered 500 (no content type) to GET Patient/p1."
    )
    assert "s3cret" not in repr(c) and caught.value.base_url == "http://fhir.test/baseR4"


def test_unreachable_oversized_and_slow_answers_name_the_server(
    mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.add(responses.GET, f"{BASE}/Patient/p1", body=requests.exceptions.ConnectionError("reset"))
    mocked.add(
        responses.GET,
        f"{BASE}/Patient/p2",
        body="x" * 2000,
        content_type="application/fhir+json",
        auto_calculate_content_length=True,
    )
    with FhirClient(BASE, retries=1, max_response_bytes=1000) as c:
        with pytest.raises(FhirServerUnavailable) as unreachable:
            c.read("Patient", "p1")
        with pytest.raises(FhirResponseTooLarge) as large:
            c.read("Patient", "p2")
    assert unreachable.value.message == (
        f"The FHIR server at {BASE} could not be reached (connection) for GET Patient/p1 after 2 attempt(s)."
    )
    assert large.value.message == (
        f"The FHIR server at {BASE} answered 200 (application/fhir+json) to GET Patient/p2 "
        "with a body larger than the limit of 1,000 bytes."
    )


def test_a_refused_token_request_names_the_token_endpoint(mocked: responses.RequestsMock) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    token_url = "https://auth.test/oauth/token?tenant=SECRET-TENANT"
    mocked.add(responses.POST, token_url, status=400, json={"error": "invalid_scope"})
    auth = SmartBackendServices(token_url, "client", pem, "kid", "system/*.read", algorithm="ES384")
    with FhirClient(BASE, auth=auth) as c, pytest.raises(FhirAuthError) as caught:
        c.read("Patient", "p1")
    assert caught.value.message == (
        f"The token endpoint https://auth.test/oauth/token of the FHIR server at {BASE} refused the client: "
        "it answered 400 (application/json), invalid_scope."
    )
