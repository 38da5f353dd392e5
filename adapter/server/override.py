"""A coder's override of a held claim, on the FHIR server (docs/server.md, the /review worklist).

- `recode(client, focus, options)` → `Result`: the session coded afresh from the server's current
  record, writing nothing (what the review page shows and what an override is checked against).
- `override_claim(client, result, user=, reason=, fingerprint=)` → `Overridden`: one transaction
  that sets the held Claim `active` with the override tag (its code the fingerprint the coder
  accepted, `writeback.override_fingerprint`), completes the Claim's work-queue Task with the
  reason as its output and a note, and adds a Provenance for the Claim (and Task) naming the user
  as the agent and the reason. The Claim and Task are written with `If-Match` on the versions
  read, so a sync that wrote in between makes the override fail rather than overwrite it.

The override is refused (`OverrideRefused`) when what the coder saw is no longer what the server
holds: the record changed (another fingerprint), the server's Claim is not the one this coding
writes (a sync is due: re-check first), the claim is not held, or a person cancelled it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..decision import NAMESPACE
from ..errors import AdapterError, FhirProtocolError
from ..fhir.client import FhirClient
from ..fhir.responses import entry_results
from ..pipeline import Options, Result, process_index
from ..writers.fhir_claim import IDENTIFIER_SYSTEM
from ..writers.server_claim import server_claim
from .gather import focus_key, gather, server_index
from .writeback import (
    LEFT_ALONE_CLAIM_STATUSES,
    OVERRIDDEN,
    OVERRIDE_TAG_SYSTEM,
    claim_content,
    find_one,
    override_fingerprint,
    task_identifier,
)

USER_SYSTEM = "urn:facet-adapter:review-user"  # the identifier system of a /review user named as an agent
_DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
_PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


class OverrideRefused(AdapterError):
    """What the coder saw is not what the server holds now (or the claim is not held): 409."""

    exit_code = 2
    issue_code = "conflict"
    http_status = 409


@dataclass(frozen=True, slots=True)
class Overridden:
    claim_id: str
    claim_version: str | None
    task_id: str | None
    provenance_id: str | None
    fingerprint: str
    at: str


def recode(client: FhirClient, focus: str, options: Options) -> Result:
    """The session of `focus` as the server's record codes it now (nothing written). Raises
    NoFacetProcedureError when the focus is no longer a billable facet procedure."""
    key = focus_key(focus, options.use)
    resources = gather(client, key, use=options.use)
    return process_index(server_index(client, resources), dataclasses.replace(options, focus=key))


def fingerprint_of(client: FhirClient, result: Result) -> str:
    """The fingerprint an override of `result` accepts (as a sync computes it)."""
    return override_fingerprint(server_claim(result.decision, result.index, client.base_url), result.findings)


def override_claim(
    client: FhirClient,
    result: Result,
    *,
    user: str,
    reason: str,
    fingerprint: str,
    now: dt.datetime | None = None,
) -> Overridden:
    """Accept the held claim of `result` on the server; see the module docstring."""
    stamp = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0).isoformat()
    decision = result.decision
    if not result.held:
        raise OverrideRefused("This claim is not held any more; there is nothing to override.")
    coded = server_claim(decision, result.index, client.base_url)
    current = override_fingerprint(coded, result.findings)
    if current != fingerprint:
        raise OverrideRefused("The record changed since this page was shown; read the claim again before overriding.")
    ident = decision.identifier
    existing = find_one(client, "Claim", f"identifier={IDENTIFIER_SYSTEM}|urn:uuid:{ident}")
    if existing is None or claim_content(existing) != claim_content(coded):
        raise OverrideRefused(
            "The FHIR server does not hold this claim as coded now; re-check it first, then override."
        )
    if existing.get("status") in LEFT_ALONE_CLAIM_STATUSES:
        raise OverrideRefused(f"The claim is {existing.get('status')} on the FHIR server; it cannot be overridden.")
    claim_id = str(existing["id"])
    old_version = existing.get("meta", {}).get("versionId")
    meta = dict(existing.get("meta") or {})
    tags = [t for t in meta.get("tag") or [] if not (isinstance(t, Mapping) and t.get("system") == OVERRIDE_TAG_SYSTEM)]
    tags.append({"system": OVERRIDE_TAG_SYSTEM, "code": fingerprint, "display": "accepted by a coder"})
    meta["tag"] = tags
    claim = {**existing, "status": "active", "meta": meta}
    task = find_one(client, "Task", f"identifier={IDENTIFIER_SYSTEM}|urn:uuid:{task_identifier(ident)}")
    entries: list[dict[str, Any]] = [_put(claim, old_version)]
    if task is not None:
        entries.append(_put(_completed_task(task, user, reason, stamp), task.get("meta", {}).get("versionId")))
    entries.append(
        {
            "fullUrl": f"urn:uuid:{uuid.uuid5(NAMESPACE, f'override:{ident}:{fingerprint}:{stamp}')}",
            "resource": _provenance(claim_id, old_version, task, user, reason, stamp),
            "request": {"method": "POST", "url": "Provenance"},
        }
    )
    response = client.transaction({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    results = entry_results(response)
    if len(results) != len(entries):
        raise FhirProtocolError(
            f"The FHIR server at {client.transport.shown_base} answered the override's transaction with "
            f"{len(results)} entries for {len(entries)}.",
            method="POST",
            path="[base]",
            base_url=client.transport.shown_base,
        )
    return Overridden(
        claim_id=claim_id,
        claim_version=results[0].version,
        task_id=str(task["id"]) if task is not None else None,
        provenance_id=results[-1].id,
        fingerprint=fingerprint,
        at=stamp,
    )


def _put(resource: Mapping[str, Any], version: str | None) -> dict[str, Any]:
    request: dict[str, Any] = {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
    if version:
        request["ifMatch"] = f'W/"{version}"'
    return {"resource": dict(resource), "request": request}


def _completed_task(task: Mapping[str, Any], user: str, reason: str, stamp: str) -> dict[str, Any]:
    notes = [n for n in task.get("note") or [] if isinstance(n, Mapping)]
    return {
        **task,
        "status": "completed",
        "businessStatus": {"text": OVERRIDDEN},
        "statusReason": {"text": "A coder accepted the held claim."},
        "lastModified": stamp,
        "output": [
            *[o for o in task.get("output") or [] if isinstance(o, Mapping)],
            {"type": {"text": "override reason"}, "valueString": reason},
        ],
        "note": [*notes, {"authorString": user, "time": stamp, "text": reason}],
    }


def _provenance(
    claim_id: str, old_version: str | None, task: Mapping[str, Any] | None, user: str, reason: str, stamp: str
) -> dict[str, Any]:
    targets = [{"reference": f"Claim/{claim_id}"}]
    if task is not None:
        targets.append({"reference": f"Task/{task['id']}"})
    provenance: dict[str, Any] = {
        "resourceType": "Provenance",
        "target": targets,
        "recorded": stamp,
        "activity": {
            "coding": [{"system": _DATA_OPERATION, "code": "UPDATE", "display": "revise"}],
            "text": "override of a held claim",
        },
        "reason": [{"text": reason}],
        "agent": [
            {
                "type": {"coding": [{"system": _PARTICIPANT_TYPE, "code": "verifier", "display": "Verifier"}]},
                "who": {"identifier": {"system": USER_SYSTEM, "value": user}, "display": user},
            },
            {
                "type": {"coding": [{"system": _PARTICIPANT_TYPE, "code": "assembler", "display": "Assembler"}]},
                "who": {"display": "facet-adapter"},
            },
        ],
    }
    if old_version:
        # The draft the coder accepted; the new version is this Provenance's unversioned target
        # (a transaction cannot name a version it is about to create).
        provenance["entity"] = [{"role": "revision", "what": {"reference": f"Claim/{claim_id}/_history/{old_version}"}}]
    return provenance
