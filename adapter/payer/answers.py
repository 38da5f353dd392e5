"""The sandbox payer's answers as FHIR (docs/payer.md, the sandbox payer): a Da Vinci PAS 2.2.1
response Bundle for a prior-authorization request, an R4 ClaimResponse for a claim.

Entry points: `pas_response(verdict, request)` and `claim_response(verdict)`.

- PAS: the ClaimResponse first (profile-claimresponse: outcome `complete`, each item's review action
  A1 with the authorization number and period, A3 with the CARC as the adjudication reason, or A4),
  then the request's patient, insurer and requestor entries echoed with the same fullUrls; the
  Bundle keeps the request's identifier. `preAuthRef` / `preAuthPeriod` when an item is certified.
- Claim: per item `submitted`, `eligible` and `benefit` adjudications from the fee table, the CARC
  on the `eligible` adjudication of a denied line, totals and the payment.
Remark codes and the rules behind each decision go in `processNote` (no patient data: rule ids and
titles only). `created` is the request's timestamp, ids derive from the request: the same request
always gets the same answer.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from ..claimresponse.answer import (
    CARC_SYSTEM,
    ITEM_PREAUTH_PERIOD,
    ITEM_TRACE_NUMBER,
    REVIEW_ACTION,
    REVIEW_ACTION_CODE,
)
from ..claimresponse.codes import remittance_codes
from ..decision import NAMESPACE
from ..fhir.values import dicts, get_str, reference_of
from ..rules.findings import Finding
from .adjudicate import LineVerdict, Verdict

PAS = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"
ADJUDICATION = "http://terminology.hl7.org/CodeSystem/adjudication"
PAYMENT_TYPE = "http://terminology.hl7.org/CodeSystem/ex-paymenttype"
X12_306 = "https://codesystem.x12.org/005010/306"
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
RESPONSE_IDENTIFIER_SYSTEM = "urn:ietf:rfc:3986"
_REVIEW = {"approved": "A1", "denied": "A3", "pended": "A4"}


def _category(code: str) -> dict[str, Any]:
    return {"coding": [{"system": ADJUDICATION, "code": code}]}


def _money(value: Decimal, currency: str) -> dict[str, Any]:
    return {"value": float(value), "currency": currency}


def _carc(code: str) -> dict[str, Any]:
    carc = remittance_codes().carc.get(code)
    coding: dict[str, Any] = {"system": CARC_SYSTEM, "code": code}
    if carc is not None:
        coding["display"] = carc.words
    return {"coding": [coding]}


class _Notes:
    """processNote entries, numbered, each written once."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def add(self, text: str) -> int:
        if text not in self.texts:
            self.texts.append(text)
        return self.texts.index(text) + 1

    def written(self) -> list[dict[str, Any]]:
        return [{"number": i, "type": "display", "text": text} for i, text in enumerate(self.texts, start=1)]


def _line_notes(line: LineVerdict, findings: tuple[Finding, ...], notes: _Notes) -> list[int]:
    numbers = []
    titles = {f.rule_id: f.title for f in findings}
    for rule in line.rules:
        prefix = "Documentation requested" if line.decision == "pended" else "Reason"
        numbers.append(notes.add(f"{prefix}: {rule}: {titles.get(rule, rule)}"))
    if line.rarc:
        words = remittance_codes().rarc.get(line.rarc, "")
        numbers.append(notes.add(f"{line.rarc}: {words}".rstrip(": ")))
    return numbers


def _response_id(verdict: Verdict, kind: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{kind}:{verdict.claim_identifier or verdict.claim_url}"))


def _header(verdict: Verdict, use: str, response_id: str) -> dict[str, Any]:
    claim = verdict.claim
    response: dict[str, Any] = {"resourceType": "ClaimResponse", "id": response_id}
    if use == "preauthorization":
        response["meta"] = {"profile": [PAS + "profile-claimresponse"]}
    response["identifier"] = [{"system": RESPONSE_IDENTIFIER_SYSTEM, "value": f"urn:uuid:{response_id}"}]
    response["status"] = "active"
    response["type"] = claim.get("type") or {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]
    }
    response["use"] = use
    response["patient"] = claim.get("patient") or {"display": "Patient not named in the request"}
    response["created"] = verdict.received
    response["insurer"] = claim.get("insurer") or {"display": "facet-adapter sandbox payer"}
    if isinstance(claim.get("provider"), dict):
        response["requestor"] = claim["provider"]
    response["request"] = {"reference": verdict.claim_url}
    return response


def _disposition(verdict: Verdict) -> str:
    decisions = [line.decision for line in verdict.lines]
    approved = decisions.count("approved")
    if verdict.use == "preauthorization":
        if verdict.pended:
            return "Pended for review: documentation requested."
        if approved == len(decisions):
            return "Certified in total."
        return "Not certified." if approved == 0 else f"Certified in part: {approved} of {len(decisions)} items."
    return f"Processed: {approved} of {len(decisions)} lines allowed."


