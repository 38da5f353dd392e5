"""The background workers: a pool of threads (`serve --workers N`) that claim due jobs and run
the handler on them.

The queue's lanes keep one patient's jobs on one worker at a time and in order (two
notifications for one session, its L4-L5 and L5-S1 Procedures, would otherwise race to write
the session's Claim); different patients are synced in parallel. The handler decides what a job
means (the default one calls `adapter.server.sync`); the worker only records the outcome:

- handler returns → done;
- `InputError` (data that can never be claimed) → dead at once, with the reason;
- a permanent refusal by the FHIR server (`permanent_upstream`: a 4xx other than 408, 409, 412
  and 429, such as 400 or 422 for the Claim, 404 for a referenced resource; or an answer over
  the client's page or size cap) → dead at once, with the reason: the same request fails the
  same way every time, and each attempt is a full gather against the server;
- any other `UpstreamError` (server down, 5xx, 401/403 during a token rotation, a 409/412 race,
  a deadline) or any other failure → retry with backoff, dead after `max_attempts`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..errors import (
    AdapterError,
    FhirPageLimitError,
    FhirRequestRejected,
    FhirResponseTooLarge,
    InputError,
    UpstreamError,
)
from .queue import Job, JobQueue, QueueError

log = logging.getLogger(__name__)

Handler = Callable[[Job], str | None]
"""Does a job's work; returns a short note for `queue list` (ids only, never patient data)."""

_PRUNE_EVERY_SECONDS = 3600.0
_MAX_ISSUES = 5
# 4xx answers that say "not now" rather than "never": a request timeout, someone else's write
# winning a race (409 Conflict, 412 Precondition Failed), rate limiting.
RETRYABLE_4XX = frozenset({408, 409, 412, 429})


def permanent_upstream(exc: BaseException) -> bool:
    """Whether a FHIR server failure will repeat on every attempt, so retrying only costs time.
    401/403 (`FhirAuthError`) are not among them: a token rotation fixes those."""
    if isinstance(exc, FhirPageLimitError | FhirResponseTooLarge):
        return True
    return isinstance(exc, FhirRequestRejected) and exc.status is not None and exc.status not in RETRYABLE_4XX


def describe_error(exc: BaseException) -> str:
    """The text kept in the queue for a failed attempt. Adapter errors carry messages written
    for users (resource ids and structure, no values); any other exception is named by type
    only, since its message may quote data."""
    if isinstance(exc, UpstreamError):
        status = f" (HTTP {exc.status})" if exc.status else ""
        # The server's issues by code and location only (their texts can quote patient data).
        issues = "; ".join(
            f"{d.code[:40]} at {d.expression[:100]}" if d.expression else d.code[:40] for d in exc.details[:_MAX_ISSUES]
        )
        more = f" (+{len(exc.details) - _MAX_ISSUES} more)" if len(exc.details) > _MAX_ISSUES else ""
        return f"{type(exc).__name__}{status}: {exc.message}" + (f" Server issues: {issues}{more}." if issues else "")
    if isinstance(exc, AdapterError):
        extra = f" ({len(exc.details)} problem(s))" if exc.details else ""
        return f"{type(exc).__name__}: {exc.message}{extra}"
    return f"internal error ({type(exc).__name__})"


