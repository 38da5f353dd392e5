"""`facet-adapter serve` end to end: a real service process, the local FHIR test server and its
rest-hook Subscriptions.

The loop: subscribe (payload + bearer header) → POST a patient's record as a transaction → the
server PUTs each facet Procedure to /notify → the queue → sync → one Claim on the server with
the right lines. Then redelivery, a Procedure update, kill -9 with work queued, kill -9 after a
Claim was written but before its job was marked done, a bad token and a malformed notification.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import REPO, run_cli
from fhirclaims import claim_lines
from fhirserver import FhirTestServer

from adapter.server.loader import as_transaction
from adapter.service.queue import Job, JobQueue

pytestmark = [pytest.mark.server, pytest.mark.slow]

FHIR_JSON = "application/fhir+json"
TOKEN = "e2e-" + uuid.uuid4().hex
EXAMPLE = REPO / "examples" / "medicare-lumbar-bilateral" / "input.json"
EXPECTED_LINES = ["64493-50-KX", "64494-50-KX"]
# Names and identifiers in the example record that must never appear in the service's log.
PATIENT_DATA = ["Rivera", "MRN-PT-ANA", "1EG4TE5MK73", "1958-04-02"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# `python -c` program: `facet-adapter serve` whose job handler SIGKILLs the process right after a
# job's sync has written to the FHIR server and before the worker can mark the job done: the
# crash window between write-back and `complete`. It first waits until both of the session's
# notifications are queued, so that the second one is not lost with the process.
CRASH_AFTER_WRITE_BACK = """
import os, signal, sys, time
from adapter.service import handler

write_back = handler.SyncHandler.__call__

