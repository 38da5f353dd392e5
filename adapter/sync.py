"""Server sync: gather a facet session's context from a FHIR server, code and check it with the
library (`adapter.pipeline.process`), and write the Claim back, idempotently.

Public calls (the Subscription service calls `sync_procedure`):

- `gather(client, procedure_id)` → the resources a session needs, as a list of dicts;
- `sync_procedure(client, procedure_id, options, dry_run=False)` → `SyncOutcome`;
- `sync_patient(client, patient_id, options, dry_run=False)` → `SyncOutcome` (latest session);
- `sync_since(client, since, options, dry_run=False)` → one `SyncOutcome` per session whose
  facet procedures changed since then;
- `as_transaction(raw)` → an input file (Bundle of any type, NDJSON) as a transaction Bundle of
  `PUT Type/id` entries; `load_file(client, raw)` loads it in dependency-ordered chunks (the
  sandbox loader).

Write-back rules:

- The Claim is the first entry of the library's Bundle, its references rewritten from the
  Bundle's fullUrls (`{base}/Type/id`) to relative server references (`Type/id`). A resource
  that exists only *inside* another one (a contained resource the writer lifted into its own
  Bundle entry) has no server address; it is contained in the Claim again (`#id`). Pointing at
  the container instead would give `Claim.patient` / `insurance.coverage` a reference of the
  wrong type, and dropping the reference would break required elements.
- The Claim is found by its deterministic identifier (`urn:ietf:rfc:3986|urn:uuid:<id>`, derived
  from patient, date, session procedures and use). None yet → one transaction: Claim as a
  conditional create (`ifNoneExist` on the identifier) plus, when held, the Task that focuses it
  by `urn:uuid`. Found, with different content → `PUT` with `If-Match` on the version read, so a
  concurrent writer makes us re-read (412) instead of overwriting. Same content → nothing
  written. So there is always exactly one current Claim per session, however often it syncs.
- A held result gets a work-queue Task (status requested, intent order, focus the Claim, for the
  patient, an identifier derived from the Claim's, one `input` per error/warning finding). When
  a later sync finds no error, an open Task is set `completed` (the findings were resolved).
- A Claim a person set `cancelled` or `entered-in-error` is left alone.
- When a session gains or loses a procedure, its identifier changes: the adapter's earlier open
  Claim that bills any of the session's procedures is cancelled (and its Task), so exactly one
  current Claim bills each procedure. A procedure that leaves its session re-codes what is left.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import hashlib
import logging
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from .decision import NAMESPACE
from .errors import AdapterError, InputError, NoFacetProcedureError, UsageError
from .fhirclient import FhirClient, FhirConflict, FhirNotFound, FhirRequestRejected, entry_results, parse_location
from .fhirpath import (
    add_months,
    parse_date,
    period_start_end,
    reference_holders,
    reference_of,
)
from .findings import Finding
from .ingest import ResourceIndex, index_resources
from .pipeline import Options, Result, process_index
from .read.access import values_at
from .read.uses import FOLLOWED, HISTORY_MONTHS, PATIENT_TYPES, REVERSE, code_tokens, facet_code_tokens
from .writers.fhir_claim import IDENTIFIER_SYSTEM, PACK_TAG_SYSTEM, server_claim
from .writers.outcome import RULE_SYSTEM

log = logging.getLogger(__name__)

TASK_CODE_SYSTEM = "urn:facet-adapter:task"
TASK_CODE = "review-held-claim"
OPEN_TASK_STATUSES = frozenset({"draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold"})
LEFT_ALONE_CLAIM_STATUSES = frozenset({"cancelled", "entered-in-error"})
MAX_WRITE_ATTEMPTS = 3
RESOLVED = "resolved"  # Task.businessStatus.text when a sync closed the Task
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # R4 id datatype
_CHUNK = 20  # references per `Observation?part-of=a,b,...` fallback search


# --------------------------------------------------------------------------- result


@dataclass
class SyncOutcome:
    """What one sync did (or, with dry_run, would do) for one session."""

    procedure: str  # the focus, "Procedure/123"
    dry_run: bool
    exit_code: int
    findings: list[Finding] = field(default_factory=list)
    patient: str | None = None
    date: str | None = None
    session: list[str] = field(default_factory=list)
    claim_identifier: str | None = None  # the deterministic uuid in Claim.identifier
    claim_id: str | None = None  # the server's id
    claim_version: str | None = None
    claim_status: str | None = None
    claim_action: str = "none"  # created | updated | unchanged | kept | would-create | would-update
    created: bool = False
    updated: bool = False
    task_id: str | None = None
    task_status: str | None = None
    task_action: str = "none"  # created | updated | completed | unchanged | would-... | none
    lines: list[str] = field(default_factory=list)  # "64493-50-KX"
    claim: dict[str, Any] | None = None  # the Claim as written (or as it would be written)
    task: dict[str, Any] | None = None
    outcome: dict[str, Any] | None = None  # the findings as an OperationOutcome
    error: dict[str, Any] | None = None  # an input error for this session (exit 2), as an OperationOutcome
    retired: list[str] = field(default_factory=list)  # superseded Claims cancelled (or, dry run, to cancel)

    @property
    def held(self) -> bool:
        return self.exit_code == 1

    def to_dict(self, *, resources: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "procedure": self.procedure,
            "patient": self.patient,
            "date": self.date,
            "session": self.session,
            "exitCode": self.exit_code,
            "dryRun": self.dry_run,
            "claimIdentifier": self.claim_identifier,
            "claimId": self.claim_id,
            "claimVersion": self.claim_version,
            "claimStatus": self.claim_status,
            "claimAction": self.claim_action,
            "taskId": self.task_id,
            "taskStatus": self.task_status,
            "taskAction": self.task_action,
            "lines": self.lines,
            "retired": self.retired,
            "findings": [
                {"ruleId": f.rule_id, "severity": f.severity, "message": f.message, "carc": f.carc}
                for f in self.findings
            ],
        }
        if self.error is not None:
            out["error"] = self.error
        if resources:
            out["claim"] = self.claim
            out["task"] = self.task
        return out


def failed_outcome(procedure: str, error: AdapterError, *, dry_run: bool = False) -> SyncOutcome:
    return SyncOutcome(
        procedure=procedure, dry_run=dry_run, exit_code=error.exit_code, error=error.to_operation_outcome()
    )


# --------------------------------------------------------------------------- gather


def focus_key(procedure_id: str, use: str = "claim") -> str:
    """`123` → `Procedure/123` (`ServiceRequest/123` for preauthorization); `Type/id` and
    absolute references are kept as `Type/id`."""
    location = parse_location(procedure_id) if "/" in procedure_id else None
    if location is not None:
        if location.type not in ("Procedure", "ServiceRequest") or not _ID.fullmatch(location.id):
            raise UsageError("A procedure id is `123`, `Procedure/123` or `ServiceRequest/123`.")
        return location.reference
    if not _ID.fullmatch(procedure_id):
        raise UsageError("A procedure id is `123`, `Procedure/123` or `ServiceRequest/123`.")
    return f"{'ServiceRequest' if use == 'preauthorization' else 'Procedure'}/{procedure_id}"


class _Found:
    """Gathered resources by `Type/id`, in first-seen order."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    def add(self, resource: Mapping[str, Any]) -> None:
        type_, id_ = resource.get("resourceType"), resource.get("id")
        if isinstance(type_, str) and isinstance(id_, str) and type_ != "OperationOutcome":
            self.items.setdefault(f"{type_}/{id_}", dict(resource))

    def extend(self, resources: Iterator[dict[str, Any]]) -> None:
        for resource in resources:
            self.add(resource)

    def of_type(self, *types: str) -> list[dict[str, Any]]:
        return [r for r in self.items.values() if r.get("resourceType") in types]


