"""The durable job queue behind `/notify`: one SQLite file (WAL, `synchronous=FULL`).

Guarantees, and what gives them:

- **No loss.** A notification is answered 2xx only after its job row is committed; with WAL and
  `synchronous=FULL` a commit is on disk when `enqueue` returns. If the process dies before the
  commit, the sender sees no 2xx and delivers again.
- **No duplicate jobs.** A notification carries a dedupe key (resource type/id/versionId, or the
  Backport subscription and event number); the key is unique in the table, so a redelivery bumps
  `deliveries` on the existing job instead of adding one. Pings ("something changed, re-query")
  coalesce into the one re-query job that has not started yet.
- **At-least-once processing.** A job is `working` from the moment a worker claims it until the
  worker records the outcome; a job a killed process left `working` is reclaimed at the next start
  (`recover`, safe because `serve` holds an exclusive lock on the queue) or when its lease expires.
  Processing is idempotent (the Claim identifier is derived from the session, and `sync` writes it
  conditionally), so running a job twice still leaves one Claim.

The queue stores resource types, ids and version ids only, never a notification body: the worker
reads the current resource from the FHIR server, so no patient data sits in this file. The
`/review` worklist's tables (schema 3, adapter.review.store) keep what the service coded as codes,
rule ids and resource ids, and what coders did: their user names and the reasons they typed for
an override, which are free text (docs/server.md: protect the file as you protect the FHIR server).

- **One patient at a time, in order.** Every job has a lane: the patient's reference when the
  notification names it (a rest-hook payload, a full-resource Backport event), otherwise the
  resource's own reference; re-queries, sweeps and a Subscription's recoveries have lanes of their
  own. Workers claim a job only when no other job of its lane is working and no earlier job of its
  lane is still pending, so a pool of workers never syncs one patient twice at once, and a
  patient's notifications are synced in the order they came. A job that failed and waits to retry
  does not hold its lane: the patient's later jobs go on (each sync reads the server's current
  state, so the retry loses nothing by running later).

States: pending → working → done | retry (next_attempt_at, exponential backoff with jitter) →
… → dead (after `max_attempts`, or at once for input that can never be claimed). `queue retry`
moves dead jobs back to pending.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EXIT_INTERNAL, AdapterError, UsageError
from .jobs import (
    ACTIVE_STATES,
    CLAIMABLE,
    STATES,
    Enqueued,
    Job,
    Kind,
    Notice,
    RetryPolicy,
    State,
    clip,
    iso,
)
from .lock import QueueLock

# Re-exported: what the queue holds lives in .jobs, the lock in .lock.
__all__ = [
    "ACTIVE_STATES",
    "STATES",
    "Enqueued",
    "Job",
    "Kind",
    "Notice",
    "QueueLock",
    "RetryPolicy",
    "State",
    "clip",
    "iso",
]


SCHEMA_VERSION = 3
# How long a notification waits for a queue another process holds locked before it is answered
# 503 (the sender delivers again); the workers wait longer, since nobody waits on them.
ACCEPT_BUSY_SECONDS = 1.0
WORKER_BUSY_SECONDS = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('resource', 'requery')),
    source TEXT NOT NULL,
    resource_type TEXT,
    resource_id TEXT,
    version TEXT,
    dedupe_key TEXT UNIQUE,
    state TEXT NOT NULL CHECK (state IN ('pending', 'working', 'retry', 'done', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    deliveries INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    next_attempt_at REAL,
    lease_until REAL,
    last_error TEXT,
    result TEXT
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, next_attempt_at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Schema 2: a job's lane (see above) and its detail (what a recovery or sweep covers, JSON), and
# the Subscriptions the service knows (adapter.service.subscriptions).
_SCHEMA_2 = (
    "ALTER TABLE jobs ADD COLUMN lane TEXT",
    "ALTER TABLE jobs ADD COLUMN detail TEXT",
)
_SCHEMA_2_TABLES = """
CREATE INDEX IF NOT EXISTS jobs_lane ON jobs (lane, state);
CREATE TABLE IF NOT EXISTS subscriptions (
    id TEXT PRIMARY KEY,
    origin TEXT NOT NULL,
    channel TEXT,
    last_event INTEGER,
    last_event_at REAL,
    last_seen_at REAL,
    heartbeat_seconds REAL,
    status TEXT,
    status_at REAL,
    created_at REAL NOT NULL
);
"""
# Schema 3: the /review worklist (adapter.review.store): one row per claim the service coded (by
# the Claim's identifier), its rule ids for the filters, and its status history.
_SCHEMA_3_TABLES = """
CREATE TABLE IF NOT EXISTS review_claims (
    identifier TEXT PRIMARY KEY,
    focus TEXT NOT NULL,
    patient TEXT,
    service_date TEXT,
    use TEXT,
    pack TEXT,
    pack_version TEXT,
    decision TEXT NOT NULL,
    status TEXT NOT NULL,
    claim_id TEXT,
    claim_status TEXT,
    task_id TEXT,
    lines TEXT NOT NULL DEFAULT '',
    findings TEXT NOT NULL DEFAULT '[]',
    fingerprint TEXT,
    override_fingerprint TEXT,
    coded_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS review_claims_list ON review_claims (status, service_date);
CREATE TABLE IF NOT EXISTS review_rules (
    identifier TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    severity TEXT NOT NULL,
    PRIMARY KEY (identifier, rule_id, severity)
);
CREATE INDEX IF NOT EXISTS review_rules_rule ON review_rules (rule_id);
CREATE TABLE IF NOT EXISTS review_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    identifier TEXT NOT NULL,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    actor TEXT,
    reason TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS review_events_claim ON review_events (identifier, id);
"""


class QueueError(AdapterError):
    """The queue database cannot be opened or written (disk full, permissions, corrupt file)."""

    exit_code = EXIT_INTERNAL
    issue_code = "transient"
    http_status = 503


@dataclass(slots=True)
class _Request:
    """One `enqueue` call waiting for the group commit."""

    notices: list[Notice]
    observe: Callable[[sqlite3.Connection], Sequence[Notice]] | None
    results: list[Enqueued] = field(default_factory=list)
    error: BaseException | None = None
    finished: bool = False


class JobQueue:
    """The queue in one SQLite file. Every method opens its own connection, so any thread (the
    request handlers' thread pool, the worker, the CLI) may call it."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        create: bool = True,
    ) -> None:
        self.path = Path(path)
        self.policy = policy or RetryPolicy()
        self.clock = clock
        self._commit_lock = threading.Lock()
        self._writer = threading.RLock()  # this process's writers, one at a time (see `transaction`)
        self._waiting_lock = threading.Lock()
        self._waiting: list[_Request] = []
        self._local = threading.local()
        if not create and not self.path.is_file():
            raise UsageError(f"There is no queue database at {self.path}.")
        try:
            if create and self.path.parent != Path():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
            try:
                # WAL persists in the file; set once here rather than on every connection.
                conn.execute("PRAGMA journal_mode=WAL")
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise UsageError(
                        f"The queue at {self.path} was written by a newer facet-adapter (schema {version})."
                    )
                conn.executescript(_SCHEMA)
                columns = {row["name"] for row in conn.execute("PRAGMA table_info(jobs)")}
                for statement in _SCHEMA_2:
                    if statement.split()[-2] not in columns:
                        conn.execute(statement)
                conn.executescript(_SCHEMA_2_TABLES)
                conn.executescript(_SCHEMA_3_TABLES)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('created_at', ?)", (repr(self.clock()),))
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise QueueError(f"Cannot open the queue database {self.path}: {exc}.") from None

    # ------------------------------------------------------------------ plumbing

    def _connect(self, busy_seconds: float = WORKER_BUSY_SECONDS, *, durable: bool = True) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=busy_seconds, isolation_level=None)
        conn.row_factory = sqlite3.Row
        # FULL: the WAL is synced at every commit, so a committed job survives a power cut too.
        # NORMAL (the workers' claims and outcomes): no sync of its own; a power cut may undo the
        # last of them, which only runs a job again (processing is idempotent). A process crash
        # loses nothing either way, and the next FULL commit syncs what came before it.
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        return conn

    def _cached(self, busy_seconds: float, durable: bool) -> sqlite3.Connection:
        """This thread's connection, kept open: opening one costs little, but closing the last
        connection to a WAL database checkpoints it with a sync, which cost every call ~20 ms."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        # Settings are sent only when they change: each statement hands the interpreter lock over
        # and back, which under busy workers costs a notification about a millisecond a time.
        wanted = (int(busy_seconds * 1000), durable)
        try:
            if conn is None:
                conn = self._connect(busy_seconds, durable=durable)
                self._local.conn, self._local.settings = conn, wanted
            elif self._local.settings != wanted:
                conn.execute(f"PRAGMA busy_timeout = {wanted[0]}")
                conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
                self._local.settings = wanted
        except sqlite3.DatabaseError as exc:
            self._forget()
            raise QueueError(f"Cannot open the queue database {self.path}: {exc}.") from None
        return conn

    def close_connection(self) -> None:
        """Close this thread's connection (it is opened again when needed), e.g. before a fork."""
        self._forget()

    def _forget(self) -> None:
        """Drop this thread's connection after a failure (it may hold a half-done transaction)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with suppress(sqlite3.Error):
                conn.close()

    @contextmanager
    def transaction(
        self, busy_seconds: float = WORKER_BUSY_SECONDS, *, durable: bool = True
    ) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE takes the write lock up front: read-then-write decisions (dedupe,
        claiming a job) cannot interleave with another writer. `busy_seconds`: how long to wait
        for a lock another connection holds before failing with QueueError. This process's threads
        take turns at a lock of their own first: SQLite's wait polls with growing sleeps (1, 2, 5,
        10 … 100 ms), a thread lock lets the next writer go as soon as the commit is done."""
        started = time.monotonic()
        if not self._writer.acquire(timeout=busy_seconds):
            raise QueueError(f"The queue database {self.path} failed: database is locked.")
        try:
            waited = time.monotonic() - started
            conn = self._cached(busy_seconds if waited < 0.05 else max(0.001, busy_seconds - waited), durable)
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                self._forget()
                raise QueueError(f"The queue database {self.path} failed: {exc}.") from None
            except BaseException:
                if conn.in_transaction:
                    self._forget()
                raise
        finally:
            self._writer.release()

    def read(
        self, sql: str, params: Sequence[Any] = (), *, busy_seconds: float = WORKER_BUSY_SECONDS
    ) -> list[sqlite3.Row]:
        conn = self._cached(busy_seconds, True)
        try:
            return list(conn.execute(sql, params).fetchall())
        except sqlite3.DatabaseError as exc:
            self._forget()
            raise QueueError(f"The queue database {self.path} failed: {exc}.") from None

    # ------------------------------------------------------------------ producers

    def enqueue(
        self,
        notices: Sequence[Notice],
        *,
        observe: Callable[[sqlite3.Connection], Sequence[Notice]] | None = None,
        busy_seconds: float = ACCEPT_BUSY_SECONDS,
    ) -> list[Enqueued]:
        """Add jobs for the notices, all in one transaction (a Backport Bundle with several events
        is queued whole or not at all). Returns when the rows are on disk. `observe` runs first in
        the same transaction (it records a Subscription's event numbers) and may add notices (a
        recovery): a notification that is not queued leaves no trace either, so its redelivery
        finds the same gap."""
        request = _Request(list(notices), observe)
        with self._waiting_lock:
            self._waiting.append(request)
        # Group commit: one caller at a time commits every request waiting by then, in one
        # transaction with one sync, so concurrent notifications share the cost of the sync.
        with self._commit_lock:
            if not request.finished:
                with self._waiting_lock:
                    batch, self._waiting = self._waiting, []
                self._commit(batch, busy_seconds)
        if request.error is not None:
            raise request.error
        return request.results

    def _commit(self, batch: list[_Request], busy_seconds: float) -> None:
        """Each request under a savepoint, so one refused (an unknown Subscription) leaves the
        others; a failed transaction fails them all."""
        now = self.clock()
        try:
            with self.transaction(busy_seconds) as conn:
                for request in batch:
                    # One notice without an observer writes one row as its last step: nothing to undo.
                    undo = request.observe is not None or len(request.notices) > 1
                    if undo:
                        conn.execute("SAVEPOINT request")
                    try:
                        extra = list(request.observe(conn)) if request.observe is not None else []
                        request.results = [self.enqueue_in(conn, n, now) for n in [*request.notices, *extra]]
                    except sqlite3.DatabaseError:
                        raise
                    except Exception as exc:
                        if undo:
                            conn.execute("ROLLBACK TO request")
                        request.error = exc
                    if undo:
                        conn.execute("RELEASE request")
        except Exception as exc:
            for request in batch:
                request.error = exc
        finally:
            for request in batch:
                request.finished = True

    def enqueue_in(self, conn: sqlite3.Connection, notice: Notice, now: float | None = None) -> Enqueued:
        """One notice, inside a transaction the caller holds."""
        return self._enqueue_one(conn, notice, self.clock() if now is None else now)

    def _enqueue_one(self, conn: sqlite3.Connection, notice: Notice, now: float) -> Enqueued:
        if notice.kind == "requery" and notice.dedupe_key is None:
            # A re-query that has not started yet will see whatever this ping announces; one that
            # is running may already have searched, so then a new job is needed. Re-queries of
            # one lane coalesce (pings with pings, sweeps with sweeps).
            waiting = conn.execute(
                "SELECT id, state FROM jobs WHERE kind = 'requery' AND state IN ('pending', 'retry') "
                "AND COALESCE(lane, 'ping') = ? AND detail IS ? ORDER BY id LIMIT 1",
                (notice.job_lane if notice.source != "backport" else "ping", notice.detail),
            ).fetchone()
            if waiting is not None:
                # Only the delivery is counted: the job keeps its state, attempts and backoff. A
                # ping says "something changed", not "the server is back", and the waiting
                # re-query searches from the watermark, so it picks this change up whenever it
                # runs. Pulling a `retry` job forward instead would turn a burst of pings during
                # an outage into back-to-back attempts (dead after `max_attempts` pings, with
                # the server hammered); resetting its attempts as well would keep it from ever
                # being dead-lettered. Once it is dead, the next ping queues a fresh job.
                conn.execute(
                    "UPDATE jobs SET deliveries = deliveries + 1, updated_at = ? WHERE id = ?", (now, waiting["id"])
                )
                return Enqueued(waiting["id"], False, waiting["state"])
        # A notice with a dedupe key already queued only counts the delivery (one statement: a
        # new row has deliveries 1, an existing one at least 2 after it).
        row = conn.execute(
            "INSERT INTO jobs (kind, source, resource_type, resource_id, version, dedupe_key, state, "
            "created_at, updated_at, next_attempt_at, lane, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?) "
            "ON CONFLICT (dedupe_key) DO UPDATE SET deliveries = deliveries + 1, updated_at = excluded.updated_at "
            "RETURNING id, state, deliveries",
            (
                notice.kind,
                notice.source,
                notice.resource_type,
                notice.resource_id,
                notice.version,
                notice.dedupe_key,
                now,
                now,
                now,
                # Pings and empty Backport events share one re-query lane.
                "ping" if notice.kind == "requery" and notice.source == "backport" else notice.job_lane,
                notice.detail,
            ),
        ).fetchone()
        return Enqueued(int(row["id"]), row["deliveries"] == 1, row["state"])

    # ------------------------------------------------------------------ the worker's side

    def claim(self, lease_seconds: float) -> Job | None:
        """Take the next due job (or one whose lease ran out) and mark it working."""
        now = self.clock()
        with self.transaction(durable=False) as conn:
            row = conn.execute(CLAIMABLE, {"now": now}).fetchone()
            if row is None:
                return None
            claimed = conn.execute(
                "UPDATE jobs SET state = 'working', attempts = attempts + 1, lease_until = ?, updated_at = ?, "
                "next_attempt_at = NULL WHERE id = ? RETURNING *",
                (now + lease_seconds, now, row["id"]),
            ).fetchone()
            return Job.from_row(claimed)

    def complete(self, job: Job, result: str | None = None) -> bool:
        """Mark a claimed job done. False when the claim was lost (the lease ran out and the job
        was claimed again), in which case the other claim records the outcome."""
        now = self.clock()
        with self.transaction(durable=False) as conn:
            cursor = conn.execute(
                "UPDATE jobs SET state = 'done', lease_until = NULL, updated_at = ?, result = ?, last_error = NULL "
                "WHERE id = ? AND state = 'working' AND attempts = ?",
                (now, clip(result) if result else None, job.id, job.attempts),
            )
            return cursor.rowcount == 1

    def fail(self, job: Job, error: str, *, retryable: bool) -> Job | None:
        """Record a failed attempt: retry later with backoff, or dead-letter it."""
        now = self.clock()
        dead = not retryable or job.attempts >= self.policy.max_attempts
        next_at = None if dead else now + self.policy.delay(job.attempts)
        with self.transaction(durable=False) as conn:
            row = conn.execute(
                "UPDATE jobs SET state = ?, next_attempt_at = ?, lease_until = NULL, updated_at = ?, last_error = ? "
                "WHERE id = ? AND state = 'working' AND attempts = ? RETURNING *",
                ("dead" if dead else "retry", next_at, now, clip(error), job.id, job.attempts),
            ).fetchone()
            return Job.from_row(row) if row is not None else None

    def recover(self) -> tuple[int, int]:
        """At start-up, with the queue lock held: jobs a killed process left `working` are
        pending again (or dead when they already used every attempt, e.g. a job that keeps
        crashing the process), and jobs waiting to retry are due now, since a restart usually
        follows a fix. Returns (reclaimed, made due)."""
        now = self.clock()
        with self.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET state = 'dead', lease_until = NULL, updated_at = ?, "
                "last_error = COALESCE(last_error || ' / ', '') || 'the service stopped while working on it' "
                "WHERE state = 'working' AND attempts >= ?",
                (now, self.policy.max_attempts),
            )
            reclaimed = conn.execute(
                "UPDATE jobs SET state = 'pending', lease_until = NULL, next_attempt_at = ?, updated_at = ? "
                "WHERE state = 'working'",
                (now, now),
            ).rowcount
            due = conn.execute(
                "UPDATE jobs SET next_attempt_at = ?, updated_at = ? WHERE state = 'retry'", (now, now)
            ).rowcount
        return reclaimed, due

    def next_due_at(self) -> float | None:
        row = self.read(
            "SELECT MIN(t) AS t FROM (SELECT MIN(next_attempt_at) AS t FROM jobs WHERE state IN ('pending', 'retry') "
            "UNION ALL SELECT MIN(lease_until) FROM jobs WHERE state = 'working')"
        )
        value = row[0]["t"] if row else None
        return float(value) if value is not None else None

    # ------------------------------------------------------------------ operators

    def get(self, job_id: int) -> Job | None:
        rows = self.read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return Job.from_row(rows[0]) if rows else None

    def jobs(self, states: Iterable[State] | None = None, limit: int | None = None) -> list[Job]:
        wanted = list(states) if states is not None else list(STATES)
        marks = ", ".join("?" for _ in wanted)
        sql = f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id"  # noqa: S608 (placeholders only)
        params: list[Any] = list(wanted)
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [Job.from_row(row) for row in self.read(sql, params)]

    def counts(self) -> dict[State, int]:
        found: dict[State, int] = dict.fromkeys(STATES, 0)
        for row in self.read("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"):
            found[row["state"]] = int(row["n"])
        return found

    def retry(self, job_ids: Sequence[int] = (), *, all_dead: bool = False) -> list[int]:
        """Put dead (or retry-waiting) jobs back in the queue with a fresh set of attempts.
        Raises UsageError for an unknown id or a job in another state; changes nothing then."""
        now = self.clock()
        with self.transaction() as conn:
            if all_dead:
                ids = [row["id"] for row in conn.execute("SELECT id FROM jobs WHERE state = 'dead' ORDER BY id")]
            else:
                ids = []
                for job_id in job_ids:
                    row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
                    if row is None:
                        raise UsageError(f"There is no job {job_id} in the queue.")
                    if row["state"] not in ("dead", "retry"):
                        raise UsageError(f"Job {job_id} is {row['state']}; only dead or retry jobs can be retried.")
                    ids.append(job_id)
            for job_id in ids:
                conn.execute(
                    "UPDATE jobs SET state = 'pending', attempts = 0, next_attempt_at = ?, lease_until = NULL, "
                    "updated_at = ? WHERE id = ?",
                    (now, now, job_id),
                )
        return ids

    def prune(self, older_than_seconds: float) -> int:
        """Forget done jobs (and with them their dedupe keys) after a while, so the file stays small."""
        cutoff = self.clock() - older_than_seconds
        with self.transaction() as conn:
            return conn.execute("DELETE FROM jobs WHERE state = 'done' AND updated_at < ?", (cutoff,)).rowcount

    # ------------------------------------------------------------------ re-query watermark

    def _meta(self, key: str) -> str | None:
        rows = self.read("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0]["value"]) if rows else None

    def created_at(self) -> float:
        value = self._meta("created_at")
        return float(value) if value is not None else self.clock()

    def watermark(self, key: str = "watermark") -> float | None:
        """When the last successful re-query (`watermark`) or sweep (`sweep_watermark`) started:
        the next one searches from there."""
        value = self._meta(key)
        return float(value) if value is not None else None

    def set_watermark(self, timestamp: float, key: str = "watermark") -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, repr(timestamp)),
            )