def write_back_then_die(self, job):
    deadline = time.monotonic() + 15
    while len(self.queue.jobs()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    note = write_back(self, job)
    sys.stderr.write(f"test: job {job.id} wrote back ({note}); SIGKILL before it is marked done\\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)

handler.SyncHandler.__call__ = write_back_then_die
from adapter.cli import main
main(sys.argv[1:])
"""


class Service:
    """One `facet-adapter serve` subprocess in its own process group."""

    def __init__(
        self,
        fhir_base: str,
        db: Path,
        log_path: Path,
        port: int | None = None,
        *,
        crash_after_write_back: bool = False,
        extra: Sequence[str] = (),
    ) -> None:
        self.port = port or free_port()
        self.db = db
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "ab")
        env = {**os.environ, "PYTHONPATH": str(REPO), "FACET_ADAPTER_LOG": "INFO"}
        program = ["-c", CRASH_AFTER_WRITE_BACK] if crash_after_write_back else ["-m", "adapter"]
        self.process = subprocess.Popen(
            [
                sys.executable,
                *program,
                "serve",
                "--fhir-base",
                fhir_base,
                "--port",
                str(self.port),
                "--token",
                TOKEN,
                "--db",
                str(db),
                "--payer",
                "medicare",
                *extra,
            ],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self._healthy, 20, f"the service on port {self.port} ({self.log()[-2000:]})")

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the service exited with {self.process.returncode}:\n{self.log()[-3000:]}")
        try:
            return requests.get(self.url + "/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._log.close()

    def jobs(self) -> list[Job]:
        return JobQueue(self.db, create=False).jobs()


class Fhir:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers.update({"Accept": FHIR_JSON, "Content-Type": FHIR_JSON})

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body) if body is not None else None
        response = self.session.request(method, f"{self.base_url}/{path}", data=data, timeout=30)
        assert response.status_code < 300, response.text
        return response.json()

    def claims(self, patient_id: str) -> list[dict[str, Any]]:
        bundle = self.request("GET", f"Claim?patient=Patient/{patient_id}")
        return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]

    def subscribe(self, endpoint: str) -> str:
        """`facet-adapter subscribe`: the rest-hook Subscription for the facet codes, with payload
        and the bearer header. Tests run one at a time, so while it is active only this test's
        Procedures reach the service; it is deleted at the end of the test."""
        run = run_cli("subscribe", "--endpoint", endpoint, "--token", TOKEN, "--fhir-base", self.base_url)
        assert run.code == 0, run.stderr.decode()
        found = re.search(r"Subscription/([A-Za-z0-9.-]+)", run.stdout.decode())
        assert found, run.stdout.decode()
        stored = self.request("GET", f"Subscription/{found[1]}")
        assert stored["status"] == "active" and stored["channel"]["payload"] == FHIR_JSON, stored
        assert stored["channel"]["header"] == [f"Authorization: Bearer {TOKEN}"]
        return found[1]

    def unsubscribe(self, subscription_id: str) -> None:
        self.session.delete(f"{self.base_url}/Subscription/{subscription_id}", timeout=30)

    def load_example(self, prefix: str) -> str:
        """POST the example record as a transaction; returns the patient id."""
        transaction = as_transaction(EXAMPLE.read_bytes(), id_prefix=prefix)
        self.request("POST", "", transaction)
        return f"{prefix}pt-ana"


@pytest.fixture(scope="module")
def fhir(fhir_server: FhirTestServer) -> Iterator[Fhir]:
    client = Fhir(fhir_server.base_url)
    yield client
    client.session.close()


@pytest.fixture(scope="module")
def service(fhir_server: FhirTestServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("service")
    running = Service(fhir_server.base_url, folder / "queue.sqlite", folder / "service.log")
    yield running
    running.stop()
    log = running.log()
    for value in PATIENT_DATA:
        assert value not in log, f"patient data {value!r} in the service log"


def line_multiset(claim: dict[str, Any]) -> list[str]:
    return sorted(claim_lines(claim))


def test_notification_to_claim_loop(fhir: Fhir, service: Service, record_property: Any) -> None:
    prefix = f"svc{uuid.uuid4().hex[:8]}-"
    patient_id = f"{prefix}pt-ana"
    subscription = fhir.subscribe(service.url + "/notify")
    try:
        fhir.load_example(prefix)
        loaded = time.monotonic()
        claims = wait_for(lambda: fhir.claims(patient_id), 15, "the Claim on the server")
        latency = time.monotonic() - loaded
        record_property("notification_to_claim_seconds", round(latency, 2))
        print(f"\nnotification → Claim on the server: {latency:.2f} s")
        assert len(claims) == 1
        assert line_multiset(claims[0]) == EXPECTED_LINES
        assert claims[0]["status"] == "active"

        # Both facet Procedures of the session were notified; both jobs end done, one Claim.
        def settled() -> list[Job]:
            mine = [j for j in service.jobs() if (j.resource_id or "").startswith(prefix)]
            return mine if len(mine) == 2 and all(j.state == "done" for j in mine) else []

        jobs = wait_for(settled, 15, "both notification jobs done")
        assert {j.resource_id for j in jobs} == {f"{prefix}mbb-l4l5", f"{prefix}mbb-l5s1"}

        # HAPI delivering the same notification again: no new job, still one Claim.
        procedure = fhir.request("GET", f"Procedure/{prefix}mbb-l4l5")
        before = len(service.jobs())
        again = requests.put(
            f"{service.url}/notify/Procedure/{prefix}mbb-l4l5",
            data=json.dumps(procedure),
            headers={"Content-Type": f"{FHIR_JSON}; charset=UTF-8", "Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        assert again.status_code == 200, again.text
        assert "already queued" in again.json()["issue"][0]["details"]["text"]
        assert len(service.jobs()) == before

        # The same Procedure updated on the server: a new version, a new job, still one Claim.
        procedure["note"] = [{"text": "Tolerated well."}]
        fhir.request("PUT", f"Procedure/{prefix}mbb-l4l5", procedure)
        wait_for(
            lambda: len(service.jobs()) == before + 1 and all(j.state == "done" for j in service.jobs()),
            15,
            "the update's job done",
        )
        claims = fhir.claims(patient_id)
        assert len(claims) == 1
        assert line_multiset(claims[0]) == EXPECTED_LINES
    finally:
        fhir.unsubscribe(subscription)


def test_bad_token_refused_and_nothing_queued(fhir: Fhir, service: Service) -> None:
    before = len(service.jobs())
    body = json.dumps({"resourceType": "Procedure", "id": "x1", "status": "completed"})
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        r = requests.put(
            f"{service.url}/notify/Procedure/x1",
            data=body,
            headers={"Content-Type": FHIR_JSON, **headers},
            timeout=10,
        )
        assert r.status_code == 401, r.text
        assert r.json()["resourceType"] == "OperationOutcome"
    assert requests.post(f"{service.url}/notify", timeout=10).status_code == 401
    assert len(service.jobs()) == before


def test_malformed_notification_400_and_nothing_queued(service: Service) -> None:
    before = len(service.jobs())
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": FHIR_JSON}
    cases = [
        ("PUT", "/notify/Procedure/p1", b"{not json"),
        ("PUT", "/notify/Procedure/p1", json.dumps({"resourceType": "Patient", "id": "p1"}).encode()),
        ("PUT", "/notify/Procedure/p1", json.dumps({"resourceType": "Procedure", "id": "p2"}).encode()),
        ("POST", "/notify", json.dumps({"resourceType": "Bundle", "type": "history", "entry": []}).encode()),
    ]
    for method, path, body in cases:
        r = requests.request(method, service.url + path, data=body, headers=auth, timeout=10)
        assert r.status_code == 400, (path, r.text)
        assert r.headers["Content-Type"].startswith(FHIR_JSON)
        assert r.json()["resourceType"] == "OperationOutcome"
    assert len(service.jobs()) == before


def test_metadata_open_for_hapi_reachability_check(service: Service) -> None:
    r = requests.get(service.url + "/notify/metadata", timeout=10)
    assert r.status_code == 200
    assert r.json()["resourceType"] == "CapabilityStatement"


def test_killed_with_notifications_queued_then_restarted(
    fhir: Fhir, fhir_server: FhirTestServer, tmp_path: Path
) -> None:
    """Jobs are queued while the FHIR base the service calls refuses connections; kill -9;
    restart with the right base on the same queue: every notification is processed, once."""
    prefix = f"kill{uuid.uuid4().hex[:8]}-"
    patient_id = f"{prefix}pt-ana"
    db = tmp_path / "queue.sqlite"
    refused = f"http://127.0.0.1:{free_port()}/fhir"
    first = Service(refused, db, tmp_path / "first.log")
    subscription = fhir.subscribe(first.url + "/notify")
    try:
        fhir.load_example(prefix)
        wait_for(lambda: len(first.jobs()) >= 2, 15, "two queued notifications")
        first.kill9()
        left = JobQueue(db, create=False).jobs()
        assert len(left) == 2
        assert all(j.state in ("pending", "working", "retry") for j in left), left
        assert fhir.claims(patient_id) == []

        # Same port, so the Subscription's endpoint still reaches the service.
        second = Service(fhir_server.base_url, db, tmp_path / "second.log", port=first.port)
        try:
            claims = wait_for(lambda: fhir.claims(patient_id), 15, "the Claim after the restart")
            wait_for(lambda: all(j.state == "done" for j in second.jobs()), 15, "every job done")
            jobs = second.jobs()
            assert len(jobs) == 2
            assert {j.resource_id for j in jobs} == {f"{prefix}mbb-l4l5", f"{prefix}mbb-l5s1"}
            claims = fhir.claims(patient_id)
            assert len(claims) == 1
            assert line_multiset(claims[0]) == EXPECTED_LINES
        finally:
            second.stop()
        for value in PATIENT_DATA:
            assert value not in first.log() + second.log()
    finally:
        fhir.unsubscribe(subscription)
        if first.process.poll() is None:
            first.stop()


def test_killed_after_the_claim_was_written_before_the_job_was_done(
    fhir: Fhir, fhir_server: FhirTestServer, tmp_path: Path
) -> None:
    """The first service writes the Claim for the first job and is SIGKILLed before it records
    the job as done. After a restart on the same queue the job runs again (at-least-once), finds
    the Claim it wrote, and the server still holds exactly one Claim, unchanged."""
    prefix = f"crash{uuid.uuid4().hex[:8]}-"
    patient_id = f"{prefix}pt-ana"
    db = tmp_path / "queue.sqlite"
    first = Service(fhir_server.base_url, db, tmp_path / "first.log", crash_after_write_back=True)
    subscription = fhir.subscribe(first.url + "/notify")
    try:
        fhir.load_example(prefix)
        assert first.process.wait(30) == -signal.SIGKILL, first.log()[-3000:]
        first.kill9()  # reap the process group, close the log
        assert "SIGKILL before it is marked done" in first.log()

        left = JobQueue(db, create=False).jobs()
        assert sorted(j.state for j in left) == ["pending", "working"], left
        [crashed] = [j for j in left if j.state == "working"]
        assert crashed.attempts == 1 and crashed.result is None
        claims = fhir.claims(patient_id)
        assert len(claims) == 1, "the first job wrote the Claim before it died"
        written = claims[0]

        second = Service(fhir_server.base_url, db, tmp_path / "second.log", port=first.port)
        try:
            wait_for(
                lambda: len(second.jobs()) == 2 and all(j.state == "done" for j in second.jobs()),
                20,
                "every job done after the restart",
            )
            again = next(j for j in second.jobs() if j.id == crashed.id)
            assert again.attempts == 2, "the interrupted job ran again"
            assert f"Claim/{written['id']} unchanged" in (again.result or ""), again.result
            assert "queue recovered: 1 job(s) left working" in second.log()
            claims = fhir.claims(patient_id)
            assert [c["id"] for c in claims] == [written["id"]]
            assert claims[0]["meta"]["versionId"] == written["meta"]["versionId"]
            assert line_multiset(claims[0]) == EXPECTED_LINES
        finally:
            second.stop()
        for value in PATIENT_DATA:
            assert value not in first.log() + second.log()
    finally:
        fhir.unsubscribe(subscription)
        if first.process.poll() is None:
            first.stop()
