"""The durable queue and its worker: dedupe, backoff, dead letters, crash recovery, the
`queue list|retry` command line, the single-service lock and the default sync handler's job
handling (with `responses` only for a server fault the test server cannot produce)."""

from __future__ import annotations

import json
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import responses
from conftest import run_cli

from adapter.errors import (
    FhirAuthError,
    FhirConflict,
    FhirDeadlineExceeded,
    FhirNotFound,
    FhirPageLimitError,
    FhirRequestRejected,
    FhirResponseTooLarge,
    FhirServerError,
    FhirServerUnavailable,
    InvalidR4Error,
    NoFacetProcedureError,
    UpstreamError,
    UsageError,
)
from adapter.service.app import create_app
from adapter.service.handler import CLOCK_SKEW_SECONDS, SyncHandler
from adapter.service.queue import Job, JobQueue, Notice, QueueError, QueueLock, RetryPolicy, iso
from adapter.service.settings import Settings
from adapter.service.worker import Worker

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def resource(id_: str, version: str = "1", type_: str = "Procedure") -> Notice:
    return Notice("resource", "rest-hook", type_, id_, version, f"{type_}/{id_}/_history/{version}")


PING = Notice("requery", "ping")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(tmp_path: Path, clock: Clock) -> JobQueue:
    return JobQueue(tmp_path / "queue.sqlite", clock=clock, policy=RetryPolicy(max_attempts=3, base_seconds=10))


def run(queue: JobQueue, handler: Any) -> Job | None:
    return Worker(queue, handler, lease_seconds=60).run_once()


# --------------------------------------------------------------------------- enqueue and dedupe


