"""A payer's answer explained to a coder (docs/payer.md, reading an answer): per item the decision and
its review action, the authorization number and period, the adjudication amounts, the reasons in
words, and for each denial what to do and which facet-adapter rules check the same problem.

Entry points: `answer_text(answer)`, `answer_json(answer)` and `result_of(answer)`.
"""

from __future__ import annotations

from typing import Any

from .answer import Amount, ItemAnswer, PayerAnswer, Reason
from .codes import remittance_codes

DECISION_WORDS = {
    "approved": "approved",
    "partial": "partly approved",
    "modified": "modified",
    "denied": "denied",
    "pended": "pended",
    "cancelled": "cancelled",
    "error": "error",
    "unknown": "not decided",
}
AMOUNT_COLUMNS = ("submitted", "eligible", "benefit")
_NOT_APPROVED_ORDER = ("denied", "error", "pended", "modified", "partial", "cancelled", "unknown")
_ADVICE = {
    "pended": "The payer is still reviewing it: `facet-adapter submit` follows up with Claim/$inquire "
    "until it is decided; send any documentation the payer asks for.",
    "modified": "The payer authorized something other than what was asked (see the added items): "
    "bill what was authorized, or ask for a review.",
    "partial": "Only part of the request was authorized: bill what was authorized, or ask for a review.",
    "error": "The payer could not process the request: correct what the error names and submit again.",
    "unknown": "The answer does not say what was decided for this item: ask the payer.",
    "cancelled": "The request was cancelled.",
}


def result_of(answer: PayerAnswer) -> tuple[str, int]:
    """(`APPROVED` | `DENIED` | ..., exit status): 0 when every item is approved, else 1."""
    if answer.approved:
        return "APPROVED", 0
    decisions = {item.decision for item in answer.items}
    if answer.errors:
        decisions.add("error")
    word = next((d for d in _NOT_APPROVED_ORDER if d in decisions), "unknown")
    return {"unknown": "UNDECIDED", "partial": "PARTLY APPROVED"}.get(word, word.upper()), 1


def review_words(code: str | None) -> str | None:
    return remittance_codes().review_actions.get(code or "")


def reason_words(reason: Reason) -> str | None:
    codes = remittance_codes()
    if reason.kind == "carc":
        carc = codes.carc.get(reason.code)
        return carc.words if carc else reason.display
    if reason.kind == "rarc":
        return codes.rarc.get(reason.code, reason.display)
    return reason.display


def _reason_label(reason: Reason) -> str:
    kind = {"carc": "CARC", "rarc": "RARC", "review": "review reason"}.get(reason.kind, "reason")
    return f"{kind} {reason.code}"


def _money(amount: Amount | None) -> str:
    if amount is None or amount.value is None:
        return "-"
    return f"{amount.value:,.2f}" + (f" {amount.currency}" if amount.currency and amount.currency != "USD" else "")


def _period(period: tuple[str | None, str | None] | None) -> str:
    if not period:
        return ""
    start, end = period
    return f"{start or '?'} to {end or '?'}"


def _item_label(item: ItemAnswer) -> str:
    if item.sequence is None:
        return "request"
    return f"{item.sequence}{' (added)' if item.added else ''}"


