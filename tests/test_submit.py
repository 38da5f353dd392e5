"""`facet-adapter submit` (issue 10, item 2; docs/payer.md, submitting): 2xx is the result, 4xx with an
OperationOutcome is final, 5xx and connection failures are retried within the budget; exit 0
approved, 1 denied or pended, 2 usage, 4 unreachable; a held Claim only with --force; a pended
answer followed up with Claim/$inquire."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from builders import CaseBuilder
from conftest import REPO, run_cli
from payerserver import free_port, sandbox_payer

from adapter.pipeline import Options, process


def write(tmp_path: Path, name: str, bundle: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_bytes(orjson.dumps(bundle))
    return path


def example_bundle(name: str) -> dict[str, Any]:
    folder = REPO / "examples" / name
    args = json.loads((folder / "args.json").read_text())
    return dict(process(next(folder.glob("input.*")).read_bytes(), Options(**args)).bundle)


class Script:
    def __init__(self) -> None:
        self.url = ""
        self.paths: list[str] = []


@contextlib.contextmanager
def scripted(answers: list[tuple[int, dict[str, Any] | None]]) -> Iterator[Script]:
    """A server that answers each POST with the next (status, body); records the paths it was sent."""
    script = Script()
    seen = script.paths

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(self.path)
            status, body = answers[min(len(seen), len(answers)) - 1]
            payload = orjson.dumps(body) if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        script.url = f"http://127.0.0.1:{server.server_address[1]}/fhir"
        yield script
    finally:
        server.shutdown()
        server.server_close()


APPROVED = {
    "resourceType": "ClaimResponse",
    "status": "active",
    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
    "use": "claim",
    "patient": {"reference": "Patient/p1"},
    "created": "2026-12-01",
    "insurer": {"display": "Payer"},
    "outcome": "complete",
    "item": [
        {"itemSequence": 1, "adjudication": [{"category": {"coding": [{"code": "benefit"}]}, "amount": {"value": 10}}]}
    ],
}
REFUSED = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid", "diagnostics": "x"}]}


def test_an_approved_request_exits_0_with_the_answer_on_stdout(tmp_path: Path) -> None:
    request = write(tmp_path, "pas.json", example_bundle("medicare-preauthorization-pas"))
    with sandbox_payer() as payer:
        run = run_cli("submit", str(request), "--url", payer.base_url)
    assert run.code == 0, run.stderr
    answer = run.json()
    assert answer["resourceType"] == "Bundle" and answer["entry"][0]["resource"]["resourceType"] == "ClaimResponse"
    assert b"APPROVED, authorization FA" in run.stderr


def test_a_held_claim_is_refused_unless_forced_and_a_denial_exits_1(tmp_path: Path) -> None:
    request = write(tmp_path, "held.json", example_bundle("medicare-hopd-prior-auth-missing"))
    with sandbox_payer() as payer:
        refused = run_cli("submit", str(request), "--url", payer.base_url)
        forced = run_cli("submit", str(request), "--url", payer.base_url, "--force")
    assert refused.code == 2 and refused.stdout == b"" and b"held" in refused.stderr
    assert forced.code == 1 and forced.json()["resourceType"] == "ClaimResponse" and b"DENIED" in forced.stderr


def test_a_pended_answer_is_followed_up_until_decided(tmp_path: Path) -> None:
    case = CaseBuilder("2026-12-15", pain_score=None)
    case.block(["L4-L5"], intent="diagnostic", resource_type="ServiceRequest", status="active")
    request = write(tmp_path, "pended.json", case.run(payer="medicare", use="preauthorization").bundle)
    with sandbox_payer(review_seconds=1.5) as payer:
        waited = run_cli("submit", str(request), "--url", payer.base_url, "--poll", "0.5", "--wait", "20")
    assert waited.code == 0, waited.stderr
    assert b"APPROVED" in waited.stderr and b"inquiry(ies)" in waited.stderr
    assert waited.json()["meta"]["profile"][0].endswith("profile-pas-inquiry-response-bundle")


def test_a_pended_answer_stays_pended_without_waiting(tmp_path: Path) -> None:
    case = CaseBuilder("2026-12-15", pain_score=None)
    case.block(["L4-L5"], intent="diagnostic", resource_type="ServiceRequest", status="active")
    request = write(tmp_path, "pended.json", case.run(payer="medicare", use="preauthorization").bundle)
    with sandbox_payer(review_seconds=60) as payer:
        run = run_cli("submit", str(request), "--url", payer.base_url, "--wait", "0")
    assert run.code == 1 and b"PENDED" in run.stderr


def test_a_4xx_answer_is_final_and_not_retried(tmp_path: Path) -> None:
    request = write(tmp_path, "claim.json", example_bundle("medicare-lumbar-bilateral"))
    with scripted([(400, REFUSED)]) as payer:
        run = run_cli("submit", str(request), "--url", payer.url)
    assert run.code == 2 and run.json() == REFUSED  # the payer's OperationOutcome, on stdout
    assert payer.paths == ["/fhir/Claim/$submit"]


def test_5xx_answers_are_retried_within_the_budget(tmp_path: Path) -> None:
    request = write(tmp_path, "claim.json", example_bundle("medicare-lumbar-bilateral"))
    with scripted([(500, None), (503, REFUSED), (200, APPROVED)]) as payer:
        run = run_cli("submit", str(request), "--url", payer.url)
    assert run.code == 0, run.stderr
    assert payer.paths == ["/fhir/Claim/$submit"] * 3


def test_an_unreachable_payer_is_exit_4_within_the_budget(tmp_path: Path) -> None:
    request = write(tmp_path, "claim.json", example_bundle("medicare-lumbar-bilateral"))
    started = time.monotonic()
    run = run_cli("submit", str(request), "--url", f"http://127.0.0.1:{free_port()}/fhir", "--budget", "2")
    assert run.code == 4 and b"could not be reached" in run.stderr
    assert time.monotonic() - started < 15


def test_a_payer_that_comes_up_within_the_budget_answers(tmp_path: Path) -> None:
    request = write(tmp_path, "claim.json", example_bundle("medicare-lumbar-bilateral"))
    port = free_port()
    command = [sys.executable, "-m", "adapter", "submit", str(request), "--url", f"http://127.0.0.1:{port}/fhir"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as submitting:
        time.sleep(1.5)  # the payer is down while `submit` makes its first attempts
        assert submitting.poll() is None
        with sandbox_payer(port):
            stdout, stderr = submitting.communicate(timeout=60)
    assert submitting.returncode == 0, stderr
    assert json.loads(stdout)["resourceType"] == "ClaimResponse"


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"not json", b"not JSON"),
        (b'{"resourceType": "Patient"}', b"Bundle"),
        (b'{"resourceType": "Bundle"}', b"Claim"),
    ],
)
def test_what_is_not_a_request_is_a_usage_error(tmp_path: Path, content: bytes, why: bytes) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    run = run_cli("submit", str(path), "--url", "http://127.0.0.1:9/fhir")
    assert run.code == 2 and why in run.stderr and run.stdout == b""
    assert run_cli("submit", str(path), "--url", "ftp://payer").code == 2