def test_the_file_is_wal_with_full_sync(queue: JobQueue) -> None:
    import sqlite3

    conn = sqlite3.connect(queue.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    fresh = queue._connect()
    try:
        assert fresh.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        fresh.close()


def test_same_notification_twice_is_one_job(queue: JobQueue) -> None:
    [first] = queue.enqueue([resource("p1")])
    [second] = queue.enqueue([resource("p1")])
    assert first.created and not second.created and first.job_id == second.job_id
    [job] = queue.jobs()
    assert job.deliveries == 2


def test_redelivery_after_the_job_is_done_is_not_a_new_job(queue: JobQueue) -> None:
    queue.enqueue([resource("p1")])
    run(queue, lambda job: None)
    [again] = queue.enqueue([resource("p1")])
    assert not again.created and again.state == "done"
    assert len(queue.jobs()) == 1


def test_a_batch_is_queued_whole_and_deduped_within_itself(queue: JobQueue) -> None:
    results = queue.enqueue([resource("p1"), resource("p2"), resource("p1")])
    assert [r.created for r in results] == [True, True, False]
    assert len(queue.jobs()) == 2


def test_pings_coalesce_until_the_requery_starts(queue: JobQueue) -> None:
    queue.enqueue([PING])
    queue.enqueue([PING])
    assert len(queue.jobs()) == 1
    claimed = queue.claim(60)
    assert claimed is not None and claimed.kind == "requery"
    # The running re-query may already have searched: a new ping needs its own job.
    [late] = queue.enqueue([PING])
    assert late.created
    assert [j.state for j in queue.jobs()] == ["working", "pending"]


def test_a_ping_keeps_a_waiting_requerys_backoff(queue: JobQueue, clock: Clock) -> None:
    queue.enqueue([PING])
    job = queue.claim(60)
    assert job is not None
    failed = queue.fail(job, "UpstreamError: down", retryable=True)
    assert failed is not None and failed.next_attempt_at is not None
    [again] = queue.enqueue([PING])
    assert (again.job_id, again.created, again.state) == (job.id, False, "retry")
    assert queue.claim(60) is None  # still backing off
    [waiting] = queue.jobs()
    assert (waiting.state, waiting.attempts, waiting.deliveries) == ("retry", 1, 2)
    assert waiting.next_attempt_at == failed.next_attempt_at
    clock.now = failed.next_attempt_at
    assert queue.claim(60) is not None


def test_a_burst_of_pings_during_an_outage_does_not_dead_letter_the_requery(queue: JobQueue, clock: Clock) -> None:
    calls: list[int] = []

    def down(job: Job) -> str:
        calls.append(job.attempts)
        raise UpstreamError("The FHIR server could not be reached.", status=503)

    for _ in range(12):  # max_attempts is 3: each ping used to buy an immediate attempt
        queue.enqueue([PING])
        run(queue, down)
        clock.now += 0.1  # 12 pings in 1.2 s; the first retry waits at least 5 s
    assert calls == [1]  # one attempt, then the backoff holds
    [job] = queue.jobs()
    assert (job.kind, job.state, job.attempts, job.deliveries) == ("requery", "retry", 1, 12)

    # Once the server is back, the re-query runs when its backoff ends.
    assert job.next_attempt_at is not None
    clock.now = job.next_attempt_at
    assert run(queue, lambda job: "ok") is not None
    assert queue.jobs()[0].state == "done"


# --------------------------------------------------------------------------- retries and dead letters


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    policy = RetryPolicy(max_attempts=10, base_seconds=4, max_seconds=30)
    assert policy.delay(1, rand=lambda: 0.0) == 2 and policy.delay(1, rand=lambda: 1.0) == 4
    assert policy.delay(2, rand=lambda: 0.0) == 4 and policy.delay(2, rand=lambda: 1.0) == 8
    assert policy.delay(3, rand=lambda: 0.5) == 12
    assert policy.delay(9, rand=lambda: 1.0) == 30


def test_upstream_error_retries_with_backoff_then_dead(queue: JobQueue, clock: Clock) -> None:
    def down(job: Job) -> str:
        raise UpstreamError("The FHIR server could not be reached.", status=503)

    queue.enqueue([resource("p1")])
    job = run(queue, down)
    assert job is not None and job.state == "retry" and job.attempts == 1
    assert job.next_attempt_at is not None and clock.now + 5 <= job.next_attempt_at <= clock.now + 10
    assert run(queue, down) is None  # not due yet
    clock.now = job.next_attempt_at
    job = run(queue, down)
    assert job is not None and job.state == "retry" and job.attempts == 2
    assert job.next_attempt_at is not None and clock.now + 10 <= job.next_attempt_at <= clock.now + 20
    clock.now = job.next_attempt_at
    job = run(queue, down)
    assert job is not None and job.state == "dead" and job.attempts == 3 and job.next_attempt_at is None
    assert job.last_error == "UpstreamError (HTTP 503): The FHIR server could not be reached."


def test_a_later_success_completes_the_job(queue: JobQueue, clock: Clock) -> None:
    attempts = []

    def flaky(job: Job) -> str:
        attempts.append(job.attempts)
        if len(attempts) == 1:
            raise UpstreamError("timeout")
        return "Claim/c1 created"

    queue.enqueue([resource("p1")])
    run(queue, flaky)
    clock.now += 3600
    job = run(queue, flaky)
    assert job is not None
    [done] = queue.jobs()
    assert (done.state, done.attempts, done.result, done.last_error) == ("done", 2, "Claim/c1 created", None)


def test_input_error_is_dead_at_once_with_the_reason(queue: JobQueue) -> None:
    def invalid(job: Job) -> str:
        raise InvalidR4Error("Procedure/p1 is not valid FHIR R4 (1 problem(s)); see the issues below.")

    queue.enqueue([resource("p1")])
    job = run(queue, invalid)
    assert job is not None and job.state == "dead" and job.attempts == 1
    assert job.last_error is not None and job.last_error.startswith("InvalidR4Error: Procedure/p1 is not valid")


@pytest.mark.parametrize(
    ("error", "state"),
    [
        (FhirRequestRejected("The FHIR server answered 400 to POST Claim.", status=400), "dead"),
        (FhirRequestRejected("The FHIR server answered 422 to POST Claim.", status=422), "dead"),
        (FhirNotFound("The FHIR server answered 404 to GET Patient/x.", status=404), "dead"),
        (FhirPageLimitError("A search on Observation has more than 100 pages.", max_pages=100), "dead"),
        (FhirResponseTooLarge("The answer is larger than the limit.", limit=10), "dead"),
        (FhirConflict("The FHIR server answered 409 to PUT Claim/c1.", status=409), "retry"),
        (FhirConflict("The FHIR server answered 412 to PUT Claim/c1.", status=412), "retry"),
        (FhirRequestRejected("The FHIR server answered 408 to GET Claim.", status=408), "retry"),
        (FhirServerUnavailable("The FHIR server answered 429 to GET Claim.", status=429), "retry"),
        (FhirServerUnavailable("The FHIR server could not be reached (connect)."), "retry"),
        (FhirDeadlineExceeded("The FHIR server did not finish in time.", deadline=120), "retry"),
        (FhirServerError("The FHIR server answered 500 to GET Claim.", status=500), "retry"),
        (FhirAuthError("The FHIR server answered 401 to GET Claim.", status=401), "retry"),
    ],
    ids=lambda v: str(getattr(v, "status", None) or type(v).__name__) if not isinstance(v, str) else v,
)
def test_a_permanent_fhir_refusal_is_dead_at_once_others_retry(
    queue: JobQueue, error: UpstreamError, state: str
) -> None:
    def refused(job: Job) -> str:
        raise error

    queue.enqueue([resource("p1")])
    job = run(queue, refused)
    assert job is not None and (job.state, job.attempts) == (state, 1)
    assert (job.last_error or "").startswith(f"{type(error).__name__}")
    assert error.message in (job.last_error or "")


@responses.activate
def test_a_rejected_request_is_dead_at_once_with_the_servers_issue_codes(handler: SyncHandler) -> None:
    responses.get(
        "http://fhir.test/fhir/Procedure/p1",
        status=400,
        json={
            "resourceType": "OperationOutcome",
            "issue": [
                {"severity": "error", "code": "invalid", "diagnostics": "Rivera", "expression": ["Procedure.id"]}
            ],
        },
        content_type="application/fhir+json",
    )
    handler.queue.enqueue([resource("p1")])
    job = Worker(handler.queue, handler).run_once()
    assert job is not None and (job.state, job.attempts) == ("dead", 1)
    assert job.last_error == (
        "FhirRequestRejected (HTTP 400): The FHIR server at http://fhir.test/fhir answered 400 "
        "(application/fhir+json) to GET Procedure/p1. Server issues: invalid at Procedure.id."
    )
    assert len(responses.calls) == 1


def test_unexpected_errors_retry_and_keep_only_the_type(queue: JobQueue) -> None:
    def bug(job: Job) -> str:
        raise KeyError("Rivera, Ana")  # an exception's text may quote data

    queue.enqueue([resource("p1")])
    job = run(queue, bug)
    assert job is not None and job.state == "retry"
    assert job.last_error == "internal error (KeyError)"


# --------------------------------------------------------------------------- crash recovery


def test_a_job_left_working_by_a_killed_process_is_reclaimed_at_start(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "queue.sqlite"
    first = JobQueue(path, clock=clock)
    first.enqueue([resource("p1"), resource("p2")])
    taken = first.claim(900)  # the process dies here, mid-job
    assert taken is not None

    second = JobQueue(path, clock=clock)
    assert second.recover() == (1, 0)
    done: list[str] = []
    worker = Worker(second, lambda job: done.append(job.resource_id or "") or "ok")
    while worker.run_once():
        pass
    assert sorted(done) == ["p1", "p2"]
    assert [(j.state, j.attempts) for j in second.jobs()] == [("done", 2), ("done", 1)]


def test_an_expired_lease_is_reclaimed_and_the_stale_claim_cannot_finish(queue: JobQueue, clock: Clock) -> None:
    queue.enqueue([resource("p1")])
    stale = queue.claim(60)
    assert stale is not None and queue.claim(60) is None
    clock.now += 61
    fresh = queue.claim(60)
    assert fresh is not None and fresh.id == stale.id and fresh.attempts == 2
    assert queue.complete(stale, "late") is False
    assert queue.fail(stale, "late", retryable=True) is None
    assert queue.complete(fresh, "ok") is True


def test_recovery_dead_letters_a_job_that_keeps_killing_the_service(queue: JobQueue) -> None:
    queue.enqueue([resource("p1")])
    for _ in range(3):  # max_attempts
        assert queue.claim(60) is not None
        queue.recover()
    job = queue.jobs()[0]
    assert job.state == "dead" and "stopped while working" in (job.last_error or "")


def test_recovery_makes_waiting_retries_due(queue: JobQueue, clock: Clock) -> None:
    queue.enqueue([resource("p1")])
    job = queue.claim(60)
    assert job is not None
    queue.fail(job, "UpstreamError: down", retryable=True)
    assert queue.claim(60) is None
    assert queue.recover() == (0, 1)
    assert queue.claim(60) is not None


def test_the_worker_thread_processes_new_jobs_promptly(tmp_path: Path) -> None:
    queue = JobQueue(tmp_path / "queue.sqlite")
    done = threading.Event()
    worker = Worker(queue, lambda job: done.set() or "ok", poll_seconds=5)
    worker.start()
    try:
        assert worker.alive
        queue.enqueue([resource("p1")])
        worker.wake()
        assert done.wait(3)
    finally:
        worker.stop()
    assert not worker.alive
    deadline = time.monotonic() + 3
    while queue.jobs()[0].state != "done" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert queue.jobs()[0].state == "done"


def test_queue_failure_answers_503_so_the_sender_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(Settings(fhir_base="http://fhir.invalid/fhir", db_path=tmp_path / "q.sqlite"), run_worker=False)

    def broken(notices: Any) -> Any:
        raise QueueError("The queue database failed: disk I/O error.")

    monkeypatch.setattr(app.state.queue, "enqueue", broken)
    with TestClient(app) as client:
        r = client.post("/notify", content=b"")
    assert r.status_code == 503 and r.json()["resourceType"] == "OperationOutcome"


# --------------------------------------------------------------------------- the lock


def test_one_service_per_queue(tmp_path: Path) -> None:
    db = tmp_path / "queue.sqlite"
    with QueueLock(db):
        with pytest.raises(UsageError):
            QueueLock(db).acquire()
        run = run_cli("serve", "--fhir-base", "http://127.0.0.1:9/fhir", "--port", "0", "--db", str(db))
        assert run.code == 2
        assert "Another facet-adapter serve" in run.error_outcome()["issue"][0]["details"]["text"]
    with QueueLock(db):
        pass


# --------------------------------------------------------------------------- queue list / retry


@pytest.fixture
def dead_db(tmp_path: Path) -> Path:
    path = tmp_path / "queue.sqlite"
    queue = JobQueue(path, policy=RetryPolicy(max_attempts=1))
    queue.enqueue([resource("p1"), resource("p2"), PING])

    def fail(job: Job) -> str:
        if job.resource_id == "p2":
            return "Claim/c2 created"
        raise UpstreamError("The FHIR server could not be reached.")

    worker = Worker(queue, fail)
    while worker.run_once():
        pass
    return path


def test_queue_list_prints_the_jobs(dead_db: Path) -> None:
    listed = run_cli("queue", "list", "--db", str(dead_db))
    assert listed.code == 0, listed.stderr
    lines = listed.stdout.decode().splitlines()
    assert lines[0].split() == ["ID", "KIND", "RESOURCE", "STATE", "ATTEMPTS", "NEXT", "ATTEMPT", "LAST", "ERROR"]
    assert lines[1].split()[:5] == ["1", "resource", "Procedure/p1", "dead", "1"]
    assert "UpstreamError: The FHIR server could not be reached." in lines[1]
    assert lines[2].split()[:4] == ["2", "resource", "Procedure/p2", "done"]
    assert lines[3].split()[:4] == ["3", "requery", "-", "dead"]

    as_json = run_cli("queue", "list", "--db", str(dead_db), "--state", "dead", "--format", "json")
    assert as_json.code == 0
    assert [(j["id"], j["state"], j["resource"]) for j in as_json.json()] == [
        (1, "dead", "Procedure/p1"),
        (3, "dead", None),
    ]


def test_queue_retry_one_job_and_all_dead(dead_db: Path) -> None:
    one = run_cli("queue", "retry", "1", "--db", str(dead_db))
    assert one.code == 0, one.stderr
    assert "Re-queued 1 job(s): 1" in one.stdout.decode()
    queue = JobQueue(dead_db, create=False)
    job = queue.get(1)
    assert job is not None and (job.state, job.attempts) == ("pending", 0)

    rest = run_cli("queue", "retry", "--all-dead", "--db", str(dead_db))
    assert rest.code == 0 and "3" in rest.stdout.decode()
    assert [j.state for j in queue.jobs()] == ["pending", "done", "pending"]
    assert "No dead jobs" in run_cli("queue", "retry", "--all-dead", "--db", str(dead_db)).stdout.decode()


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["retry", "99"], "no job 99"),
        (["retry", "2"], "done"),
        (["retry"], "--all-dead"),
        (["retry", "1", "--all-dead"], "--all-dead"),
    ],
)
def test_queue_retry_refuses_what_it_cannot_do(dead_db: Path, args: list[str], mentions: str) -> None:
    run = run_cli("queue", *args, "--db", str(dead_db))
    assert run.code == 2
    assert mentions in json.dumps(run.error_outcome())
    assert JobQueue(dead_db, create=False).get(1) is not None