def gather(client: FhirClient, procedure_id: str, *, use: str = "claim") -> list[dict[str, Any]]:
    """The facet procedure's session context from the server.

    The Procedure (or ServiceRequest), its Patient, the patient's Procedures of the 24 months
    before the date of service (facet history, guidance, conservative care) with their
    performers, encounters and the Observations that report on them (relief), the facet
    ServiceRequests, Conditions, pain/disability Observations, Coverage with its payor, the
    Encounter(s) of the date of service with Location and service provider, medication
    statements/requests, preauthorization ClaimResponses. `_include`/`_revinclude` are used
    when the CapabilityStatement lists them; otherwise (and for whatever they missed) the
    referenced resources are read one by one.
    """
    key = focus_key(procedure_id, use)
    type_, _, id_ = key.partition("/")
    try:
        focus = client.read(type_, id_)
    except FhirNotFound:
        raise NoFacetProcedureError(f"{key} does not exist on the FHIR server.") from None
    found = _Found()
    found.add(focus)
    subject = reference_of(focus.get("subject"))
    patient = parse_location(client.relative(subject)) if subject and "://" not in client.relative(subject) else None
    if patient is None or patient.type != "Patient":
        return list(found.items.values())  # the pipeline reports what is missing
    pid = patient.id
    try:
        found.add(client.read("Patient", pid))
    except FhirNotFound:
        log.warning("%s names Patient/%s, which the server does not have", key, pid)
    dos = _date_of(focus)
    since = add_months(dos, -HISTORY_MONTHS) if dos is not None else None

    def search(resource_type: str, params: list[tuple[str, str]], includes: Sequence[str] = ()) -> None:
        wanted = [i for i in includes if client.supports_include(resource_type, i)]
        found.extend(client.search(resource_type, [*params, *(("_include", i) for i in wanted), ("_count", "100")]))

    # Every search comes from the reader's declaration (adapter.read.uses), so what the reader
    # uses and what a sync brings from the server cannot drift apart.
    revincludes: list[str] = []
    for wanted_type in PATIENT_TYPES:
        # `subject=Patient/x`, not `patient=x`: the same on HAPI, but the `patient` parameters are
        # defined with resolve() and cost the test server a FHIRPath evaluation per resource.
        params = [(wanted_type.search_param, f"Patient/{pid}")]
        if wanted_type.window == "history" and since is not None:
            params.append(("date", f"ge{since.isoformat()}"))
        if wanted_type.window == "day":
            if dos is None:
                continue
            # ge + le on a period means "overlaps the day": the Encounter whose period covers it.
            params += [("date", f"ge{dos.isoformat()}"), ("date", f"le{dos.isoformat()}")]
        if wanted_type.codes is not None:
            params.append(("code", code_tokens(wanted_type.codes)))
        params += list(wanted_type.fixed_params)
        reverse = [
            r.revinclude
            for r in REVERSE
            if r.target == wanted_type.type and client.supports_include(r.target, r.revinclude, reverse=True)
        ]
        if wanted_type.type == "Procedure":
            revincludes = reverse
        includes = [f.include for f in FOLLOWED if f.source == wanted_type.type and f.include]
        search(wanted_type.type, params + [("_revinclude", i) for i in reverse], includes)
    if len(revincludes) < len([r for r in REVERSE if r.target == "Procedure"]):
        _observations_about(client, found)
    _read_missing(client, found)
    log.info("gathered %d resource(s) for %s", len(found.items), key)
    return list(found.items.values())