class Worker:
    def __init__(
        self,
        queue: JobQueue,
        handler: Handler,
        *,
        lease_seconds: float = 900.0,
        poll_seconds: float = 1.0,
        keep_done_seconds: float = 30 * 86400.0,
        threads: int = 1,
    ) -> None:
        if threads < 1:
            raise ValueError("a worker pool needs at least one thread")
        self.queue = queue
        self.handler = handler
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.keep_done_seconds = keep_done_seconds
        self.threads = threads
        self._wake = threading.Condition()
        self._wakes = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_prune = 0.0
        self._lock = threading.Lock()
        self._loops: dict[int, float] = {}  # thread number -> time.monotonic() when its loop last came round
        self.processed = 0

    @property
    def alive(self) -> bool:
        """Every thread is running (one may still be stuck: see `stalled`)."""
        return bool(self._threads) and all(thread.is_alive() for thread in self._threads)

    @property
    def last_loop_at(self) -> float | None:
        """When the slowest thread's loop last came round."""
        return min(self._loops.values()) if self._loops else None

    @property
    def stall_seconds(self) -> float:
        """How long the loop may go without coming round before it counts as stuck: one job's
        time budget (its lease) plus three poll intervals (the idle wait, a queue query or two)."""
        return 3 * self.poll_seconds + self.lease_seconds

    def since_last_loop(self, now: float | None = None) -> float | None:
        if self.last_loop_at is None:
            return None
        return max(0.0, (time.monotonic() if now is None else now) - self.last_loop_at)

    def stalled(self, now: float | None = None) -> bool:
        """The loop has not come round for longer than `stall_seconds`: a handler hanging past its
        budget, or a queue call that never returns. `/healthz` reports the worker dead then, so a
        supervisor restarts the service (the job is reclaimed at the next start)."""
        waited = self.since_last_loop(now)
        return waited is not None and waited > self.stall_seconds

    def start(self) -> None:
        reclaimed, due = self.queue.recover()
        if reclaimed or due:
            log.info(
                "queue recovered: %d job(s) left working by a stopped process, %d retry job(s) due", reclaimed, due
            )
        self._stop.clear()
        now = time.monotonic()
        self._loops = dict.fromkeys(range(self.threads), now)
        self._threads = [
            threading.Thread(target=self._loop, args=(number,), name=f"facet-adapter-worker-{number}", daemon=True)
            for number in range(self.threads)
        ]
        for thread in self._threads:
            thread.start()

    def wake(self, jobs: int = 1) -> None:
        """New work: wake up to `jobs` idle threads (the others keep sleeping)."""
        with self._wake:
            self._wakes = min(self.threads, self._wakes + max(1, jobs))
            self._wake.notify(max(1, jobs))

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loops to stop after the jobs in hand; a job still running after `timeout` stays
        `working` and is reclaimed at the next start."""
        self._stop.set()
        with self._wake:
            self._wakes = self.threads
            self._wake.notify_all()
        stop_at = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, stop_at - time.monotonic()))

    def _wait(self, seconds: float) -> None:
        with self._wake:
            if self._wakes == 0 and not self._stop.is_set():
                self._wake.wait(seconds)
            self._wakes = max(0, self._wakes - 1)

    def _loop(self, number: int) -> None:
        while not self._stop.is_set():
            self._loops[number] = time.monotonic()
            try:
                if number == 0:
                    self._maybe_prune()
                job = self.run_once()
            except QueueError as exc:
                log.error("queue unavailable: %s", exc.message)
                job = None
            except Exception as exc:  # the loop must outlive any surprise
                log.error("worker error (%s)", type(exc).__name__)
                job = None
            if job is None:
                self._wait(self._sleep_seconds())
            elif self.threads > 1:
                self.wake()  # the job's lane is free again: its next job may be waiting for it

    def _sleep_seconds(self) -> float:
        try:
            due = self.queue.next_due_at()
        except QueueError:
            return self.poll_seconds
        left = due - self.queue.clock() if due is not None else 0.0
        if left <= 0:
            # Nothing due, or a due job this thread could not claim because its lane is busy: the
            # thread that finishes the lane's job wakes another one.
            return self.poll_seconds
        # Poll anyway, so `queue retry` from another process is noticed within poll_seconds.
        return max(0.01, min(self.poll_seconds, left))

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune >= _PRUNE_EVERY_SECONDS:
            self._last_prune = now
            pruned = self.queue.prune(self.keep_done_seconds)
            if pruned:
                log.info("pruned %d done job(s)", pruned)

    def run_once(self) -> Job | None:
        """Claim and process one due job; None when nothing is due."""
        job = self.queue.claim(self.lease_seconds)
        if job is None:
            return None
        target = job.reference or job.kind
        started = time.monotonic()
        try:
            note = self.handler(job)
        except InputError as exc:
            updated = self.queue.fail(job, describe_error(exc), retryable=False)
            log.warning("job %d %s: dead (%s)", job.id, target, type(exc).__name__)
            return updated or job
        except UpstreamError as exc:
            permanent = permanent_upstream(exc)
            updated = self.queue.fail(job, describe_error(exc), retryable=not permanent)
            state = updated.state if updated else "lost"
            status = f" {exc.status}" if exc.status else ""
            log.warning(
                "job %d %s: attempt %d failed (%s%s%s); %s",
                job.id,
                target,
                job.attempts,
                type(exc).__name__,
                status,
                ", permanent" if permanent else "",
                state,
            )
            return updated or job
        except Exception as exc:
            updated = self.queue.fail(job, describe_error(exc), retryable=True)
            state = updated.state if updated else "lost"
            log.warning(
                "job %d %s: attempt %d failed (%s); %s", job.id, target, job.attempts, type(exc).__name__, state
            )
            return updated or job
        self.queue.complete(job, note)
        with self._lock:
            self.processed += 1
        log.info(
            "job %d %s: done in %.2f s%s", job.id, target, time.monotonic() - started, f" ({note})" if note else ""
        )
        return job