def test_queue_commands_on_a_missing_database(tmp_path: Path) -> None:
    run = run_cli("queue", "list", "--db", str(tmp_path / "nope.sqlite"))
    assert run.code == 2 and "no queue database" in run.error_outcome()["issue"][0]["details"]["text"]
    assert not (tmp_path / "nope.sqlite").exists()


# --------------------------------------------------------------------------- the default handler


@pytest.fixture
def handler(tmp_path: Path, clock: Clock) -> SyncHandler:
    queue = JobQueue(tmp_path / "queue.sqlite", clock=clock)
    return SyncHandler(Settings(fhir_base="http://fhir.test/fhir", payer="medicare"), queue)


def _job(queue: JobQueue, notice: Notice) -> Job:
    queue.enqueue([notice])
    job = queue.claim(60)
    assert job is not None
    return job


def test_handler_syncs_procedures_as_claims_and_service_requests_as_preauthorizations(
    handler: SyncHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adapter.server.sync import SyncOutcome

    calls: list[tuple[str, str, str | None]] = []

    def fake_sync(client: Any, reference: str, options: Any, **kwargs: Any) -> SyncOutcome:
        calls.append((reference, options.use, options.payer))
        return SyncOutcome(
            procedure=reference, dry_run=False, exit_code=0, claim_id="c1", claim_action="created",
            claim_status="active", lines=["64493-50-KX"],
        )  # fmt: skip

    monkeypatch.setattr("adapter.server.sync.sync_procedure", fake_sync)
    note = handler(_job(handler.queue, resource("p1")))
    handler(_job(handler.queue, resource("sr1", type_="ServiceRequest")))
    assert calls == [("Procedure/p1", "claim", "medicare"), ("ServiceRequest/sr1", "preauthorization", "medicare")]
    assert note == "Claim/c1 created; active; 64493-50-KX"


def test_handler_treats_a_procedure_that_is_not_claimable_as_done(
    handler: SyncHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_facet(client: Any, reference: str, options: Any, **kwargs: Any) -> Any:
        raise NoFacetProcedureError("--use claim needs a completed facet Procedure; the input has none.")

    monkeypatch.setattr("adapter.server.sync.sync_procedure", not_facet)
    handler.queue.enqueue([resource("p1")])
    job = Worker(handler.queue, handler).run_once()
    assert job is not None
    [done] = handler.queue.jobs()
    assert done.state == "done" and (done.result or "").startswith("nothing to claim")


def test_requery_searches_from_the_watermark(
    handler: SyncHandler, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    monkeypatch.setattr("adapter.server.sync.sync_since", lambda client, since, options, **kw: seen.append(since) or [])
    created = handler.queue.created_at()
    clock.now += 3600
    handler(_job(handler.queue, PING))
    assert seen == [iso(created - CLOCK_SKEW_SECONDS)]
    assert handler.queue.watermark() == clock.now
    first_run = clock.now
    clock.now += 60
    handler(_job(handler.queue, PING))
    assert seen[1] == iso(first_run - CLOCK_SKEW_SECONDS)


@responses.activate
def test_a_server_failure_is_retried_not_lost(handler: SyncHandler) -> None:
    # A 500 from the FHIR server: the local test server cannot be made to fail this way.
    responses.get(
        "http://fhir.test/fhir/Procedure/p1",
        status=500,
        json={"resourceType": "OperationOutcome", "issue": [{"severity": "fatal", "code": "exception"}]},
        content_type="application/fhir+json",
    )
    handler.queue.enqueue([resource("p1")])
    job = Worker(handler.queue, handler).run_once()
    assert job is not None and job.state == "retry"
    assert (job.last_error or "").startswith("FhirServerError (HTTP 500)")


def test_serve_reports_a_port_in_use_as_a_usage_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = run_cli(
            "serve", "--fhir-base", "http://127.0.0.1:9/fhir", "--port", str(port), "--db", str(tmp_path / "q.sqlite")
        )
    assert run.code == 2
    assert "Could not listen" in run.stderr.decode()


# --------------------------------------------------------------------------- serve's options


class _Started(Exception):
    """Raised instead of running uvicorn: serve got as far as starting."""


@pytest.fixture
def serve_in_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Run `serve` in this process up to the point where uvicorn would start; returns the app's
    Settings (or raises what serve raised)."""
    import uvicorn

    from adapter.service.cli import serve

    started: list[Settings] = []

    def fake_run(self: Any, *args: Any, **kwargs: Any) -> None:
        started.append(self.config.app.state.settings)
        raise _Started

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    monkeypatch.setenv("FACET_ADAPTER_LOG", "WARNING")  # serve leaves the logging levels alone then
    for name in ("FACET_ADAPTER_HOOK_TOKEN", "FACET_ADAPTER_TOKEN", "FACET_ADAPTER_FHIR_TOKEN"):
        monkeypatch.delenv(name, raising=False)

    def start(*args: str) -> Settings:
        argv = ["--port", "0", "--db", str(tmp_path / "q.sqlite"), *args]
        with pytest.raises(_Started):
            serve.main(argv, prog_name="serve", standalone_mode=False)
        return started[-1]

    return start


@pytest.mark.parametrize(
    "base",
    [
        "http://",
        "https://",
        "http:///fhir",
        "http://:8080/fhir",
        "ftp://fhir.example.org/r4",
        "fhir.example.org/r4",
        "http://fhir.example.org:http/r4",
        "http://fhir.example.org:99999/r4",
        "http://user:secret@fhir.example.org/r4",
        "http://fhir.example.org/r4?_format=json",
        "http://fhir.example.org/r4#top",
        "http://fhir.example.org/r 4",
    ],
)
def test_serve_refuses_a_fhir_base_that_is_not_a_server_url(serve_in_process: Any, base: str) -> None:
    with pytest.raises(UsageError) as caught:
        serve_in_process("--fhir-base", base)
    assert "--fhir-base" in caught.value.message and "secret" not in caught.value.message


def test_serve_refuses_a_bad_fhir_base_with_exit_2_before_starting(tmp_path: Path) -> None:
    run = run_cli("serve", "--fhir-base", "http://", "--port", "0", "--db", str(tmp_path / "q.sqlite"), timeout=30)
    assert run.code == 2
    assert "--fhir-base has no host" in run.error_outcome()["issue"][0]["details"]["text"]
    assert not (tmp_path / "q.sqlite").exists()


@pytest.mark.parametrize(
    ("base", "kept"),
    [
        ("http://127.0.0.1:8080/fhir/", "http://127.0.0.1:8080/fhir"),
        ("https://fhir.example.org/r4", "https://fhir.example.org/r4"),
        ("http://[::1]:8080/baseR4", "http://[::1]:8080/baseR4"),
        ("http://fhir.example.org", "http://fhir.example.org"),
    ],
)
def test_serve_accepts_server_urls(serve_in_process: Any, base: str, kept: str) -> None:
    assert serve_in_process("--fhir-base", base).fhir_base == kept


def test_serve_and_subscribe_read_the_same_hook_token_variable(
    serve_in_process: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from adapter.server.commands import subscribe

    [token_option] = [p for p in subscribe.params if p.name == "hook_token"]
    assert token_option.envvar == "FACET_ADAPTER_HOOK_TOKEN"

    monkeypatch.setenv("FACET_ADAPTER_HOOK_TOKEN", "hook-secret-1")
    assert serve_in_process("--fhir-base", "http://127.0.0.1:9/fhir").token == "hook-secret-1"
    assert "without --token" not in capsys.readouterr().err

    # The variable that was never released is not read: one secret, one name.
    monkeypatch.delenv("FACET_ADAPTER_HOOK_TOKEN")
    monkeypatch.setenv("FACET_ADAPTER_TOKEN", "old-name")
    assert serve_in_process("--fhir-base", "http://127.0.0.1:9/fhir").token is None
    warning = capsys.readouterr().err
    assert "warning: listening without --token (FACET_ADAPTER_HOOK_TOKEN is not set)" in warning
