"""Retiring superseded Claims.

A session's Claim identifier names its procedures, so a session that gains or loses a procedure
(the second side recorded later, one entered-in-error) codes to a new Claim. The Claim the
adapter wrote for the earlier state still bills those procedures: it is retired (cancelled, its
Task too) so exactly one current Claim bills each procedure.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..fhir.client import FhirClient
from ..fhir.values import reference_of
from ..pipeline import Result
from ..writers.fhir_claim import IDENTIFIER_SYSTEM, PACK_TAG_SYSTEM
from .lookups import patient_claims_params
from .outcome import SyncOutcome
from .writeback import OPEN_TASK_STATUSES, RESOLVED, find_one, task_identifier

log = logging.getLogger(__name__)


def billed_procedures(claim: Mapping[str, Any]) -> set[str]:
    refs = {reference_of(p.get("procedureReference")) for p in claim.get("procedure") or [] if isinstance(p, Mapping)}
    for item in claim.get("item") or []:
        for ext in item.get("extension") or [] if isinstance(item, Mapping) else []:
            if isinstance(ext, Mapping) and str(ext.get("url", "")).endswith("/extension-requestedService"):
                refs.add(reference_of(ext.get("valueReference")))
    return {r for r in refs if r}


def is_ours(claim: Mapping[str, Any]) -> bool:
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
    claims: Sequence[Mapping[str, Any]] | None = None,
) -> list[str]:
    """Cancel the adapter's other open Claims of `patient` that bill any of `procedures` (and close
    their Tasks). Returns the `Claim/id`s retired (or, with dry_run, that would be). `claims`: the
    patient's Claims of this use, when already searched (adapter.server.lookups)."""
    if not patient or not procedures:
        return []
    stamp = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0).isoformat()
    retired: list[str] = []
    found = claims if claims is not None else client.search("Claim", patient_claims_params(client, patient, use))
    for claim in found:
        claim_id = str(claim.get("id"))
        if (
            claim.get("resourceType") != "Claim"
            or claim_id == keep
            or not is_ours(claim)
            or claim.get("status") not in ("active", "draft")
            or not billed_procedures(claim) & procedures
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
    task = find_one(client, "Task", f"identifier={IDENTIFIER_SYSTEM}|urn:uuid:{task_ident}")
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


def retire_others(
    client: FhirClient,
    result: Result,
    outcome: SyncOutcome,
    *,
    dry_run: bool,
    now: dt.datetime | None,
    claims: Sequence[Mapping[str, Any]] | None = None,
) -> None:
    decision = result.decision
    billed = {client.relative(key) if "://" in key else key for key in decision.procedures}
    outcome.retired = retire_superseded(
        client, decision.patient, billed, decision.use, keep=outcome.claim_id, dry_run=dry_run, now=now, claims=claims
    )
