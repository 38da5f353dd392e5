"""Server sync: gather a facet session's record from a FHIR server, code and check it with the
library (`adapter.pipeline.process`), write the Claim back and retire the Claims it supersedes.

- `sync_procedure(client, procedure_id, options, dry_run=False)` → `SyncOutcome`;
- `sync_patient(client, patient_id, options, dry_run=False)` → `SyncOutcome` (latest session);
- `sync_since(client, since, options, dry_run=False)` → one `SyncOutcome` per session whose
  facet procedures changed since then;
- `combined_exit(outcomes)` → the exit status of a run.

A procedure that leaves its session re-codes what is left of the session (and the Claim that
still bills it is retired).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import FhirNotFound, InputError, NoFacetProcedureError, UsageError
from ..fhir.client import FhirClient
from ..fhir.responses import parse_location
from ..fhir.values import reference_of
from ..pipeline import Options, Result, process_index
from ..read.uses import facet_code_tokens
from .gather import ID_SYNTAX, date_of, focus_key, gather, server_index
from .outcome import SyncOutcome, failed_outcome

if TYPE_CHECKING:
    from .answers import PayerOptions
from .lookups import identifier_query, look_up
from .retire import retire_others, retire_superseded
from .writeback import task_identifier, write_back

__all__ = ["SyncOutcome", "combined_exit", "failed_outcome", "sync_patient", "sync_procedure", "sync_since"]

log = logging.getLogger(__name__)


def sync_procedure(
    client: FhirClient,
    procedure_id: str,
    options: Options,
    *,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    payer: PayerOptions | None = None,
) -> SyncOutcome:
    """Code and check the session of one facet Procedure (ServiceRequest for preauthorization)
    and write its Claim (and Task when held) back; with `payer`, submit it and store the answer
    (adapter.server.answers). Raises InputError subclasses (exit 2) when the procedure is not a
    billable facet procedure, FhirError subclasses (exit 4) on server or payer failures."""
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
            return _write_and_retire(client, result, sibling, dry_run=dry_run, now=now, payer=payer)
        retired = retire_superseded(
            client, _patient_of(resources, key), {key}, options.use, keep=None, dry_run=dry_run, now=now
        )
        if retired:
            log.info("%s is no longer billable; retired %s", key, ", ".join(retired))
        raise
    return _write_and_retire(client, result, key, dry_run=dry_run, now=now, payer=payer)


def _write_and_retire(
    client: FhirClient,
    result: Result,
    procedure: str,
    *,
    dry_run: bool,
    now: dt.datetime | None,
    payer: PayerOptions | None = None,
) -> SyncOutcome:
    """Write the session's Claim (and Task), then retire the adapter's other open Claims that
    bill its procedures (with dry_run, say which would be); with `payer`, submit the Claim. What
    both read first is read in one round trip (adapter.server.lookups)."""
    ident = result.decision.identifier
    lookups = look_up(
        client,
        claim_query=identifier_query(ident),
        task_query=identifier_query(task_identifier(ident)),
        patient=result.decision.patient,
        use=result.decision.use,
    )
    outcome = write_back(client, result, procedure, dry_run=dry_run, now=now, lookups=lookups)
    retire_others(client, result, outcome, dry_run=dry_run, now=now, claims=lookups.patient_claims)
    if payer is not None:
        from .answers import submit_and_record

        submit_and_record(client, result, outcome, payer, now=now)
    return outcome


def _patient_of(resources: Sequence[Mapping[str, Any]], key: str) -> str | None:
    focus = next((r for r in resources if f"{r.get('resourceType')}/{r.get('id')}" == key), None)
    return reference_of(focus.get("subject")) if focus is not None else None


def _session_siblings(resources: Sequence[Mapping[str, Any]], key: str, use: str) -> list[str]:
    """The other procedures of the focus's patient and date of service (candidates to re-code)."""
    focus = next((r for r in resources if f"{r.get('resourceType')}/{r.get('id')}" == key), None)
    if focus is None or date_of(focus) is None:
        return []
    type_ = "ServiceRequest" if use == "preauthorization" else "Procedure"
    return [
        f"{type_}/{r['id']}"
        for r in resources
        if r.get("resourceType") == type_
        and f"{type_}/{r.get('id')}" != key
        and date_of(r) == date_of(focus)
        and reference_of(r.get("subject")) == reference_of(focus.get("subject"))
    ]


def sync_patient(
    client: FhirClient,
    patient_id: str,
    options: Options,
    *,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    payer: PayerOptions | None = None,
) -> SyncOutcome:
    """Sync the patient's latest facet session (as `facet-adapter claim` picks it in a file)."""
    location = parse_location(patient_id) if "/" in patient_id else None
    pid = location.id if location is not None else patient_id
    if not ID_SYNTAX.fullmatch(pid) or (location is not None and location.type != "Patient"):
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
    return sync_procedure(client, latest.case.session.keys[0], options, dry_run=dry_run, now=now, payer=payer)


def sync_since(
    client: FhirClient,
    since: str,
    options: Options,
    *,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    payer: PayerOptions | None = None,
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
        day = date_of(resource)
        session = (patient, day.isoformat() if day else f"undated:{resource.get('id')}")
        sessions.setdefault(session, f"{type_}/{resource['id']}")
    log.info("%d session(s) with facet procedures updated since the given time", len(sessions))
    outcomes: list[SyncOutcome] = []
    for key in sessions.values():
        try:
            outcomes.append(sync_procedure(client, key, options, dry_run=dry_run, now=now, payer=payer))
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