def pas_response(verdict: Verdict, request: dict[str, Any], *, kind: str = "pas-response") -> dict[str, Any]:
    """The PAS response Bundle for a prior-authorization request (or, `kind` inquiry, the Bundle an
    `$inquire` returns)."""
    notes = _Notes()
    response = _header(verdict, "preauthorization", _response_id(verdict, kind))
    response["outcome"] = "complete"
    response["disposition"] = _disposition(verdict)
    if verdict.authorization is not None:
        number, start, end = verdict.authorization
        response["preAuthRef"] = number
        response["preAuthPeriod"] = {"start": start.isoformat(), "end": end.isoformat()}
    items = []
    words = remittance_codes().review_actions
    for line in verdict.lines:
        code = _REVIEW[line.decision]
        review: list[dict[str, Any]] = []
        if line.decision == "approved" and verdict.authorization is not None:
            review.append({"url": "number", "valueString": verdict.authorization[0]})
        review.append(
            {
                "url": REVIEW_ACTION_CODE,
                "valueCodeableConcept": {
                    "coding": [{"system": X12_306, "code": code, "display": words.get(code, code)}]
                },
            }
        )
        adjudication: dict[str, Any] = {
            "extension": [{"url": REVIEW_ACTION, "extension": review}],
            "category": _category("submitted"),
        }
        if line.carc:
            adjudication["reason"] = _carc(line.carc)
        extensions: list[dict[str, Any]] = []
        if line.trace_number:
            extensions.append(
                {
                    "url": ITEM_TRACE_NUMBER,
                    "valueIdentifier": {"system": RESPONSE_IDENTIFIER_SYSTEM, "value": line.trace_number},
                }
            )
        if line.decision == "approved" and verdict.authorization is not None:
            _, start, end = verdict.authorization
            extensions.append({"url": PAS + "extension-itemPreAuthIssueDate", "valueDate": verdict.received[:10]})
            extensions.append(
                {"url": ITEM_PREAUTH_PERIOD, "valuePeriod": {"start": start.isoformat(), "end": end.isoformat()}}
            )
        item: dict[str, Any] = {}
        if extensions:
            item["extension"] = extensions
        item["itemSequence"] = line.sequence
        if numbers := _line_notes(line, verdict.findings, notes):
            item["noteNumber"] = numbers
        item["adjudication"] = [adjudication]
        items.append(item)
    if items:
        response["item"] = items
    for text in verdict.notes:
        notes.add(text)
    if notes.texts:
        response["processNote"] = notes.written()
    entries = [{"fullUrl": f"urn:uuid:{response['id']}", "resource": response}]
    entries += _echoed(
        request, [verdict.claim.get("patient"), verdict.claim.get("insurer"), verdict.claim.get("provider")]
    )
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "meta": {
            "profile": [
                PAS + ("profile-pas-inquiry-response-bundle" if kind == "inquiry" else "profile-pas-response-bundle")
            ]
        },
        "identifier": request.get("identifier")
        or {"system": RESPONSE_IDENTIFIER_SYSTEM, "value": f"urn:uuid:{response['id']}"},
        "type": "collection",
        "timestamp": verdict.received,
        "entry": entries,
    }
    return bundle


def _echoed(request: dict[str, Any], references: list[Any]) -> list[dict[str, Any]]:
    """The request's entries the ClaimResponse names, with their fullUrls (PAS: echo them unchanged)."""
    wanted = [r for r in (reference_of(value) for value in references) if r]
    echoed = []
    for _, entry in dicts(request.get("entry")):
        if get_str(entry, "fullUrl") in wanted and isinstance(entry.get("resource"), dict):
            echoed.append({"fullUrl": entry["fullUrl"], "resource": entry["resource"]})
    return echoed


def claim_response(verdict: Verdict) -> dict[str, Any]:
    """The R4 ClaimResponse for a claim."""
    notes = _Notes()
    currency = verdict.currency
    response = _header(verdict, "claim", _response_id(verdict, "claim-response"))
    response["outcome"] = "complete"
    response["disposition"] = _disposition(verdict)
    totals = {"submitted": Decimal(0), "eligible": Decimal(0), "benefit": Decimal(0)}
    items = []
    for line in verdict.lines:
        adjudications: list[dict[str, Any]] = []
        if line.charge is not None:
            adjudications.append({"category": _category("submitted"), "amount": _money(line.charge, currency)})
            totals["submitted"] += line.charge
        eligible: dict[str, Any] = {"category": _category("eligible")}
        if line.carc:
            eligible["reason"] = _carc(line.carc)
        if line.allowed is not None:
            eligible["amount"] = _money(line.allowed, currency)
            totals["eligible"] += line.allowed
        adjudications.append(eligible)
        if line.benefit is not None:
            adjudications.append({"category": _category("benefit"), "amount": _money(line.benefit, currency)})
            totals["benefit"] += line.benefit
        item: dict[str, Any] = {"itemSequence": line.sequence}
        if numbers := _line_notes(line, verdict.findings, notes):
            item["noteNumber"] = numbers
        item["adjudication"] = adjudications
        items.append(item)
    if items:
        response["item"] = items
    response["total"] = [
        {"category": _category(name), "amount": _money(amount, currency)} for name, amount in totals.items()
    ]
    if totals["benefit"] > 0:
        response["payment"] = {
            "type": {"coding": [{"system": PAYMENT_TYPE, "code": "complete"}]},
            "date": verdict.received[:10],
            "amount": _money(totals["benefit"], currency),
        }
    for text in verdict.notes:
        notes.add(text)
    if notes.texts:
        response["processNote"] = notes.written()
    return response