def _observations_about(client: FhirClient, found: _Found) -> None:
    """What `_revinclude=Observation:part-of/focus` would have given: relief reports."""
    keys = [f"Procedure/{p['id']}" for p in found.of_type("Procedure")]
    for start in range(0, len(keys), _CHUNK):
        chunk = ",".join(keys[start : start + _CHUNK])
        for param in ("part-of", "focus"):
            try:
                found.extend(client.search("Observation", [(param, chunk), ("_count", "100")]))
            except FhirRequestRejected as exc:
                if exc.status != 400:
                    raise
                log.info("the server cannot search Observation by %s; skipped", param)


# Which references of which resources the reader follows, so they must be on hand.
_FOLLOWED: dict[str, tuple[tuple[str, ...], ...]] = {}
for _follow in FOLLOWED:
    _FOLLOWED[_follow.source] = (*_FOLLOWED.get(_follow.source, ()), _follow.path)
# Procedure → PractitionerRole → Practitioner, Procedure → Encounter → Location → Organization.
_FOLLOW_HOPS = 3


def _read_missing(client: FhirClient, found: _Found) -> None:
    """Read referenced resources the searches did not return (up to three hops: Procedure → Encounter →
    Location → Organization). Missing targets are left out; the reader treats them as not on record."""
    tried: set[str] = set()
    for _ in range(_FOLLOW_HOPS):
        wanted: list[str] = []
        for resource in list(found.items.values()):
            for path in _FOLLOWED.get(str(resource.get("resourceType")), ()):
                for value in values_at(resource, path):
                    reference = reference_of(value)
                    if not reference or reference.startswith(("#", "urn:")):
                        continue
                    relative = client.relative(reference)
                    location = parse_location(relative) if "://" not in relative else None
                    if location is None or location.reference in found.items or location.reference in tried:
                        continue
                    tried.add(location.reference)
                    wanted.append(location.reference)
        if not wanted:
            return
        for reference in wanted:
            type_, _, id_ = reference.partition("/")
            try:
                found.add(client.read(type_, id_))
            except FhirNotFound:
                log.info("%s is referenced but not on the server", reference)


def _date_of(resource: Mapping[str, Any]) -> dt.date | None:
    if resource.get("resourceType") == "ServiceRequest":
        start = period_start_end(resource, "occurrence")[0] or resource.get("authoredOn")
    else:
        start = period_start_end(resource, "performed")[0]
    return parse_date(start)


def server_index(client: FhirClient, resources: Sequence[Mapping[str, Any]]) -> ResourceIndex:
    """The gathered resources as the pipeline's index, each at its server address so relative and
    absolute references between them resolve."""
    return index_resources(resources, base_url=client.base_url)


# --------------------------------------------------------------------------- sync


