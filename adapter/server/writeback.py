"""Writing a session's Claim back to the FHIR server, idempotently, and keeping the work-queue
Task of a held Claim.

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
- A held Claim a coder overrode (`/review`, adapter.server.override) carries the override tag
  whose code is the fingerprint of what the coder accepted (the Claim as coded and its error and
  warning findings). While a sync codes the same fingerprint, the Claim stays active and its Task
  closed; once the record changes so that the fingerprint differs, the override has lapsed: the
  Claim is written as coded now (draft again when still held) and the Task reopens.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from ..decision import NAMESPACE
from ..errors import FhirConflict, FhirProtocolError
from ..fhir.client import FhirClient
from ..fhir.responses import entry_results
from ..pipeline import Result
from ..rules.findings import Finding
from ..writers.fhir_claim import IDENTIFIER_SYSTEM, PACK_TAG_SYSTEM
from ..writers.outcome import RULE_SYSTEM
from ..writers.server_claim import server_claim
from .lookups import Lookups, identifier_query
from .outcome import SyncOutcome

log = logging.getLogger(__name__)

TASK_CODE_SYSTEM = "urn:facet-adapter:task"
TASK_CODE = "review-held-claim"
OPEN_TASK_STATUSES = frozenset({"draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold"})
LEFT_ALONE_CLAIM_STATUSES = frozenset({"cancelled", "entered-in-error"})
MAX_WRITE_ATTEMPTS = 3
RESOLVED = "resolved"  # Task.businessStatus.text when a sync closed the Task
OVERRIDDEN = "overridden"  # Task.businessStatus.text when a coder accepted the held claim
OVERRIDE_TAG_SYSTEM = "urn:facet-adapter:override"  # Claim.meta.tag; its code is the fingerprint accepted


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


def claim_content(claim: Mapping[str, Any]) -> bytes:
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


def override_fingerprint(claim: Mapping[str, Any], findings: Sequence[Finding]) -> str:
    """What a coder's override accepts: the Claim as coded (as `claim_content` compares it) and
    the error and warning findings on it. Any change to either is a change the coder has not seen."""
    listed = sorted(
        (f.rule_id, f.rule_version, f.severity, f.message) for f in findings if f.severity in ("error", "warning")
    )
    digest = hashlib.sha256(claim_content(claim) + orjson.dumps(listed))
    return digest.hexdigest()[:32]


def override_of(claim: Mapping[str, Any]) -> str | None:
    """The fingerprint a coder's override on this Claim accepted, if any."""
    meta: Mapping[str, Any] = claim.get("meta") or {}
    for tag in meta.get("tag") or []:
        if isinstance(tag, Mapping) and tag.get("system") == OVERRIDE_TAG_SYSTEM and tag.get("code"):
            return str(tag["code"])
    return None


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
    lookups: Lookups | None = None,
) -> SyncOutcome:
    """Write `result`'s Claim (and Task) to the server idempotently; see the module docstring.
    The Claims this one supersedes are left to `adapter.server.retire.retire_others`. `lookups`:
    the Claim's and Task's searches already made (adapter.server.lookups)."""
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
        use=decision.use,
        pack=decision.pack,
        pack_version=decision.pack_version,
        fingerprint=override_fingerprint(claim, result.findings),
    )
    claim_query = identifier_query(ident)
    task_query = identifier_query(task_identifier(ident))
    found = lookups or Lookups()
    known_id: str | None = None
    for _ in range(MAX_WRITE_ATTEMPTS):
        # Once a write has named the Claim, read it by id: a search index may lag behind a write.
        # The Task looked up with the Claim goes with it; with a Claim read again, it is searched again.
        existing = client.read("Claim", known_id) if known_id else find_one(client, "Claim", claim_query, found.claim)
        task_found = None if known_id else found.task
        if existing is None:
            task = (
                held_task(_claim_entry_url(ident), decision.patient, ident, result.findings, stamp)
                if result.held
                else None
            )
            outcome.task = task
            if dry_run:
                outcome.claim_action = "would-create"
                outcome.task_action = "would-create" if task else "none"
                return outcome
            if _create_claim(client, claim, task, ident, claim_query, task_query, outcome):
                return outcome
            known_id = outcome.claim_id  # it existed after all (created in between): compare with it
            continue
        try:
            _update_claim(client, existing, claim, outcome, dry_run=dry_run)
        except FhirConflict:
            log.info("Claim/%s changed while syncing; reading it again", existing.get("id"))
            known_id = str(existing["id"])
            continue
        _sync_task(client, result, ident, task_query, stamp, outcome, dry_run=dry_run, found=task_found)
        return outcome
    raise FhirConflict(
        f"The Claim for {procedure} kept changing on the FHIR server at {client.transport.shown_base}; "
        "it was not written.",
        status=412,
        base_url=client.transport.shown_base,
    )


def _claim_entry_url(ident: str) -> str:
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, f'claim-entry:{ident}')}"


def find_one(
    client: FhirClient, type_: str, query: str, found: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Any] | None:
    """The one resource the search `query` finds (`found`: its matches, when already searched)."""
    if found is None:
        name, _, value = query.partition("=")
        found = list(client.search(type_, [(name, value)]))
    matches = [dict(r) for r in found if r.get("resourceType") == type_]
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
        raise FhirProtocolError(
            f"The FHIR server at {client.transport.shown_base} answered the Claim's transaction (POST [base]) "
            "without saying where the Claim was written.",
            method="POST",
            path="[base]",
            base_url=client.transport.shown_base,
        )
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
    if override_of(existing) == outcome.fingerprint and outcome.fingerprint is not None:
        # A coder accepted exactly this claim and these findings: it stays as they left it.
        outcome.claim_action, outcome.claim_status = "overridden", str(existing.get("status"))
        return
    if claim_content(existing) == claim_content(claim):
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
    found: Sequence[Mapping[str, Any]] | None = None,
) -> None:
    claim_reference = f"Claim/{outcome.claim_id}"
    existing = find_one(client, "Task", task_query, found)
    if existing is not None:
        outcome.task_id, outcome.task_status = str(existing.get("id")), str(existing.get("status"))
    if outcome.claim_action in ("kept", "overridden"):
        return
    if result.held:
        wanted = held_task(claim_reference, result.decision.patient, ident, result.findings, stamp)
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
            # Reopen a Task this adapter closed, one a coder's override closed (the override has
            # lapsed, or the Claim would have been left as it was), or one whose findings changed;
            # a Task a person closed on the same findings ("will not fix") stays closed.
            closed_by_sync = existing.get("businessStatus", {}).get("text") in (RESOLVED, OVERRIDDEN)
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
    if str(existing.get("businessStatus", {}).get("text", "")).startswith("payer-"):
        return  # opened by the payer's answer (adapter.server.answers): the payer's word stands
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
