"""What the queue holds: notices (a notification's ask), jobs, their states, retry policy and which
job runs next."""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["resource", "requery"]
State = Literal["pending", "working", "retry", "done", "dead"]
STATES: tuple[State, ...] = ("pending", "working", "retry", "done", "dead")
ACTIVE_STATES: tuple[State, ...] = ("pending", "working", "retry")

_MAX_ERROR_CHARS = 500


# The next job a worker may take: due (pending or retry), or working under a lease that ran out;
# the first by next_attempt_at (NULL for a working job: first), then id; of a lane with nothing
# working under a live lease and no earlier job pending (schema 1 rows have no lane: not held).
# Each state is searched on its own in the (state, next_attempt_at) index's order, up to the first
# job that may run: one query over the three sorted every due job, milliseconds under a backlog.
CLAIMABLE = (
    "SELECT id FROM ("
    "SELECT * FROM (SELECT id, next_attempt_at FROM jobs AS j "
    "WHERE state = 'working' AND lease_until <= :now "
    "AND NOT EXISTS (SELECT 1 FROM jobs AS o WHERE o.lane = j.lane AND o.id != j.id "
    "AND o.state = 'working' AND o.lease_until > :now) "
    "AND NOT EXISTS (SELECT 1 FROM jobs AS o WHERE o.lane = j.lane AND o.id < j.id AND o.state = 'pending') "
    "ORDER BY next_attempt_at, id LIMIT 1) UNION ALL "
    "SELECT * FROM (SELECT id, next_attempt_at FROM jobs AS j "
    "WHERE state = 'pending' AND next_attempt_at <= :now "
    "AND NOT EXISTS (SELECT 1 FROM jobs AS o WHERE o.lane = j.lane AND o.id != j.id "
    "AND o.state = 'working' AND o.lease_until > :now) "
    "AND NOT EXISTS (SELECT 1 FROM jobs AS o WHERE o.lane = j.lane AND o.id < j.id AND o.state = 'pending') "
    "ORDER BY next_attempt_at, id LIMIT 1) UNION ALL "
    "SELECT * FROM (SELECT id, next_attempt_at FROM jobs AS j "
    "WHERE state = 'retry' AND next_attempt_at <= :now "
    "AND NOT EXISTS (SELECT 1 FROM jobs AS o WHERE o.lane = j.lane AND o.id != j.id "
    "AND o.state = 'working' AND o.lease_until > :now) "
    "AND NOT EXISTS (SELECT 1 FROM jobs AS o WHERE o.lane = j.lane AND o.id < j.id AND o.state = 'pending') "
    "ORDER BY next_attempt_at, id LIMIT 1) "
    ") ORDER BY next_attempt_at, id LIMIT 1"
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 10
    base_seconds: float = 5.0
    max_seconds: float = 900.0

    def delay(self, attempts: int, rand: Callable[[], float] = random.random) -> float:
        """Exponential backoff with "equal jitter": at least half the step, so a retry never comes
        at once, and spread over the other half so jobs that failed together do not retry together."""
        step = float(min(self.max_seconds, self.base_seconds * 2 ** max(0, attempts - 1)))
        return step / 2 + rand() * step / 2


@dataclass(frozen=True, slots=True)
class Notice:
    """What one notification asks for, before it is a job."""

    kind: Kind
    source: str  # rest-hook | backport | ping
    resource_type: str | None = None
    resource_id: str | None = None
    version: str | None = None
    dedupe_key: str | None = None
    lane: str | None = None  # default: the resource's reference (requery: its own lane)
    detail: str | None = None  # JSON: what a recovery or sweep re-query covers

    @property
    def job_lane(self) -> str:
        if self.lane:
            return self.lane
        if self.resource_type and self.resource_id:
            return f"{self.resource_type}/{self.resource_id}"
        return self.source


@dataclass(frozen=True, slots=True)
class Enqueued:
    job_id: int
    created: bool  # False: the same notification was already queued (or a re-query was waiting)
    state: State


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    kind: Kind
    source: str
    resource_type: str | None
    resource_id: str | None
    version: str | None
    state: State
    attempts: int
    deliveries: int
    created_at: float
    updated_at: float
    next_attempt_at: float | None
    lease_until: float | None
    last_error: str | None
    result: str | None
    lane: str | None = None
    detail: str | None = None

    @property
    def reference(self) -> str | None:
        if self.resource_type and self.resource_id:
            return f"{self.resource_type}/{self.resource_id}"
        return None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        return cls(
            id=row["id"],
            kind=row["kind"],
            source=row["source"],
            resource_type=row["resource_type"],
            resource_id=row["resource_id"],
            version=row["version"],
            state=row["state"],
            attempts=row["attempts"],
            deliveries=row["deliveries"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            next_attempt_at=row["next_attempt_at"],
            lease_until=row["lease_until"],
            last_error=row["last_error"],
            result=row["result"],
            lane=row["lane"],
            detail=row["detail"],
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "source": self.source,
            "resource": self.reference,
            "version": self.version,
            "state": self.state,
            "attempts": self.attempts,
            "deliveries": self.deliveries,
            "created": iso(self.created_at),
            "updated": iso(self.updated_at),
            "next_attempt": iso(self.next_attempt_at),
            "last_error": self.last_error,
            "result": self.result,
            "lane": self.lane,
        }


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def clip(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"