def sync_procedure(
    client: FhirClient,
    procedure_id: str,
    options: Options,
    *,
    dry_run: bool = False,
    now: dt.datetime | None = None,
) -> SyncOutcome:
    """Code and check the session of one facet Procedure (ServiceRequest for preauthorization)
    and write its Claim (and Task when held) back. Raises InputError subclasses (exit 2) when
    the procedure is not a billable facet procedure, FhirError subclasses (exit 4) on server
    failures."""
    key = focus_key(procedure_id, options.use)
    resources = gather(client, key, use=options.use)
    index = server_index(client, resources)
    try:
        result = process_index(index, dataclasses.replace(options, focus=key))
    except NoFacetProcedureError:
        # The procedure left its session (entered-in-error, not-done, recoded...): code what is left
        # of the session, which also retires the Claim that still bills it; with nothing left,
        # retire that Claim here.
        for sibling in _session_siblings(resources, key, options.use):
            try:
                result = process_index(index, dataclasses.replace(options, focus=sibling))
            except NoFacetProcedureError:
                continue
            return write_back(client, result, sibling, dry_run=dry_run, now=now)
        retired = retire_superseded(
            client, _patient_of(resources, key), {key}, options.use, keep=None, dry_run=dry_run, now=now
        )
        if retired:
            log.info("%s is no longer billable; retired %s", key, ", ".join(retired))
        raise
    return write_back(client, result, key, dry_run=dry_run, now=now)


def _patient_of(resources: Sequence[Mapping[str, Any]], key: str) -> str | None:
    focus = next((r for r in resources if f"{r.get('resourceType')}/{r.get('id')}" == key), None)
    return reference_of(focus.get("subject")) if focus is not None else None


def _session_siblings(resources: Sequence[Mapping[str, Any]], key: str, use: str) -> list[str]:
    """The other procedures of the focus's patient and date of service (candidates to re-code)."""
    focus = next((r for r in resources if f"{r.get('resourceType')}/{r.get('id')}" == key), None)
    if focus is None or _date_of(focus) is None:
        return []
    type_ = "ServiceRequest" if use == "preauthorization" else "Procedure"
    return [
        f"{type_}/{r['id']}"
        for r in resources
        if r.get("resourceType") == type_
        and f"{type_}/{r.get('id')}" != key
        and _date_of(r) == _date_of(focus)
        and reference_of(r.get("subject")) == reference_of(focus.get("subject"))
    ]


def sync_patient(
    client: FhirClient,
    patient_id: str,
    options: Options,
    *,
    dry_run: bool = False,
    now: dt.datetime | None = None,
) -> SyncOutcome:
    """Sync the patient's latest facet session (as `facet-adapter claim` picks it in a file)."""
    location = parse_location(patient_id) if "/" in patient_id else None
    pid = location.id if location is not None else patient_id
    if not _ID.fullmatch(pid) or (location is not None and location.type != "Patient"):
        raise UsageError("A patient id is `123` or `Patient/123`.")
    try:
        patient = client.read("Patient", pid)
    except FhirNotFound:
        raise NoFacetProcedureError(f"Patient/{pid} does not exist on the FHIR server.") from None
    type_ = "ServiceRequest" if options.use == "preauthorization" else "Procedure"
    candidates = list(client.search(type_, [("subject", f"Patient/{pid}"), ("_count", "100")]))
    if not candidates:
        raise NoFacetProcedureError(f"Patient/{pid} has no {type_} on the FHIR server.")
    # The library decides what the latest billable facet session is (codes, words, status, date).
    latest = process_index(server_index(client, [patient, *candidates]), dataclasses.replace(options, focus=None))
    return sync_procedure(client, latest.case.session.keys[0], options, dry_run=dry_run, now=now)


def sync_since(
    client: FhirClient,
    since: str,
    options: Options,
    *,
    dry_run: bool = False,
    now: dt.datetime | None = None,
) -> list[SyncOutcome]:
    """Sync every session with a facet Procedure (ServiceRequest for preauthorization) whose
    `_lastUpdated` is at or after `since` (a date or an instant), searched by the facet CPT codes.
    One sync per (patient, date of service). An input error in one session is reported in its
    outcome (exit 2) and the others go on; a server error stops the run."""
    _check_since(since)
    preauth = options.use == "preauthorization"
    type_ = "ServiceRequest" if preauth else "Procedure"
    params = [
        ("code", facet_code_tokens()),
        ("_lastUpdated", f"ge{since}"),
        ("status", "active,draft" if preauth else "completed"),
        ("_count", "100"),
    ]
    sessions: dict[tuple[str, str], str] = {}
    for resource in client.search(type_, params):
        if resource.get("resourceType") != type_:
            continue
        patient = client.relative(reference_of(resource.get("subject")) or "")
        day = _date_of(resource)
        session = (patient, day.isoformat() if day else f"undated:{resource.get('id')}")
        sessions.setdefault(session, f"{type_}/{resource['id']}")
    log.info("%d session(s) with facet procedures updated since the given time", len(sessions))
    outcomes: list[SyncOutcome] = []
    for key in sessions.values():
        try:
            outcomes.append(sync_procedure(client, key, options, dry_run=dry_run, now=now))
        except InputError as exc:
            log.warning("%s not synced: %s", key, type(exc).__name__)
            outcomes.append(failed_outcome(key, exc, dry_run=dry_run))
    return outcomes


