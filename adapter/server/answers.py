"""The payer's answer, written back to the FHIR server by `sync --payer-url` (docs/payer.md, write-back).

After a sync has written a session's Claim, the request (the Claim Bundle, or the PAS request Bundle
for a prior authorization) is submitted to the payer, and its answer is stored:

- a ClaimResponse whose `request` is the Claim, with the payer's decision, reasons and amounts as it
  sent them; its references are the Claim's (patient, insurer, requestor), so the server holds it
  for the patient. One per Claim (found again by an identifier derived from the Claim's), updated
  when the payer's answer changes (a pended request decided later). A prior authorization stored
  this way is what the reader finds for the performed session's claim (docs/input.md, prior
  authorization): its number goes into that Claim's `insurance.preAuthRef`;
- the Claim's work-queue Task: a denied, pended or failed answer opens it (created when the Claim
  had none) with the payer's reasons as inputs; an approved answer completes an open one.

Entry point: `submit_and_record(client, result, outcome, payer)`.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ..claimresponse.answer import PayerAnswer
from ..claimresponse.explain import reason_words, result_of
from ..decision import NAMESPACE
from ..fhir.client import FhirClient
from ..fhir.values import reference_holders
from ..pipeline import Result
from ..writers.fhir_claim import IDENTIFIER_SYSTEM
from .outcome import SyncOutcome
from .submit import DEFAULT_BUDGET_S, DEFAULT_POLL_S, DEFAULT_WAIT_S, submit_request
from .writeback import OPEN_TASK_STATUSES, TASK_CODE_SYSTEM, find_one, task_identifier

log = logging.getLogger(__name__)

PAYER_STATUS_PREFIX = "payer-"  # Task.businessStatus.text of a Task the payer's answer set
PAYER_TASK_CODE = "review-payer-answer"
PAYER_TASK_DISPLAY = "Review the payer's answer"
REASON_SYSTEM = "urn:facet-adapter:payer-reason"


@dataclass(frozen=True, slots=True)
class PayerOptions:
    url: str
    token: str | None = None
    force: bool = False  # submit a held Claim too
    budget: float = DEFAULT_BUDGET_S
    wait: float = DEFAULT_WAIT_S
    poll: float = DEFAULT_POLL_S


def claim_response_identifier(claim_ident: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"claim-response:{claim_ident}"))


def submit_and_record(
    client: FhirClient,
    result: Result,
    outcome: SyncOutcome,
    payer: PayerOptions,
    *,
    now: dt.datetime | None = None,
) -> None:
    """Submit the session's request to the payer and store its answer (see the module docstring).
    Sets `outcome.payer`; a not-approved answer makes the outcome's exit status 1."""
    if outcome.dry_run or outcome.claim_id is None or outcome.claim is None:
        outcome.payer = {"action": "not-submitted", "why": "dry run" if outcome.dry_run else "no Claim written"}
        return
    if result.held and not payer.force:
        outcome.payer = {"action": "not-submitted", "why": "held"}
        return
    if outcome.claim_status in ("cancelled", "entered-in-error"):
        outcome.payer = {"action": "not-submitted", "why": f"Claim {outcome.claim_status}"}
        return
    submission = submit_request(
        result.bundle, payer.url, token=payer.token, budget=payer.budget, wait=payer.wait, poll=payer.poll
    )
    answer = submission.parsed
    stamp = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0).isoformat()
    response_id, action = _store_answer(client, outcome, answer)
    label, code = result_of(answer)
    outcome.payer = {
        "result": label,
        "claimResponseId": response_id,
        "claimResponseAction": action,
        "authorization": answer.authorization_number,
        "inquiries": submission.inquiries,
    }
    outcome.payer["taskAction"] = _record_on_task(client, outcome, answer, label, stamp)
    if code and outcome.exit_code == 0:
        outcome.exit_code = 1
    log.info("payer answer for Claim/%s: %s (ClaimResponse/%s %s)", outcome.claim_id, label, response_id, action)


def server_answer(answer: PayerAnswer, outcome: SyncOutcome) -> dict[str, Any]:
    """The payer's ClaimResponse as the server stores it: our identifier first, the Claim's
    references, and no reference into the payer's Bundle (those name nothing on this server)."""
    claim: Mapping[str, Any] = outcome.claim or {}
    resource: dict[str, Any] = orjson.loads(orjson.dumps(answer.resource))
    resource.pop("id", None)
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k in ("profile", "tag")}
    if meta:
        resource["meta"] = meta
    else:
        resource.pop("meta", None)
    ours = {
        "system": IDENTIFIER_SYSTEM,
        "value": f"urn:uuid:{claim_response_identifier(str(outcome.claim_identifier))}",
    }
    theirs = [i for i in resource.get("identifier") or [] if isinstance(i, dict) and i.get("value") != ours["value"]]
    resource["identifier"] = [ours, *theirs]
    resource["patient"] = claim.get("patient") or resource.get("patient")
    resource["insurer"] = claim.get("insurer") or {"display": "the payer"}
    if "requestor" in resource or claim.get("provider"):
        resource["requestor"] = claim.get("provider")
    resource["request"] = {"reference": f"Claim/{outcome.claim_id}"}
    for holder in reference_holders(resource):
        if str(holder.get("reference", "")).startswith("urn:"):
            holder.pop("reference")
            holder.setdefault("display", "named in the payer's answer")
    return {k: v for k, v in resource.items() if v is not None}


