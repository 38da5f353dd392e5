"""What the /review worklist keeps in the service's database (the queue's file, schema 3):

- `review_claims`: one row per claim the service coded, by the Claim's identifier: the focus it
  was synced from (what a re-check syncs), the patient's and Claim's resource ids, date of
  service, payer pack, lines as codes, the findings as rule id, version, severity and title (no
  message: messages are shown from a fresh coding of the record, never stored), the status and
  the fingerprint an override accepted.
- `review_rules`: the rule ids of each claim, for the worklist's filter.
- `review_events`: the status history: `passed`, `needs-review`, `overridden` (who, reason, the
  findings overridden), `re-checked` (who, the status it found).

Statuses: `needs-review` (the service held the claim), `passed` (no error finding), `overridden` (a
coder accepted it; kept while later syncs code the same fingerprint, docs/server.md).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..rules.findings import Finding
from ..server.outcome import SyncOutcome
from ..service.queue import JobQueue

ReviewStatus = Literal["needs-review", "passed", "overridden"]
STATUSES: tuple[ReviewStatus, ...] = ("needs-review", "passed", "overridden")
STATUS_WORDS: dict[str, str] = {
    "needs-review": "needs review",
    "passed": "passed",
    "overridden": "overridden",
    "re-checked": "re-checked",
}
DEFAULT_LIMIT = 500
REVIEW_SOURCE = "review"  # the queue source of a coder's re-check; the job's detail names the user


@dataclass(frozen=True, slots=True)
class FindingRow:
    rule_id: str
    rule_version: int
    severity: str
    title: str


@dataclass(frozen=True, slots=True)
class ClaimRow:
    identifier: str
    focus: str
    patient: str | None
    service_date: str | None
    use: str
    pack: str | None
    pack_version: str | None
    decision: str  # held | ready
    status: ReviewStatus
    claim_id: str | None
    claim_status: str | None
    task_id: str | None
    lines: tuple[str, ...]
    findings: tuple[FindingRow, ...]
    fingerprint: str | None
    override_fingerprint: str | None
    coded_at: float
    updated_at: float

    @property
    def rule_ids(self) -> list[str]:
        return sorted({f.rule_id for f in self.findings if f.severity in ("error", "warning")})

    @property
    def errors(self) -> list[FindingRow]:
        return [f for f in self.findings if f.severity == "error"]

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ClaimRow:
        return cls(
            identifier=row["identifier"],
            focus=row["focus"],
            patient=row["patient"],
            service_date=row["service_date"],
            use=row["use"] or "claim",
            pack=row["pack"],
            pack_version=row["pack_version"],
            decision=row["decision"],
            status=row["status"],
            claim_id=row["claim_id"],
            claim_status=row["claim_status"],
            task_id=row["task_id"],
            lines=tuple(row["lines"].split()) if row["lines"] else (),
            findings=tuple(FindingRow(**f) for f in json.loads(row["findings"] or "[]")),
            fingerprint=row["fingerprint"],
            override_fingerprint=row["override_fingerprint"],
            coded_at=row["coded_at"],
            updated_at=row["updated_at"],
        )


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    at: float
    event: str
    actor: str | None
    reason: str | None
    detail: dict[str, Any]

    @property
    def words(self) -> str:
        return STATUS_WORDS.get(self.event, self.event)


@dataclass(frozen=True, slots=True)
class Filters:
    status: str | None = None
    rule: str | None = None
    pack: str | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None


def finding_rows(findings: Sequence[Finding]) -> list[FindingRow]:
    return [FindingRow(f.rule_id, f.rule_version, f.severity, f.title) for f in findings]


class ReviewStore:
    """The worklist's tables in the queue's SQLite file; safe from any thread (the queue opens a
    connection per thread)."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue

    # ------------------------------------------------------------------ the service's side

    def record_sync(
        self, outcome: SyncOutcome, *, rechecked_by: str | None = None, job_id: int | None = None
    ) -> ReviewStatus | None:
        """Record what a sync coded and wrote. Returns the claim's status, or None when the sync
        wrote no claim (a dry run, an input error)."""
        retired = [ref.partition("/")[2] for ref in outcome.retired]
        if outcome.dry_run or outcome.error is not None or outcome.claim_identifier is None:
            self._retire(retired)
            return None
        now = self.queue.clock()
        ident = outcome.claim_identifier
        # Not synced to disk on its own (as a worker's claim and complete): a power cut can only
        # lose it together with the job's completion, recorded after it, and the job then runs
        # and records it again. It saves each sync a disk sync that held the queue's write lock.
        with self.queue.transaction(durable=False) as conn:
            before = conn.execute("SELECT * FROM review_claims WHERE identifier = ?", (ident,)).fetchone()
            previous = ClaimRow.from_row(before) if before is not None else None
            status: ReviewStatus
            if outcome.claim_action == "overridden" or (
                previous is not None
                and previous.status == "overridden"
                and previous.override_fingerprint == outcome.fingerprint
            ):
                status = "overridden"
            else:
                status = "needs-review" if outcome.held else "passed"
            accepted = previous.override_fingerprint if previous is not None and status == "overridden" else None
            findings = json.dumps([dataclass_dict(f) for f in finding_rows(outcome.findings)])
            conn.execute(
                "INSERT INTO review_claims (identifier, focus, patient, service_date, use, pack, pack_version, "
                "decision, status, claim_id, claim_status, task_id, lines, findings, fingerprint, "
                "override_fingerprint, coded_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(identifier) DO UPDATE SET focus = excluded.focus, patient = excluded.patient, "
                "service_date = excluded.service_date, use = excluded.use, pack = excluded.pack, "
                "pack_version = excluded.pack_version, decision = excluded.decision, status = excluded.status, "
                "claim_id = excluded.claim_id, claim_status = excluded.claim_status, task_id = excluded.task_id, "
                "lines = excluded.lines, findings = excluded.findings, fingerprint = excluded.fingerprint, "
                "override_fingerprint = excluded.override_fingerprint, coded_at = excluded.coded_at, "
                "updated_at = excluded.updated_at",
                (
                    ident,
                    outcome.procedure,
                    outcome.patient,
                    outcome.date,
                    outcome.use or "claim",
                    outcome.pack,
                    outcome.pack_version,
                    "held" if outcome.held else "ready",
                    status,
                    outcome.claim_id,
                    outcome.claim_status,
                    outcome.task_id,
                    " ".join(outcome.lines),
                    findings,
                    outcome.fingerprint,
                    accepted,
                    now,
                    now,
                ),
            )
            conn.execute("DELETE FROM review_rules WHERE identifier = ?", (ident,))
            conn.executemany(
                "INSERT OR IGNORE INTO review_rules (identifier, rule_id, severity) VALUES (?, ?, ?)",
                [(ident, f.rule_id, f.severity) for f in outcome.findings],
            )
            if rechecked_by is not None:
                self._event(conn, ident, now, "re-checked", rechecked_by, None, {"status": status, "job": job_id})
            if previous is None or previous.status != status:
                detail: dict[str, Any] = {"claim": f"Claim/{outcome.claim_id}" if outcome.claim_id else None}
                if previous is not None and previous.status == "overridden":
                    detail["lapsed"] = True  # the record changed after the override (docs/server.md)
                self._event(conn, ident, now, status, None, None, detail)
        self._retire(retired)
        return status

    def _retire(self, claim_ids: Sequence[str]) -> None:
        """Claims a sync cancelled because a later coding of their session supersedes them."""
        if not claim_ids:
            return
        now = self.queue.clock()
        with self.queue.transaction(durable=False) as conn:  # as record_sync's
            conn.executemany(
                "UPDATE review_claims SET claim_status = 'cancelled', updated_at = ? WHERE claim_id = ?",
                [(now, claim_id) for claim_id in claim_ids],
            )

    # ------------------------------------------------------------------ the coder's side

    def record_override(
        self,
        identifier: str,
        *,
        user: str,
        reason: str,
        fingerprint: str,
        findings: Sequence[Finding],
        claim: str,
        claim_version: str | None,
        task: str | None,
        provenance: str | None,
    ) -> None:
        now = self.queue.clock()
        overridden = [
            {"rule_id": f.rule_id, "rule_version": f.rule_version, "severity": f.severity}
            for f in findings
            if f.severity in ("error", "warning")
        ]
        with self.queue.transaction() as conn:
            conn.execute(
                "UPDATE review_claims SET status = 'overridden', claim_status = 'active', override_fingerprint = ?, "
                "updated_at = ? WHERE identifier = ?",
                (fingerprint, now, identifier),
            )
            detail = {
                "findings": overridden,
                "claim": f"{claim}/_history/{claim_version}" if claim_version else claim,
                "task": task,
                "provenance": provenance,
            }
            self._event(conn, identifier, now, "overridden", user, reason, detail)

    @staticmethod
    def _event(
        conn: sqlite3.Connection,
        identifier: str,
        at: float,
        event: str,
        actor: str | None,
        reason: str | None,
        detail: dict[str, Any],
    ) -> None:
        conn.execute(
            "INSERT INTO review_events (identifier, at, event, actor, reason, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (identifier, at, event, actor, reason, json.dumps(detail)),
        )

    # ------------------------------------------------------------------ reading

    def claim(self, identifier: str) -> ClaimRow | None:
        rows = self.queue.read("SELECT * FROM review_claims WHERE identifier = ?", (identifier,))
        return ClaimRow.from_row(rows[0]) if rows else None

    def events(self, identifier: str) -> list[Event]:
        rows = self.queue.read("SELECT * FROM review_events WHERE identifier = ? ORDER BY id", (identifier,))
        return [
            Event(r["id"], r["at"], r["event"], r["actor"], r["reason"], json.loads(r["detail"] or "{}")) for r in rows
        ]

    def claims(self, filters: Filters, limit: int = DEFAULT_LIMIT) -> tuple[list[ClaimRow], int]:
        """The worklist: held claims first (needs review), then overridden, then passed; within
        each, the latest date of service first. Returns at most `limit` rows and the total."""
        where: list[str] = []
        params: list[Any] = []
        if filters.status:
            where.append("status = ?")
            params.append(filters.status)
        if filters.pack:
            where.append("pack = ?")
            params.append(filters.pack)
        if filters.rule:
            where.append("identifier IN (SELECT identifier FROM review_rules WHERE rule_id = ?)")
            params.append(filters.rule)
        if filters.date_from:
            where.append("service_date >= ?")
            params.append(filters.date_from.isoformat())
        if filters.date_to:
            where.append("service_date <= ?")
            params.append(filters.date_to.isoformat())
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        total = int(self.queue.read(f"SELECT COUNT(*) AS n FROM review_claims{clause}", params)[0]["n"])  # noqa: S608 (placeholders only)
        order = (
            "CASE status WHEN 'needs-review' THEN 0 WHEN 'overridden' THEN 1 ELSE 2 END, "
            "CASE WHEN claim_status = 'cancelled' THEN 1 ELSE 0 END, service_date DESC, coded_at DESC"
        )
        rows = self.queue.read(
            f"SELECT * FROM review_claims{clause} ORDER BY {order} LIMIT ?",  # noqa: S608 (placeholders only)
            [*params, limit],
        )
        return [ClaimRow.from_row(r) for r in rows], total

    def choices(self) -> tuple[list[str], list[str]]:
        """The rule ids and packs the worklist can be filtered by (those on record)."""
        rules = [r["rule_id"] for r in self.queue.read("SELECT DISTINCT rule_id FROM review_rules ORDER BY rule_id")]
        packs = [
            r["pack"]
            for r in self.queue.read("SELECT DISTINCT pack FROM review_claims WHERE pack IS NOT NULL ORDER BY pack")
        ]
        return rules, packs


def dataclass_dict(row: FindingRow) -> dict[str, Any]:
    return {"rule_id": row.rule_id, "rule_version": row.rule_version, "severity": row.severity, "title": row.title}