def answer_text(answer: PayerAnswer) -> str:
    out: list[str] = []
    use = {"preauthorization": "prior authorization", "claim": "claim", "predetermination": "predetermination"}.get(
        answer.use or "", answer.use or "use not given"
    )
    shape = {"pas": "Da Vinci PAS", "pas-legacy": "PAS reference-implementation style", "core": "FHIR R4"}[answer.style]
    outcome = answer.outcome or "not given"
    out.append(f"Payer answer: ClaimResponse/{answer.id or '(no id)'} ({shape}, {use}), outcome {outcome}")
    if answer.request:
        out.append(f"Request: {answer.request}")
    if answer.disposition:
        out.append(f"Disposition: {answer.disposition}")
    number, period = answer.authorization_number, answer.authorization_period
    if number:
        out.append(f"Authorization: {number}" + (f", valid {_period(period)}" if period else ""))
    out.append("")
    out.append("Items")
    out.append(
        f"  {'#':<11} {'Decision':<34} {'Number':<16} {'Submitted':>11} {'Eligible':>11} {'Benefit':>11}  Reasons"
    )
    for item in answer.items:
        review = f"{item.review_code} " if item.review_code else ""
        words = review_words(item.review_code)
        decision = f"{review}{DECISION_WORDS[item.decision]}" + (f" ({words})" if words else "")
        reasons = ", ".join(_reason_label(r) for r in item.reasons) or "-"
        out.append(
            f"  {_item_label(item):<11} {decision[:34]:<34} {(item.number or '-')[:16]:<16} "
            + " ".join(f"{_money(item.amount(c)):>11}" for c in AMOUNT_COLUMNS)
            + f"  {reasons}"
        )
        if item.period:
            out.append(f"  {'':<11} authorized {_period(item.period)}")
    for total in answer.totals:
        out.append(f"  total {total.category}: {_money(total)}")
    explained = _explanations(answer)
    if explained:
        out.append("")
        out.append("What to do")
        out.extend(explained)
    if answer.errors:
        out.append("")
        out.append("Errors")
        for error in answer.errors:
            where = f"item {error.item}" if error.item is not None else "the request"
            shown = f"{error.code}" + (f" ({error.display})" if error.display else "") if error.code else "-"
            path = f" at {error.path}" if error.path else ""
            out.append(f"  {where}: {shown}{path}")
    if answer.notes:
        out.append("")
        out.append("Payer notes")
        out.extend(f"  - {note}" for note in answer.notes)
    label, status = result_of(answer)
    out.append("")
    out.append(f"Result: {label} (exit {status})")
    return "\n".join(out) + "\n"


def _explanations(answer: PayerAnswer) -> list[str]:
    codes = remittance_codes()
    lines: list[str] = []
    seen: set[tuple[str, str]] = set()
    for item in answer.items:
        where = "The request" if item.sequence is None else f"Item {item.sequence}"
        for reason in item.reasons:
            if (reason.kind, reason.code) in seen:
                continue
            seen.add((reason.kind, reason.code))
            words = reason_words(reason) or "(no words for this code in mappings/remittance.toml)"
            lines.append(f"  {where}: {_reason_label(reason)}: {words}")
            carc = codes.carc.get(reason.code) if reason.kind == "carc" else None
            if carc is not None:
                lines.append(f"    {carc.action}")
                if carc.rules:
                    lines.append(f"    facet-adapter checks this with: {', '.join(carc.rules)}")
        if item.decision in _ADVICE and not item.reasons:
            lines.append(f"  {where}: {_ADVICE[item.decision]}")
        elif item.decision == "denied" and not item.reasons:
            lines.append(
                f"  {where}: denied without a reason code: ask the payer why, and run `facet-adapter check` "
                "on the record."
            )
    return lines


def answer_json(answer: PayerAnswer) -> dict[str, Any]:
    codes = remittance_codes()
    label, code = result_of(answer)

    def reason(r: Reason) -> dict[str, Any]:
        value: dict[str, Any] = {"kind": r.kind, "code": r.code, "system": r.system, "words": reason_words(r)}
        carc = codes.carc.get(r.code) if r.kind == "carc" else None
        if carc is not None:
            value["action"] = carc.action
            value["rules"] = list(carc.rules)
        return value

    return {
        "result": label,
        "exit": code,
        "claimResponse": answer.id,
        "shape": answer.style,
        "use": answer.use,
        "outcome": answer.outcome,
        "disposition": answer.disposition,
        "request": answer.request,
        "authorization": {"number": answer.authorization_number, "period": answer.authorization_period},
        "items": [
            {
                "sequence": item.sequence,
                "added": item.added,
                "decision": item.decision,
                "reviewAction": item.review_code,
                "reviewActionWords": review_words(item.review_code),
                "number": item.number,
                "period": item.period,
                "traceNumber": item.trace_number,
                "adjudication": [
                    {"category": a.category, "amount": a.value, "currency": a.currency, "percent": a.percent}
                    for a in item.amounts
                ],
                "reasons": [reason(r) for r in item.reasons],
            }
            for item in answer.items
        ],
        "errors": [
            {"item": e.item, "code": e.code, "system": e.system, "display": e.display, "path": e.path}
            for e in answer.errors
        ],
        "notes": list(answer.notes),
    }
