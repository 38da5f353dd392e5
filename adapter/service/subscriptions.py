"""The Subscriptions the service knows, what it has seen of each, and the timer that notices
silence.

- **Known Subscriptions.** `facet-adapter subscribe --db` records the Subscription it made,
  `serve --subscription ID` names more. Once any is known, a Backport notification for another
  Subscription id is refused (403) and counted; knowing none, the service takes every
  notification and tracks each Subscription id it sees.
- **Event numbers.** A Backport notification numbers its events (`notification-event.event-number`)
  and says how many there have been (`events-since-subscription-start`). The service stores the
  highest number per Subscription; a notification whose first number is past the next one, or a
  heartbeat or status whose count is past it, shows a gap. The gap becomes a recovery job in the
  same transaction that queues the notification, so a notification that is not queued (503) leaves
  no trace and its redelivery finds the same gap.
- **Silence.** A Backport Subscription sends a heartbeat every `heartbeatPeriod` seconds when
  nothing else happens. The timer (`Monitor`) queues a check of a Subscription not heard from for
  that long plus a margin; the check asks the server (`$status`, or a read) and recovers what the
  count says is missing. The same timer queues the rest-hook sweep (`--reconcile-every`), which
  finds Procedures whose notification never came.
- **Status.** A Subscription the server reports `error` or `off` (in a notification or when
  checked) is checked and re-activated; `/healthz` lists it.

What a job does with a check, a recovery or a sweep is `adapter.service.recovery`'s.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from .notifications import SubscriptionNote
from .queue import JobQueue, Notice, iso

log = logging.getLogger(__name__)

Origin = Literal["subscribe", "option", "seen"]
KNOWN_ORIGINS: tuple[Origin, ...] = ("subscribe", "option")
INACTIVE_STATUSES = frozenset({"error", "off"})
# A heartbeat may come late by network and server load: wait half a period more, at least 10 s.
HEARTBEAT_MARGIN_FRACTION = 0.5
MIN_HEARTBEAT_MARGIN_S = 10.0
_RECENT_PROBLEMS = 20


class UnknownSubscription(Exception):
    """A notification for a Subscription this service was not told about."""

    def __init__(self, subscription_id: str) -> None:
        super().__init__(subscription_id)
        self.subscription_id = subscription_id


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    origin: Origin
    channel: str | None  # rest-hook | backport, when known
    last_event: int | None
    last_event_at: float | None
    last_seen_at: float | None
    heartbeat_seconds: float | None
    status: str | None
    status_at: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Subscription:
        return cls(
            id=row["id"],
            origin=row["origin"],
            channel=row["channel"],
            last_event=row["last_event"],
            last_event_at=row["last_event_at"],
            last_seen_at=row["last_seen_at"],
            heartbeat_seconds=row["heartbeat_seconds"],
            status=row["status"],
            status_at=row["status_at"],
        )

    def silent_for(self, now: float) -> float | None:
        """Seconds past the heartbeat period plus margin without a word; None while in time."""
        if self.heartbeat_seconds is None or self.last_seen_at is None:
            return None
        margin = max(MIN_HEARTBEAT_MARGIN_S, self.heartbeat_seconds * HEARTBEAT_MARGIN_FRACTION)
        late = now - self.last_seen_at - self.heartbeat_seconds - margin
        return late if late > 0 else None

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "origin": self.origin,
            "channel": self.channel,
            "status": self.status,
            "status_checked": iso(self.status_at),
            "last_event": self.last_event,
            "last_seen": iso(self.last_seen_at),
            "heartbeat_seconds": self.heartbeat_seconds,
            "heartbeat_missed": self.silent_for(now) is not None,
        }


def check_notice(subscription_id: str) -> Notice:
    """A job that asks the server about one Subscription (status, event count) and acts on it."""
    return Notice(
        kind="requery",
        source="check",
        lane=f"Subscription/{subscription_id}",
        detail=json.dumps({"subscription": subscription_id}),
    )


def recovery_notice(subscription_id: str, after: int, until: int | None, since: float | None) -> Notice:
    """A job that brings the events after `after` up to `until` (None: whatever came since)."""
    return Notice(
        kind="requery",
        source="recovery",
        lane=f"Subscription/{subscription_id}",
        detail=json.dumps({"subscription": subscription_id, "after": after, "until": until, "since": since}),
        dedupe_key=f"recovery|{subscription_id}|{after}|{until}",
    )


SWEEP_NOTICE = Notice(kind="requery", source="sweep")


class Subscriptions:
    """The `subscriptions` table of the queue database, and the counters /healthz shows."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self._lock = threading.Lock()
        self.refused = 0  # deliveries for an unknown Subscription id, since the start
        self.problems: list[dict[str, Any]] = []  # recent: found in error/off, re-activated

    # -------------------------------------------------------------- records

    def register(self, ids: Iterable[str], origin: Origin, channel: str | None = None) -> None:
        """Know these Subscriptions (a `seen` one becomes known; a known one keeps its origin)."""
        now = self.queue.clock()
        with self.queue.transaction() as conn:
            for subscription_id in ids:
                conn.execute(
                    "INSERT INTO subscriptions (id, origin, channel, last_event, created_at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET origin = CASE WHEN origin = 'seen' THEN excluded.origin "
                    "ELSE origin END, channel = COALESCE(excluded.channel, channel)",
                    # A Subscription made by `subscribe` starts at event 0: its first event is 1.
                    (subscription_id, origin, channel, 0 if origin == "subscribe" else None, now),
                )

    def all(self) -> list[Subscription]:
        return [Subscription.from_row(row) for row in self.queue.read("SELECT * FROM subscriptions ORDER BY id")]

    def get(self, subscription_id: str) -> Subscription | None:
        rows = self.queue.read("SELECT * FROM subscriptions WHERE id = ?", (subscription_id,))
        return Subscription.from_row(rows[0]) if rows else None

    def update(self, subscription_id: str, **values: Any) -> None:
        """Set columns of a Subscription's row (adding the row as `seen` when there is none)."""
        allowed = {"channel", "last_event", "last_event_at", "last_seen_at", "heartbeat_seconds", "status", "status_at"}
        if not values or not set(values) <= allowed:
            raise ValueError(f"unknown subscription columns: {sorted(set(values) - allowed)}")
        now = self.queue.clock()
        with self.queue.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO subscriptions (id, origin, created_at) VALUES (?, 'seen', ?)",
                (subscription_id, now),
            )
            sets = ", ".join(f"{name} = ?" for name in values)
            if "last_event" in values:
                # Never backwards: a recovery that ends before a later notification keeps the later number.
                sets = sets.replace("last_event = ?", "last_event = MAX(COALESCE(last_event, ?), ?)")
            params: list[Any] = []
            for name, value in values.items():
                params += [value, value] if name == "last_event" else [value]
            conn.execute(f"UPDATE subscriptions SET {sets} WHERE id = ?", (*params, subscription_id))  # noqa: S608

    def problem(self, subscription_id: str, text: str) -> None:
        with self._lock:
            self.problems.append({"subscription": subscription_id, "at": iso(self.queue.clock()), "what": text})
            del self.problems[:-_RECENT_PROBLEMS]

    def count_refused(self) -> int:
        with self._lock:
            self.refused += 1
            return self.refused

    # -------------------------------------------------------------- notifications

    def observe(self, conn: sqlite3.Connection, note: SubscriptionNote) -> list[Notice]:
        """Inside the transaction that queues a Backport notification: refuse an unknown
        Subscription (UnknownSubscription), record what the notification says and return the
        recovery or check jobs it calls for."""
        now = self.queue.clock()
        known = {
            row["id"] for row in conn.execute("SELECT id FROM subscriptions WHERE origin IN ('subscribe', 'option')")
        }
        if known and note.id not in known:
            raise UnknownSubscription(note.id)
        row = conn.execute("SELECT * FROM subscriptions WHERE id = ?", (note.id,)).fetchone()
        extra: list[Notice] = []
        if row is None:
            # Its heartbeat period and status come from the server: the monitor queues a check.
            conn.execute(
                "INSERT INTO subscriptions (id, origin, channel, created_at) VALUES (?, 'seen', 'backport', ?)",
                (note.id, now),
            )
            last = None
            last_event_at = None
        else:
            last = row["last_event"]
            last_event_at = row["last_event_at"]
        highest = max([*note.numbers, *([note.events_since] if note.events_since is not None else [])], default=None)
        if last is not None and note.type != "query-event":
            first_new = min(note.numbers) if note.numbers else None
            if first_new is not None and first_new > last + 1:
                gap_end: int | None = first_new - 1
            elif not note.numbers and note.events_since is not None and note.events_since > last:
                gap_end = note.events_since
            else:
                gap_end = None
            if gap_end is not None:
                log.warning(
                    "Subscription/%s: events %d to %d did not arrive; recovering them", note.id, last + 1, gap_end
                )
                extra.append(recovery_notice(note.id, last, gap_end, last_event_at))
        if note.status in INACTIVE_STATUSES:
            log.warning("Subscription/%s reports status %s; checking it", note.id, note.status)
            extra.append(check_notice(note.id))
        conn.execute(
            "UPDATE subscriptions SET channel = 'backport', last_seen_at = ?, status = COALESCE(?, status), "
            "last_event = CASE WHEN ? IS NULL THEN last_event ELSE MAX(COALESCE(last_event, ?), ?) END, "
            "last_event_at = CASE WHEN ? THEN ? ELSE last_event_at END WHERE id = ?",
            (now, note.status, highest, highest, highest, bool(note.numbers), now, note.id),
        )
        return extra