def _check_since(since: str) -> None:
    try:
        if "T" in since:
            dt.datetime.fromisoformat(since.replace("Z", "+00:00"))
        else:
            dt.date.fromisoformat(since)
    except ValueError:
        raise UsageError(
            f"--since must be a date (2026-01-31) or an instant (2026-01-31T08:00:00Z), not {since!r}."
        ) from None


def combined_exit(outcomes: Sequence[SyncOutcome]) -> int:
    """4 server error > 2 input error > 1 held > 0 clean."""
    codes = {o.exit_code for o in outcomes}
    for code in (4, 3, 2, 1):
        if code in codes:
            return code
    return 0


# --------------------------------------------------------------------------- write-back


def task_identifier(claim_ident: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"task:{claim_ident}"))


def held_task(
    claim_reference: str, patient: str, claim_ident: str, findings: Sequence[Finding], now: str
) -> dict[str, Any]:
    """The work-queue Task for a held Claim: one input per error or warning finding."""
    listed = [f for f in findings if f.severity in ("error", "warning")]
    errors = sorted({f.rule_id for f in listed if f.severity == "error"})
    return {
        "resourceType": "Task",
        "identifier": [{"system": IDENTIFIER_SYSTEM, "value": f"urn:uuid:{task_identifier(claim_ident)}"}],
        "status": "requested",
        "businessStatus": {"text": "held"},
        "intent": "order",
        "priority": "routine",
        "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": TASK_CODE, "display": "Review a held facet claim"}]},
        "description": (
            f"facet-adapter held this claim: {len(errors)} error rule(s) ({', '.join(errors) or 'none'}). "
            "Fix the record or the claim, then sync again."
        ),
        "focus": {"reference": claim_reference},
        "for": {"reference": patient},
        "authoredOn": now,
        "lastModified": now,
        "input": [
            {
                "type": {"coding": [{"system": RULE_SYSTEM, "code": f.rule_id}], "text": f"{f.severity}: {f.rule_id}"},
                "valueString": f.message,
            }
            for f in listed
        ],
    }


def _claim_content(claim: Mapping[str, Any]) -> bytes:
    """What makes two versions of the Claim the same: everything but id, server meta and the run
    time (`created` changes on every run)."""
    meta: Mapping[str, Any] = claim.get("meta") or {}
    tags = sorted(
        str(t.get("code"))
        for t in meta.get("tag") or []
        if isinstance(t, Mapping) and t.get("system") == PACK_TAG_SYSTEM
    )
    body = {k: v for k, v in claim.items() if k not in ("id", "meta", "created", "text")}
    return orjson.dumps({"body": body, "tags": tags, "profile": meta.get("profile")}, option=orjson.OPT_SORT_KEYS)


_TASK_MANAGED = ("description", "input", "focus", "for", "code", "businessStatus")


def _task_differs(existing: Mapping[str, Any], wanted: Mapping[str, Any], fields: Sequence[str]) -> bool:
    return any(
        orjson.dumps(existing.get(k), option=orjson.OPT_SORT_KEYS)
        != orjson.dumps(wanted.get(k), option=orjson.OPT_SORT_KEYS)
        for k in fields
    )


def write_back(
    client: FhirClient,
    result: Result,
    procedure: str,
    *,
    dry_run: bool = False,
    now: dt.datetime | None = None,
) -> SyncOutcome:
    """Write `result`'s Claim (and Task) to the server idempotently; see the module docstring."""
    stamp = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0).isoformat()
    decision = result.decision
    ident = decision.identifier
    claim = server_claim(decision, result.index, client.base_url)
    outcome = SyncOutcome(
        procedure=procedure,
        dry_run=dry_run,
        exit_code=result.exit_code,
        findings=list(result.findings),
        patient=decision.patient,
        date=decision.date.isoformat(),
        session=list(decision.procedures),
        claim_identifier=ident,
        claim_status=decision.claim_status,
        lines=decision.line_texts,
        claim=claim,
        outcome=result.outcome(),
    )
    claim_query = f"identifier={IDENTIFIER_SYSTEM}|urn:uuid:{ident}"
    task_ident = task_identifier(ident)
    task_query = f"identifier={IDENTIFIER_SYSTEM}|urn:uuid:{task_ident}"
    known_id: str | None = None
    for _ in range(MAX_WRITE_ATTEMPTS):
        # Once a write has named the Claim, read it by id: a search index may lag behind a write.
        existing = client.read("Claim", known_id) if known_id else _find_one(client, "Claim", claim_query)
        if existing is None:
            task = (
                held_task(_claim_entry_url(ident), result.case.patient, ident, result.findings, stamp)
                if result.held
                else None
            )
            outcome.task = task
            if dry_run:
                outcome.claim_action = "would-create"
                outcome.task_action = "would-create" if task else "none"
                _retire_others(client, result, outcome, dry_run=True, now=now)
                return outcome
            if _create_claim(client, claim, task, ident, claim_query, task_query, outcome):
                _retire_others(client, result, outcome, dry_run=dry_run, now=now)
                return outcome
            known_id = outcome.claim_id  # it existed after all (created in between): compare with it
            continue
        try:
            _update_claim(client, existing, claim, outcome, dry_run=dry_run)
        except FhirConflict:
            log.info("Claim/%s changed while syncing; reading it again", existing.get("id"))
            known_id = str(existing["id"])
            continue
        _sync_task(client, result, ident, task_query, stamp, outcome, dry_run=dry_run)
        _retire_others(client, result, outcome, dry_run=dry_run, now=now)
        return outcome
    raise FhirConflict(f"The Claim for {procedure} kept changing on the server; it was not written.", status=412)


