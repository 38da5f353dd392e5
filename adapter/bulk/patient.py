"""The per-patient function: one patient's lines (and the shared records they reach) in, that
patient's Claim Bundles, OperationOutcomes, errors and counts out.

Pure: it reads only its arguments (the shared store through the `SharedLookup` it is given) and
returns values; the local engine's worker processes and the Spark executors call this same
function, so the two engines write the same lines.

The patient's index holds the patient's own lines plus, transitively, every shared resource
their references name and every shared resource found by pointing at them (docs/bulk.md). That
is what a one-file run over the whole export reads for this patient: the reader takes a patient's
record by ownership and everything else by reference, and the Bundle writer copies what
references reach, never another patient's data.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..errors import AdapterError
from ..fhir.ingest import Res, ResourceIndex, line_resource, relative_part
from ..pipeline import Options, code_session, list_sessions
from ..read.uses import DECLARED_TYPES
from ..writers import request_bundle_json
from ..writers.outcome import decision_outcome
from .store import SharedLookup, SharedRecord

SourceLine = tuple[int, int, bytes]  # (file number, line number, the line)
# A JSON key "reference" with a string value. It starts with a literal so the scan is fast; a
# match inside an odd string (an escaped quote before `reference`) only fetches one more shared
# resource, which a one-file run would have in its index anyway. The string's characters are read
# as runs of plain ones between escapes, not one alternation a character (the same strings, twice
# as fast).
_REFERENCE = re.compile(rb'"reference"\s*:\s*"([^"\\]*(?:\\.[^"\\]*)*)"')

NO_SESSION = "patient without a facet session"
TYPE_NOT_READ = "resource type the adapter does not read"
SHARED_NOT_REFERENCED = "reference data no session referenced"
BLANK = "blank line"


@dataclass(frozen=True, slots=True)
class Settings:
    options: Options  # `now` is fixed for the whole run, so every engine and job count agree
    since: dt.date | None = None  # code sessions on or after this date (history before is read)


@dataclass(slots=True)
class PatientOutput:
    claims: list[tuple[str, bytes]] = field(default_factory=list)  # (sort key, NDJSON line)
    outcomes: list[tuple[str, bytes]] = field(default_factory=list)
    errors: list[tuple[str, bytes]] = field(default_factory=list)
    sessions: int = 0
    ready: int = 0
    held: int = 0
    failed: int = 0
    before_since: int = 0
    by_rule: Counter[str] = field(default_factory=Counter)
    by_pack: Counter[str] = field(default_factory=Counter)
    used_lines: int = 0
    irrelevant: Counter[str] = field(default_factory=Counter)
    shared_used: set[int] = field(default_factory=set)


def sort_key(patient: str, day: dt.date | None, procedures: Sequence[str]) -> str:
    """claims.ndjson is sorted by patient, then date (then the session's procedures)."""
    return f"{patient}\x00{day.isoformat() if day else ''}\x00{','.join(procedures)}"


def code_patient(patient: str, lines: Sequence[SourceLine], shared: SharedLookup, settings: Settings) -> PatientOutput:
    out = PatientOutput()
    resources: list[Res] = []
    local: set[str] = set()
    for _file, number, raw in lines:
        res = line_resource(orjson.loads(raw), number)
        resources.append(res)
        if res.id:
            local.add(res.key)
    fetched, taken = _reach(lines, resources, local, shared)
    index = ResourceIndex(resources)
    shared_res = resources[len(lines) :]
    _adopt_verdicts(index, shared_res, taken)
    refs = list_sessions(index, settings.options.use)
    if not refs:
        out.irrelevant[NO_SESSION] += len(lines)
        return out
    for res in resources[: len(lines)]:
        if res.type in DECLARED_TYPES:
            out.used_lines += 1
        else:
            out.irrelevant[TYPE_NOT_READ] += 1
    out.shared_used.update(fetched)
    for ref in refs:
        if settings.since is not None and ref.date < settings.since:
            out.before_since += 1
            continue
        out.sessions += 1
        key = sort_key(ref.patient, ref.date, ref.procedures)
        try:
            result = code_session(index, ref, settings.options)
            # The findings go into a held claim's Bundle and onto the outcome line alike.
            body = decision_outcome(result.decision)
            claim = request_bundle_json(result.decision, index, body)
        except AdapterError as error:
            out.failed += 1
            out.errors.append((key, orjson.dumps(session_error(ref.patient, ref.date, ref.procedures, error))))
            continue
        decision = result.decision
        out.claims.append((key, claim))
        outcome = {"resourceType": "OperationOutcome", "id": decision.identifier, **body}
        out.outcomes.append((key, orjson.dumps(outcome)))
        if decision.held:
            out.held += 1
        else:
            out.ready += 1
        out.by_pack[decision.pack] += 1
        out.by_rule.update({f.rule_id for f in decision.findings})
    _keep_verdicts(index, shared_res, taken)
    return out


def session_error(patient: str, day: dt.date, procedures: Sequence[str], error: AdapterError) -> dict[str, Any]:
    return {
        "kind": "session",
        "patient": patient,
        "date": day.isoformat(),
        "procedures": list(procedures),
        "reason": error.message,
        "outcome": error.to_operation_outcome(),
    }


def patient_references(raw: bytes) -> set[str]:
    """The `Patient/id` keys a line's references name (the Spark engine sends the Patients that
    other patients' resources name along with the shared lines)."""
    found: set[str] = set()
    for match in _REFERENCE.finditer(raw):
        value = match.group(1)
        reference = orjson.loads(b'"' + value + b'"') if b"\\" in value else value.decode()
        key = relative_part(reference) if reference and reference[0] != "#" else None
        if key is not None and key.startswith("Patient/"):
            found.add(key)
    return found


def _reach(
    lines: Sequence[SourceLine], resources: list[Res], local: set[str], shared: SharedLookup
) -> tuple[list[int], list[SharedRecord]]:
    """Add the shared records the patient's resources reach (by reference, transitively, and by
    being pointed at), after its own resources and in the same order as the records returned;
    return the store numbers of those that are shared lines only, and the records."""
    taken: list[SharedRecord] = []
    numbers: set[int] = set()
    counted: list[int] = []  # shared lines not counted with a partition of their own
    pending = [raw for _file, _line, raw in lines]
    checked = 0  # resources already looked up in the store's reverse references
    # A patient's lines name the same few resources over and over: a reference seen once has
    # been followed (or passed over) already.
    seen: set[bytes] = set()
    while pending:
        raw = pending.pop()
        for value in _REFERENCE.findall(raw):
            if value in seen:
                continue
            seen.add(value)
            reference = orjson.loads(b'"' + value + b'"') if b"\\" in value else value.decode()
            if not reference or reference[0] == "#":
                continue
            key = relative_part(reference)
            if key is None or key in local:
                continue
            local.add(key)
            record = shared.get(key)
            if record is not None:
                resources.append(line_resource(orjson.loads(record.raw), record.line))
                taken.append(record)
                numbers.add(record.number)
                pending.append(record.raw)
                if not record.partitioned:
                    counted.append(record.number)
        while checked < len(resources):
            res = resources[checked]
            checked += 1
            if res.id is None:
                continue
            for record in shared.about(res.key):
                if record.number not in numbers:
                    found = line_resource(orjson.loads(record.raw), record.line)
                    resources.append(found)
                    local.add(found.key)
                    taken.append(record)
                    numbers.add(record.number)
                    pending.append(record.raw)
                    if not record.partitioned:
                        counted.append(record.number)
    return counted, taken


# Shared records found valid R4, by (line number, line): the same clinic, practitioners and payers
# are reached by patient after patient, and a record's verdict depends on nothing else. Invalid
# ones are checked again for each patient (their error is raised anew, never shared).
_VALID_SHARED: set[tuple[int, bytes]] = set()
_VALID_KEPT = 4096


def _adopt_verdicts(index: ResourceIndex, fetched: list[Res], taken: list[SharedRecord]) -> None:
    for res, record in zip(fetched, taken, strict=True):
        if (record.line, record.raw) in _VALID_SHARED:
            index.mark_valid(res)


def _keep_verdicts(index: ResourceIndex, fetched: list[Res], taken: list[SharedRecord]) -> None:
    for res, record in zip(fetched, taken, strict=True):
        if index.known_valid(res):
            if len(_VALID_SHARED) >= _VALID_KEPT:
                _VALID_SHARED.clear()
            _VALID_SHARED.add((record.line, record.raw))