class Monitor:
    """A timer thread: queues the periodic sweep and a check of every Subscription whose
    heartbeat is overdue (at most one check per Subscription per heartbeat period)."""

    def __init__(
        self,
        subscriptions: Subscriptions,
        *,
        reconcile_seconds: float | None,
        wake: Callable[[int], None],
        tick_seconds: float = 5.0,
    ) -> None:
        self.subscriptions = subscriptions
        self.queue = subscriptions.queue
        self.reconcile_seconds = reconcile_seconds
        self.wake = wake
        # A short sweep period (a test's) is kept to within half a period.
        self.tick_seconds = min(tick_seconds, reconcile_seconds / 2) if reconcile_seconds else tick_seconds
        self.last_sweep_at: float | None = None
        self._checked: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="facet-adapter-monitor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(self.tick_seconds):
            try:
                self.tick(time.monotonic() - started)
            except Exception as exc:  # the timer must outlive a locked or broken queue
                log.error("subscription monitor: %s", type(exc).__name__)

    def tick(self, uptime: float) -> int:
        """One round; returns the number of jobs queued."""
        notices: list[Notice] = []
        now = self.queue.clock()
        if self.reconcile_seconds and uptime >= (
            self.reconcile_seconds if self.last_sweep_at is None else self.last_sweep_at + self.reconcile_seconds
        ):
            self.last_sweep_at = uptime
            notices.append(SWEEP_NOTICE)
        for subscription in self.subscriptions.all():
            if subscription.status_at is None and subscription.id not in self._checked:
                # Never asked about: learn its status and heartbeat period.
                self._checked[subscription.id] = now
                notices.append(check_notice(subscription.id))
                continue
            late = subscription.silent_for(now)
            if late is None or subscription.heartbeat_seconds is None:
                continue
            if now - self._checked.get(subscription.id, 0.0) < subscription.heartbeat_seconds:
                continue
            self._checked[subscription.id] = now
            log.warning("Subscription/%s: no heartbeat for %.0f s past its period; checking it", subscription.id, late)
            notices.append(check_notice(subscription.id))
        if notices:
            self.queue.enqueue(notices, busy_seconds=30.0)
            self.wake(len(notices))
        return len(notices)


def subscription_health(subscriptions: Subscriptions, monitor: Monitor) -> dict[str, Any]:
    """The `subscriptions` part of /healthz: each Subscription's state, the ones in trouble (error,
    off, gone or silent past their heartbeat), deliveries refused, recent problems, the sweep."""
    now = subscriptions.queue.clock()
    known = subscriptions.all()
    troubled = [
        s.id for s in known if (s.status in INACTIVE_STATUSES or s.status == "gone" or s.silent_for(now) is not None)
    ]
    return {
        "known": [s.as_dict(now) for s in known],
        "in_trouble": troubled,
        "refused_deliveries": subscriptions.refused,
        "recent_problems": list(subscriptions.problems),
        "reconcile_every_seconds": monitor.reconcile_seconds,
        "last_sweep": iso(subscriptions.queue.watermark("sweep_watermark")),
    }