def _claim_entry_url(ident: str) -> str:
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, f'claim-entry:{ident}')}"


def _find_one(client: FhirClient, type_: str, query: str) -> dict[str, Any] | None:
    name, _, value = query.partition("=")
    matches = [r for r in client.search(type_, [(name, value)]) if r.get("resourceType") == type_]
    if len(matches) > 1:
        # Should not happen (conditional creates); keep working on the oldest, say so.
        log.warning(
            "%d %s resources share one adapter identifier: %s", len(matches), type_, [m.get("id") for m in matches]
        )
        matches.sort(key=lambda r: str(r.get("meta", {}).get("lastUpdated", "")))
    return matches[0] if matches else None


def _create_claim(
    client: FhirClient,
    claim: dict[str, Any],
    task: dict[str, Any] | None,
    ident: str,
    claim_query: str,
    task_query: str,
    outcome: SyncOutcome,
) -> bool:
    """One transaction: the Claim (conditional create) and its Task. False when the Claim turned
    out to exist already (created concurrently)."""
    # The entries' fullUrls must differ from the identifier values: some servers (Medplum)
    # rewrite every string equal to a fullUrl, identifiers included, not only references.
    claim_url = _claim_entry_url(ident)
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": claim_url,
            "resource": claim,
            "request": {"method": "POST", "url": "Claim", "ifNoneExist": claim_query},
        }
    ]
    if task is not None:
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid5(NAMESPACE, f'task-entry:{ident}')}",
                "resource": task,
                "request": {"method": "POST", "url": "Task", "ifNoneExist": task_query},
            }
        )
    response = client.transaction({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    results = entry_results(response)
    if not results or results[0].id is None:
        from .fhirclient import FhirProtocolError

        raise FhirProtocolError("The transaction response does not say where the Claim was written.")
    claim_result = results[0]
    outcome.claim_id, outcome.claim_version = claim_result.id, claim_result.version
    if not claim_result.created:
        return False
    outcome.created, outcome.claim_action = True, "created"
    if task is not None and len(results) > 1:
        outcome.task_id, outcome.task_status = results[1].id, "requested"
        outcome.task_action = "created" if results[1].created else "unchanged"
        outcome.task = dict(task, focus={"reference": f"Claim/{claim_result.id}"})
    log.info("created Claim/%s%s", claim_result.id, f" and Task/{outcome.task_id}" if outcome.task_id else "")
    return True


def _update_claim(
    client: FhirClient, existing: dict[str, Any], claim: dict[str, Any], outcome: SyncOutcome, *, dry_run: bool
) -> None:
    claim_id = str(existing["id"])
    version = existing.get("meta", {}).get("versionId")
    outcome.claim_id, outcome.claim_version = claim_id, version
    if existing.get("status") in LEFT_ALONE_CLAIM_STATUSES:
        outcome.claim_action, outcome.claim_status = "kept", str(existing.get("status"))
        log.info("Claim/%s is %s; left alone", claim_id, existing.get("status"))
        return
    if _claim_content(existing) == _claim_content(claim):
        outcome.claim_action = "unchanged"
        return
    if dry_run:
        outcome.claim_action = "would-update"
        return
    stored = client.update({**claim, "id": claim_id}, if_match=str(version) if version else None)
    outcome.claim_version = stored.get("meta", {}).get("versionId")
    outcome.updated, outcome.claim_action = True, "updated"
    log.info("updated Claim/%s", claim_id)


def _sync_task(
    client: FhirClient,
    result: Result,
    ident: str,
    task_query: str,
    stamp: str,
    outcome: SyncOutcome,
    *,
    dry_run: bool,
) -> None:
    claim_reference = f"Claim/{outcome.claim_id}"
    existing = _find_one(client, "Task", task_query)
    if existing is not None:
        outcome.task_id, outcome.task_status = str(existing.get("id")), str(existing.get("status"))
    if outcome.claim_action == "kept":
        return
    if result.held:
        wanted = held_task(claim_reference, result.case.patient, ident, result.findings, stamp)
        outcome.task = wanted
        if existing is None:
            if dry_run:
                outcome.task_action = "would-create"
                return
            stored, created = client.create(wanted, if_none_exist=task_query)
            outcome.task_id, outcome.task_status = str(stored.get("id")), str(stored.get("status"))
            outcome.task_action = "created" if created else "unchanged"
            return
        if existing.get("status") not in OPEN_TASK_STATUSES:
            # Reopen a Task this adapter closed, or one whose findings changed; a Task a person
            # closed on the same findings ("will not fix") stays closed.
            closed_by_sync = existing.get("businessStatus", {}).get("text") == RESOLVED
            reopen = closed_by_sync or _task_differs(existing, wanted, ("description", "input"))
            if not reopen:
                outcome.task_action = "unchanged"
                return
        else:
            reopen = False
            if not _task_differs(existing, wanted, _TASK_MANAGED):
                outcome.task_action = "unchanged"
                return
        # Keep what a worker added (owner, notes, an in-progress status); refresh what we own.
        merged = {**existing, **{k: wanted[k] for k in _TASK_MANAGED}, "lastModified": stamp}
        if reopen:
            merged["status"] = "requested"
            merged.pop("statusReason", None)
        outcome.task = merged
        if dry_run:
            outcome.task_action = "would-update"
            return
        stored = client.update(merged, if_match=existing.get("meta", {}).get("versionId"))
        outcome.task_status, outcome.task_action = str(stored.get("status")), "updated"
        return
    if existing is None or existing.get("status") not in OPEN_TASK_STATUSES:
        return
    closed = {
        **existing,
        "status": "completed",
        "businessStatus": {"text": RESOLVED},
        "statusReason": {"text": "A later sync found no error finding."},
        "lastModified": stamp,
    }
    outcome.task = closed
    if dry_run:
        outcome.task_action = "would-complete"
        return
    stored = client.update(closed, if_match=existing.get("meta", {}).get("versionId"))
    outcome.task_status, outcome.task_action = str(stored.get("status")), "completed"
    log.info("completed Task/%s", existing.get("id"))


# --------------------------------------------------------------------------- superseded Claims

# A session's Claim identifier names its procedures (docs/output.md, identifier), so a session
# that gains or loses a procedure (the second side recorded later, one entered-in-error) codes to
# a new Claim. The Claim the adapter wrote for the earlier state still bills those procedures: it
# is retired (cancelled, its Task too) so exactly one current Claim bills each procedure
# (docs/output.md, superseded Claims).


def _billed_procedures(claim: Mapping[str, Any]) -> set[str]:
    refs = {reference_of(p.get("procedureReference")) for p in claim.get("procedure") or [] if isinstance(p, Mapping)}
    for item in claim.get("item") or []:
        for ext in item.get("extension") or [] if isinstance(item, Mapping) else []:
            if isinstance(ext, Mapping) and str(ext.get("url", "")).endswith("/extension-requestedService"):
                refs.add(reference_of(ext.get("valueReference")))
    return {r for r in refs if r}


def _is_ours(claim: Mapping[str, Any]) -> bool:
    return any(
        isinstance(tag, Mapping) and tag.get("system") == PACK_TAG_SYSTEM
        for tag in (claim.get("meta") or {}).get("tag") or []
    )


def retire_superseded(
    client: FhirClient,
    patient: str | None,
    procedures: set[str],
    use: str,
    *,
    keep: str | None,
    dry_run: bool = False,
    now: dt.datetime | None = None,
) -> list[str]:
    """Cancel the adapter's other open Claims of `patient` that bill any of `procedures` (and close
    their Tasks). Returns the `Claim/id`s retired (or, with dry_run, that would be)."""
    if not patient or not procedures:
        return []
    stamp = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0).isoformat()
    retired: list[str] = []
    for claim in client.search("Claim", [("patient", client.relative(patient)), ("use", use)]):
        claim_id = str(claim.get("id"))
        if (
            claim.get("resourceType") != "Claim"
            or claim_id == keep
            or not _is_ours(claim)
            or claim.get("status") not in ("active", "draft")
            or not _billed_procedures(claim) & procedures
        ):
            continue
        retired.append(f"Claim/{claim_id}")
        if dry_run:
            continue
        version = claim.get("meta", {}).get("versionId")
        client.update({**claim, "status": "cancelled"}, if_match=str(version) if version else None)
        log.info("cancelled superseded Claim/%s", claim_id)
        for value in (i.get("value") for i in claim.get("identifier") or [] if isinstance(i, Mapping)):
            if isinstance(value, str) and value.startswith("urn:uuid:"):
                _close_task(client, task_identifier(value.removeprefix("urn:uuid:")), stamp)
    return retired


def _close_task(client: FhirClient, task_ident: str, stamp: str) -> None:
    task = _find_one(client, "Task", f"identifier={IDENTIFIER_SYSTEM}|urn:uuid:{task_ident}")
    if task is None or task.get("status") not in OPEN_TASK_STATUSES:
        return
    closed = {
        **task,
        "status": "cancelled",
        "businessStatus": {"text": RESOLVED},
        "statusReason": {"text": "The claim was superseded by a newer claim for the same procedures."},
        "lastModified": stamp,
    }
    client.update(closed, if_match=task.get("meta", {}).get("versionId"))
    log.info("cancelled Task/%s of a superseded Claim", task.get("id"))


def _retire_others(
    client: FhirClient, result: Result, outcome: SyncOutcome, *, dry_run: bool, now: dt.datetime | None
) -> None:
    billed = {client.relative(key) if "://" in key else key for key in result.case.session.keys}
    outcome.retired = retire_superseded(
        client, result.case.patient, billed, result.case.use, keep=outcome.claim_id, dry_run=dry_run, now=now
    )


# --------------------------------------------------------------------------- loading files


def as_transaction(raw: bytes, *, id_prefix: str = "", name: str = "input") -> dict[str, Any]:
    """An input file (a Bundle of any type, a resource, NDJSON) as a transaction Bundle of
    `PUT {Type}/{id}` entries, so loading it twice changes nothing. References between its
    resources (relative, absolute, urn:uuid) become relative `Type/id`; with `id_prefix` every id
    is prefixed, so several files (or test runs) that reuse ids do not overwrite each other."""
    from .ingest import parse_bytes

    index = parse_bytes(raw, name=name)
    top = [res for res in index.resources if res.type != "Bundle" and res.container is None]
    new_ids: dict[int, str] = {}
    for res in top:
        original = res.id or str(uuid.uuid5(NAMESPACE, res.full_url or res.path))
        new_ids[id(res)] = prefixed_id(id_prefix, original)
    entries: dict[str, dict[str, Any]] = {}
    for res in top:
        data = copy.deepcopy(res.data)
        data["id"] = new_ids[id(res)]
        meta = data.get("meta")
        if isinstance(meta, dict):
            for server_owned in ("versionId", "lastUpdated", "source"):
                meta.pop(server_owned, None)
            if not meta:
                data.pop("meta")
        for holder in reference_holders(data, into_contained=True):
            reference = holder["reference"]
            if reference.startswith("#"):
                continue
            target = index.resolve(reference, res)
            if target is not None and target.container is None and id(target) in new_ids:
                holder["reference"] = f"{target.type}/{new_ids[id(target)]}"
        key = f"{res.type}/{data['id']}"
        entries[key] = {"resource": data, "request": {"method": "PUT", "url": key}}
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries.values())}