def _store_answer(client: FhirClient, outcome: SyncOutcome, answer: PayerAnswer) -> tuple[str | None, str]:
    wanted = server_answer(answer, outcome)
    query = f"identifier={IDENTIFIER_SYSTEM}|{wanted['identifier'][0]['value']}"
    existing = find_one(client, "ClaimResponse", query)
    if existing is None:
        stored, created = client.create(wanted, if_none_exist=query)
        if created:
            return str(stored.get("id")), "created"
        existing = stored
    if _content(existing) == _content(wanted):
        return str(existing.get("id")), "unchanged"
    version = (existing.get("meta") or {}).get("versionId")
    stored = client.update({**wanted, "id": existing["id"]}, if_match=str(version) if version else None)
    return str(stored.get("id")), "updated"


def _content(resource: Mapping[str, Any]) -> bytes:
    """What makes two answers the same: everything but ids, server meta and the time of the answer
    (the payer dates each answer by the request it answers, which is written anew on every run)."""
    body = {k: v for k, v in resource.items() if k not in ("id", "meta", "text", "created")}
    if isinstance(body.get("payment"), dict):
        body["payment"] = {k: v for k, v in body["payment"].items() if k != "date"}
    return orjson.dumps(_numbers(body), option=orjson.OPT_SORT_KEYS)


def _numbers(value: Any) -> Any:
    """Amounts as a server gives them back: 1350.0 is stored and read as 1350."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def _record_on_task(client: FhirClient, outcome: SyncOutcome, answer: PayerAnswer, label: str, stamp: str) -> str:
    """Open (or create) the Claim's Task for an answer that is not an approval; complete it for one."""
    ident = str(outcome.claim_identifier)
    query = f"identifier={IDENTIFIER_SYSTEM}|urn:uuid:{task_identifier(ident)}"
    existing = find_one(client, "Task", query)
    decision = label.lower().replace(" ", "-")
    business = {"text": f"{PAYER_STATUS_PREFIX}{decision}"}
    inputs = _reason_inputs(answer)
    if label == "APPROVED":
        if existing is None or existing.get("status") not in OPEN_TASK_STATUSES:
            return "none"
        done = {
            **existing,
            "status": "completed",
            "businessStatus": business,
            "statusReason": {"text": "The payer approved every item."},
            "lastModified": stamp,
        }
        client.update(done, if_match=(existing.get("meta") or {}).get("versionId"))
        return "completed"
    status = "on-hold" if decision == "pended" else "requested"
    codes = sorted({i["type"]["text"] for i in inputs if i["type"]["coding"][0]["code"] != "note"})
    description = f"The payer's answer: {label.lower()}" + (f" ({', '.join(codes)})." if codes else ".")
    if existing is None:
        task = {
            "resourceType": "Task",
            "identifier": [{"system": IDENTIFIER_SYSTEM, "value": f"urn:uuid:{task_identifier(ident)}"}],
            "status": status,
            "businessStatus": business,
            "intent": "order",
            "priority": "routine",
            "code": {
                "coding": [
                    {"system": TASK_CODE_SYSTEM, "code": PAYER_TASK_CODE, "display": "Review the payer's answer"}
                ]
            },
            "description": description,
            "focus": {"reference": f"Claim/{outcome.claim_id}"},
            "for": {"reference": str((outcome.claim or {}).get("patient", {}).get("reference") or outcome.patient)},
            "authoredOn": stamp,
            "lastModified": stamp,
        }
        if inputs:
            task["input"] = inputs
        client.create(task, if_none_exist=query)
        return "created"
    kept = [i for i in existing.get("input") or [] if not _is_payer_input(i)]
    merged = {
        **existing,
        "status": status,
        "businessStatus": business,
        "description": description,
        "lastModified": stamp,
        "input": kept + inputs,
    }
    merged.pop("statusReason", None)
    if not merged["input"]:
        merged.pop("input")
    client.update(merged, if_match=(existing.get("meta") or {}).get("versionId"))
    return "updated"


def _is_payer_input(value: Any) -> bool:
    coding = ((value or {}).get("type") or {}).get("coding") or [{}]
    return isinstance(coding[0], dict) and coding[0].get("system") == REASON_SYSTEM


def _reason_inputs(answer: PayerAnswer) -> list[dict[str, Any]]:
    inputs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for item in answer.items:
        for reason in item.reasons:
            label = f"{reason.kind.upper() if reason.kind in ('carc', 'rarc') else 'reason'} {reason.code}"
            if label in seen:
                continue
            seen.add(label)
            inputs.append(
                {
                    "type": {
                        "coding": [{"system": REASON_SYSTEM, "code": f"{reason.kind}-{reason.code}"}],
                        "text": label,
                    },
                    "valueString": reason_words(reason) or label,
                }
            )
    for note in answer.notes:
        inputs.append(
            {"type": {"coding": [{"system": REASON_SYSTEM, "code": "note"}], "text": "payer note"}, "valueString": note}
        )
    return inputs
