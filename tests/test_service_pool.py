"""Throughput without giving up order or bounds: the worker pool keeps one patient's jobs in order
and one at a time, a sync's reads go in one batch, and one deadline bounds a whole sync."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from fhirserver import FhirTestServer

from adapter.errors import FhirDeadlineExceeded
from adapter.fhir.client import FhirClient
from adapter.pipeline import Options
from adapter.read import uses
from adapter.server.loader import as_transaction
from adapter.server.sync import sync_procedure
from adapter.service.handler import SyncHandler
from adapter.service.queue import Job, JobQueue, Notice
from adapter.service.settings import Settings
from adapter.service.worker import Worker

# --------------------------------------------------------------------------- the pool


def test_the_pool_keeps_one_patients_jobs_in_order_and_one_at_a_time(tmp_path: Path) -> None:
    queue = JobQueue(tmp_path / "q.sqlite")
    patients = ["Patient/a", "Patient/b", "Patient/c"]
    notices = [
        Notice(
            kind="resource",
            source="rest-hook",
            resource_type="Procedure",
            resource_id=f"{patient[-1]}{n}",
            version="1",
            dedupe_key=f"Procedure/{patient[-1]}{n}/_history/1",
            lane=patient,
        )
        for n in range(6)
        for patient in patients
    ]
    queue.enqueue(notices)
    lock = threading.Lock()
    running: dict[str, int] = {}
    order: dict[str, list[int]] = {p: [] for p in patients}
    overlap: list[str] = []
    busy = {"now": 0, "most": 0}

    def handler(job: Job) -> str:
        lane = job.lane or ""
        with lock:
            if running.get(lane):
                overlap.append(lane)
            running[lane] = running.get(lane, 0) + 1
            order[lane].append(job.id)
            busy["now"] += 1
            busy["most"] = max(busy["most"], busy["now"])
        time.sleep(0.05)
        with lock:
            running[lane] -= 1
            busy["now"] -= 1
        return "ok"

    worker = Worker(queue, handler, poll_seconds=0.05, threads=4)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while queue.counts()["done"] < len(notices) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
    assert queue.counts()["done"] == len(notices)
    assert overlap == []
    for patient in patients:
        assert order[patient] == sorted(order[patient]) and len(order[patient]) == 6
    assert busy["most"] >= 2  # patients ran side by side
    assert worker.processed == len(notices)


def test_a_job_waiting_to_retry_does_not_hold_its_patient(tmp_path: Path) -> None:
    queue = JobQueue(tmp_path / "q.sqlite")
    first, second = (
        Notice(kind="resource", source="rest-hook", resource_type="Procedure", resource_id=i, lane="Patient/a")
        for i in ("p1", "p2")
    )
    queue.enqueue([first])
    queue.enqueue([second])
    taken = queue.claim(60)
    assert taken is not None and taken.resource_id == "p1"
    assert queue.claim(60) is None  # the lane is busy
    queue.fail(taken, "UpstreamError: down", retryable=True)
    later = queue.claim(60)
    assert later is not None and later.resource_id == "p2"


# The claim's rule in one plain query (one that sorts every due job; the queue's finds the same job
# without doing so).
_PLAIN_CLAIM = (
    "SELECT id FROM jobs AS j WHERE ((state IN ('pending', 'retry') AND next_attempt_at <= :now) "
    "OR (state = 'working' AND lease_until <= :now)) "
    "AND NOT EXISTS (SELECT 1 FROM jobs AS o WHERE o.lane = j.lane AND o.id != j.id "
    "AND o.state = 'working' AND o.lease_until > :now) "
    "AND NOT EXISTS (SELECT 1 FROM jobs AS o WHERE o.lane = j.lane AND o.id < j.id AND o.state = 'pending') "
    "ORDER BY next_attempt_at, id LIMIT 1"
)


def test_a_claim_takes_the_first_due_job_of_a_free_lane_whatever_the_states(tmp_path: Path) -> None:
    now = 1_800_000_000.0
    queue = JobQueue(tmp_path / "q.sqlite", clock=lambda: now)
    queue.enqueue(
        [
            Notice(
                kind="resource", source="rest-hook", resource_type="Procedure", resource_id=f"p{n}", lane=f"L{n % 7}"
            )
            for n in range(60)
        ]
    )
    rng = random.Random(9)
    raw = sqlite3.connect(tmp_path / "q.sqlite", isolation_level=None)
    for _ in range(200):
        with raw:
            for (job_id,) in raw.execute("SELECT id FROM jobs ORDER BY random() LIMIT 12").fetchall():
                state = rng.choice(["pending", "retry", "working", "done", "dead"])
                due = None if state == "working" else now + rng.uniform(-30, 30)
                lease = now + rng.uniform(-30, 30) if state == "working" else None
                raw.execute(
                    "UPDATE jobs SET state = ?, next_attempt_at = ?, lease_until = ? WHERE id = ?",
                    (state, due, lease, job_id),
                )
        expected = raw.execute(_PLAIN_CLAIM, {"now": now}).fetchone()
        taken = queue.claim(60)
        assert (taken.id if taken else None) == (expected[0] if expected else None)
    raw.close()


# --------------------------------------------------------------------------- batched reads


class _BatchingClient:
    """Enough of a FHIR client to see how `gather` reads: in one batch when the server offers it."""

    base_url = "http://fhir.example/r4"

    def __init__(self, focus: dict[str, Any]) -> None:
        self.focus = focus
        self.batches: list[list[tuple[str, Any]]] = []
        self.searched: list[str] = []

    def read(self, type_: str, id_: str) -> dict[str, Any]:
        assert f"{type_}/{id_}" == "Procedure/p1", "only the focus is read on its own"
        return self.focus

    def search(self, type_: str, params: Any) -> list[dict[str, Any]]:
        self.searched.append(type_)
        return []

    def supports_include(self, type_: str, include: str, *, reverse: bool = False) -> bool:
        return True

    def supports_batch(self) -> bool:
        return True

    def batch_get(self, requests: list[tuple[str, Any]]) -> list[tuple[int, dict[str, Any] | None]]:
        self.batches.append(list(requests))
        answers: list[tuple[int, dict[str, Any] | None]] = []
        for path, _ in requests:
            if path.startswith("Patient/"):
                answers.append((200, {"resourceType": "Patient", "id": path.split("/")[1]}))
            else:
                answers.append((200, {"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []}))
        return answers

    def relative(self, reference: str) -> str:
        return reference.removeprefix(self.base_url + "/")


def test_gather_sends_the_patient_and_every_declared_search_in_one_batch() -> None:
    from adapter.server.gather import gather

    focus = {
        "resourceType": "Procedure",
        "id": "p1",
        "status": "completed",
        "subject": {"reference": "Patient/pt"},
        "performedDateTime": "2026-10-15",
    }
    client = _BatchingClient(focus)
    found = gather(client, "Procedure/p1")  # type: ignore[arg-type]
    assert client.searched == []
    [batch] = client.batches
    assert batch[0] == ("Patient/pt", None)
    assert [path for path, _ in batch[1:]] == [t.type for t in uses.PATIENT_TYPES]
    assert {f"{r['resourceType']}/{r['id']}" for r in found} == {"Procedure/p1", "Patient/pt"}


def test_a_batch_answer_with_more_than_one_page_is_searched_again_on_its_own() -> None:
    from adapter.server.gather import gather

    focus = {"resourceType": "Procedure", "id": "p1", "status": "completed", "subject": {"reference": "Patient/pt"}}
    client = _BatchingClient(focus)
    original = client.batch_get

    def partial(requests: list[tuple[str, Any]]) -> list[tuple[int, dict[str, Any] | None]]:
        answers = original(requests)
        # The Condition search: one match of two on this page.
        index = next(i for i, (path, _) in enumerate(requests) if path == "Condition")
        answers[index] = (200, {"resourceType": "Bundle", "type": "searchset", "total": 2, "entry": [{}]})
        return answers

    client.batch_get = partial  # type: ignore[method-assign]
    gather(client, "Procedure/p1")  # type: ignore[arg-type]
    assert client.searched == ["Condition"]


@pytest.mark.server
def test_a_sync_takes_four_round_trips(fhir_server: FhirTestServer) -> None:
    """Before the batches: 14 (the focus, the patient, nine searches, the Claim lookup, the write,
    the retirement search). Now: the focus, one batch of reads, one batch of the write-back's
    lookups (the Claim, its Task, the patient's Claims), the write."""
    client = FhirClient(fhir_server.base_url)
    prefix = f"rt{time.monotonic_ns() % 10**8}-"
    record = (REPO / "examples" / "medicare-lumbar-bilateral" / "input.json").read_bytes()
    client.transaction(as_transaction(record, id_prefix=prefix))
    client.capabilities()
    sent: list[str] = []
    send = client.transport.send

    def counting(method: str, url: str, **kwargs: Any) -> Any:
        sent.append(client.transport.describe(method, url, kwargs.get("params")))
        return send(method, url, **kwargs)

    client.transport.send = counting  # type: ignore[method-assign]
    outcome = sync_procedure(client, f"Procedure/{prefix}mbb-l4l5", Options(payer="medicare"))
    assert outcome.claim_action == "created"
    assert len(sent) == 4, sent
    assert sum(1 for request in sent if request == "POST [base]") == 3  # the two batches, the write

    # Synced again with nothing changed: the focus and the two batches; nothing written.
    sent.clear()
    again = sync_procedure(client, f"Procedure/{prefix}mbb-l4l5", Options(payer="medicare"))
    assert again.claim_action == "unchanged" and again.claim_id == outcome.claim_id
    assert len(sent) == 3, sent


# --------------------------------------------------------------------------- one deadline per sync


class _Dribble(BaseHTTPRequestHandler):
    """A FHIR server that answers a byte at a time: each read is within any read timeout."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(100000):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            return

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def dribbling() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Dribble)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/fhir"
    server.shutdown()
    server.server_close()


def test_a_slow_server_cannot_hold_a_worker_past_the_sync_deadline(dribbling: str, tmp_path: Path) -> None:
    queue = JobQueue(tmp_path / "q.sqlite")
    settings = Settings(fhir_base=dribbling, db_path=queue.path, sync_deadline=2.0, fhir_timeout=1.0)
    handler = SyncHandler(settings, queue)
    queue.enqueue([Notice(kind="resource", source="rest-hook", resource_type="Procedure", resource_id="p1")])
    job = queue.claim(60)
    assert job is not None
    started = time.monotonic()
    with pytest.raises(FhirDeadlineExceeded) as raised:
        handler(job)
    took = time.monotonic() - started
    handler.close()
    assert 1.5 < took < 4.0
    assert "2 s limit of the whole sync" in raised.value.message
    assert dribbling.removesuffix("/fhir") in raised.value.message


def test_the_worker_retries_a_job_that_ran_out_of_time(dribbling: str, tmp_path: Path) -> None:
    queue = JobQueue(tmp_path / "q.sqlite")
    settings = Settings(fhir_base=dribbling, db_path=queue.path, sync_deadline=1.0, fhir_timeout=1.0)
    handler = SyncHandler(settings, queue)
    queue.enqueue([Notice(kind="resource", source="rest-hook", resource_type="Procedure", resource_id="p1")])
    job = Worker(queue, handler, lease_seconds=60).run_once()
    handler.close()
    assert job is not None and job.state == "retry"
    assert "FhirDeadlineExceeded" in (job.last_error or "")