MAX_TRANSACTION_ENTRIES = 50  # Medplum's limit on updates per transaction; HAPI takes more


def transaction_chunks(bundle: Mapping[str, Any], size: int = MAX_TRANSACTION_ENTRIES) -> list[dict[str, Any]]:
    """Split a transaction of `PUT Type/id` entries into transactions of at most `size` entries,
    resources before what references them, so a server that checks references (HAPI) accepts
    every chunk. Reference cycles stay in file order."""
    entries = list(bundle.get("entry") or [])
    keys = [str(e["request"]["url"]) for e in entries]
    position = {key: i for i, key in enumerate(keys)}
    depends = [
        {position[r["reference"]] for r in reference_holders(e["resource"]) if r["reference"] in position} - {i}
        for i, e in enumerate(entries)
    ]
    order: list[int] = []
    state: dict[int, int] = {}  # 1: on the walk's path, 2: placed
    for start_node in range(len(entries)):
        if state.get(start_node):
            continue
        state[start_node] = 1
        stack = [(start_node, iter(sorted(depends[start_node])))]
        while stack:
            node, targets = stack[-1]
            target = next(targets, None)
            if target is None:
                stack.pop()
                state[node] = 2
                order.append(node)
            elif not state.get(target):
                state[target] = 1
                stack.append((target, iter(sorted(depends[target]))))
    chunks = [[entries[i] for i in order[at : at + size]] for at in range(0, len(order), size)]
    return [{"resourceType": "Bundle", "type": "transaction", "entry": chunk} for chunk in chunks]


def load_file(client: FhirClient, raw: bytes, *, id_prefix: str = "", name: str = "input") -> list[dict[str, Any]]:
    """Load an input file into the server (see `as_transaction`), in dependency-ordered chunks."""
    return [
        client.transaction(chunk) for chunk in transaction_chunks(as_transaction(raw, id_prefix=id_prefix, name=name))
    ]


def prefixed_id(prefix: str, original: str) -> str:
    new = f"{prefix}{original}"
    if len(new) <= 64:
        return new
    digest = hashlib.sha256(new.encode()).hexdigest()[:10]
    return f"{new[:53]}-{digest}"
