"""A payer's answer, read from a ClaimResponse or a Da Vinci PAS response (docs/payer.md, reading an
answer): per item the decision, the authorization number and period, the adjudication amounts and
the reasons, and the answer's errors and notes.

Entry points: `read_answer(data)` (a ClaimResponse, a PAS response Bundle, an `$inquire` Parameters
or a Subscription notification holding one) and `authorization(resource)` (the prior authorization
a ClaimResponse grants, if any; the reader's view of "prior auth on record").

Three shapes are read:
- PAS 2.x: the decision is `extension-reviewAction` (its `extension-reviewActionCode`, X12 306) on
  `item.adjudication`, on `addItem.adjudication` (a modified authorization) or on the header
  `adjudication`; the number is the review action's `number`, else `preAuthRef`;
- the PAS reference implementation's older style: `ClaimResponse.extension` reviewAction with the
  code as a string, for the request as a whole;
- R4 core: no review action; the decision follows from `outcome` and the item adjudications
  (a `benefit` of zero is a denial).
Input is untrusted: odd shapes give `unknown`, never an exception.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import InputError
from ..fhir.values import codings, dicts, get_dict, get_str, reference_of
from ..read.uses import AUTHORIZING_REVIEW_ACTIONS

PAS_EXT = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"
REVIEW_ACTION = PAS_EXT + "extension-reviewAction"
REVIEW_ACTION_CODE = PAS_EXT + "extension-reviewActionCode"
REVIEW_ACTION_REASON = PAS_EXT + "extension-reviewActionReason"  # the reference implementation's
ITEM_PREAUTH_PERIOD = PAS_EXT + "extension-itemPreAuthPeriod"
ITEM_TRACE_NUMBER = PAS_EXT + "extension-itemTraceNumber"
ERROR_PATH = PAS_EXT + "extension-errorPath"
ERROR_ELEMENT = PAS_EXT + "extension-errorElement"
ERROR_FOLLOWUP = PAS_EXT + "extension-errorFollowupAction"
X12_306 = "https://codesystem.x12.org/005010/306"
CARC_SYSTEM = "https://x12.org/codes/claim-adjustment-reason-codes"
RARC_SYSTEM = "https://x12.org/codes/remittance-advice-remark-codes"
_CARC_SYSTEMS = frozenset({CARC_SYSTEM, "http://x12.org/codes/claim-adjustment-reason-codes"})
_RARC_SYSTEMS = frozenset({RARC_SYSTEM, "http://x12.org/codes/remittance-advice-remark-codes"})

Decision = Literal["approved", "partial", "modified", "denied", "pended", "cancelled", "error", "unknown"]
Style = Literal["pas", "pas-legacy", "core"]
ReasonKind = Literal["carc", "rarc", "review", "other"]

# X12 306 review action codes (as the PAS IG and its examples use them) → what they decide.
REVIEW_DECISIONS: dict[str, Decision] = {
    "A1": "approved",
    "A2": "partial",
    "A3": "denied",
    "A4": "pended",
    "A6": "modified",
    "C": "cancelled",
    "CT": "pended",
    "NA": "approved",
}
# A prior authorization is granted by a certified item: in total, in part, or modified.
AUTHORIZING: frozenset[Decision] = frozenset(REVIEW_DECISIONS[code] for code in AUTHORIZING_REVIEW_ACTIONS)


class NotAPayerAnswerError(InputError):
    """The file holds no ClaimResponse (nor a PAS response Bundle, `$inquire` result or notification)."""

    issue_code = "not-supported"


@dataclass(frozen=True, slots=True)
class Reason:
    kind: ReasonKind
    code: str
    system: str | None = None
    display: str | None = None


@dataclass(frozen=True, slots=True)
class Amount:
    category: str
    value: float | None = None
    currency: str | None = None
    percent: float | None = None
    reason: Reason | None = None


@dataclass(frozen=True, slots=True)
class ItemAnswer:
    sequence: int | None  # None: the request as a whole
    decision: Decision
    review_code: str | None = None  # X12 306, as written
    number: str | None = None  # the authorization (or review) number
    period: tuple[str | None, str | None] | None = None
    amounts: tuple[Amount, ...] = ()
    reasons: tuple[Reason, ...] = ()
    trace_number: str | None = None
    added: bool = False  # an addItem: what the payer authorized instead (a modification)
    notes: tuple[str, ...] = ()

    def amount(self, category: str) -> Amount | None:
        return next((a for a in self.amounts if a.category == category), None)


@dataclass(frozen=True, slots=True)
class PayerError:
    item: int | None
    code: str | None
    system: str | None = None
    display: str | None = None
    path: str | None = None
    followup: str | None = None


@dataclass(frozen=True, slots=True)
class PayerAnswer:
    style: Style
    resource: dict[str, Any] = field(repr=False)
    container: Literal["ClaimResponse", "Bundle", "Parameters", "notification"]
    id: str | None
    use: str | None
    status: str | None
    outcome: str | None
    disposition: str | None
    request: str | None
    preauth_ref: str | None
    preauth_period: tuple[str | None, str | None] | None
    items: tuple[ItemAnswer, ...]
    errors: tuple[PayerError, ...]
    notes: tuple[str, ...]
    totals: tuple[Amount, ...]

    @property
    def approved(self) -> bool:
        """Every item approved (the exit status 0 of `response` and `submit`)."""
        return bool(self.items) and all(item.decision == "approved" for item in self.items) and self.outcome != "error"

    @property
    def pended(self) -> bool:
        return any(item.decision == "pended" for item in self.items)

    @property
    def authorizes(self) -> bool:
        return any(item.decision in AUTHORIZING for item in self.items)

    @property
    def authorization_number(self) -> str | None:
        """The number of what was authorized; a denied or pended answer authorizes nothing (the
        reference implementation writes its own id into `preAuthRef` whatever the decision)."""
        if not self.authorizes:
            return None
        return self.preauth_ref or next(
            (item.number for item in self.items if item.decision in AUTHORIZING and item.number), None
        )

    @property
    def authorization_period(self) -> tuple[str | None, str | None] | None:
        if not self.authorizes:
            return None
        return self.preauth_period or next(
            (item.period for item in self.items if item.decision in AUTHORIZING and item.period), None
        )


# --------------------------------------------------------------------------- finding the ClaimResponse


def read_answer(data: Any) -> PayerAnswer:
    """The payer's answer in `data`; NotAPayerAnswerError (exit 2) when there is none."""
    found = _claim_response(data)
    if found is None:
        kind = data.get("resourceType") if isinstance(data, Mapping) else type(data).__name__
        raise NotAPayerAnswerError(
            f"This is a {kind!s:.40}, not a ClaimResponse or a PAS response Bundle: nothing to explain."
        )
    resource, container = found
    return read_claim_response(resource, container=container)


def _claim_response(
    data: Any,
) -> tuple[dict[str, Any], Literal["ClaimResponse", "Bundle", "Parameters", "notification"]] | None:
    if not isinstance(data, dict):
        return None
    kind = data.get("resourceType")
    if kind == "ClaimResponse":
        return data, "ClaimResponse"
    if kind == "Bundle":
        resources = [r for _, e in dicts(data.get("entry")) if isinstance(r := e.get("resource"), dict)]
        # A PAS response Bundle holds its ClaimResponse first; a broken one is read where it is.
        for resource in resources:
            if resource.get("resourceType") == "ClaimResponse":
                return resource, "Bundle"
        # A Subscription notification (history Bundle) carries the whole PAS response Bundle.
        for resource in resources:
            inner = _claim_response(resource) if resource.get("resourceType") == "Bundle" else None
            if inner is not None:
                return inner[0], "notification"
        return None
    if kind == "Parameters":  # the answer of Claim/$inquire
        for _, parameter in dicts(data.get("parameter")):
            inner = _claim_response(parameter.get("resource"))
            if inner is not None:
                return inner[0], "Parameters"
    return None


# --------------------------------------------------------------------------- reading it


def read_claim_response(
    resource: dict[str, Any],
    *,
    container: Literal["ClaimResponse", "Bundle", "Parameters", "notification"] = "ClaimResponse",
) -> PayerAnswer:
    outcome = get_str(resource, "outcome")
    legacy = _legacy_review(resource)
    items = [_item(item, False, outcome) for _, item in dicts(resource.get("item"))]
    items += [_item(item, True, outcome) for _, item in dicts(resource.get("addItem"))]
    header = _header_review(resource)
    style: Style = "pas" if any(i.review_code for i in items) or header is not None else "core"
    if header is not None:
        # A review action on the header adjudication decides the items that carry none.
        items = [i if i.review_code else _with_review(i, header) for i in items] or [_with_review(None, header)]
    if legacy is not None:
        style = "pas-legacy"
        items = [_with_review(i, legacy) for i in items] if items else [_with_review(None, legacy)]
    if style == "core":
        # An item the payer paid nothing for but replaced with items of its own (R4 `addItem`
        # naming it) was modified, not denied.
        replaced = {i.sequence for i in items if i.added}
        items = [
            ItemAnswer(**{**_fields(i), "decision": "modified"})
            if not i.added and i.decision == "denied" and i.sequence in replaced
            else i
            for i in items
        ]
    if not items:
        items = [ItemAnswer(sequence=None, decision=_core_decision(outcome, None, resource))]
    errors = tuple(_errors(resource))
    if outcome == "error" and not errors:
        errors = (PayerError(item=None, code=None, display="The payer reports an error (outcome error)."),)
    # An error fails the items it names (all of them when it names none) when the payer says the
    # processing failed (`error`, or `partial` for the items named); on a `complete` answer the
    # review actions decide and the errors are listed beside them.
    if errors and outcome in ("error", "partial"):
        failed = {e.item for e in errors} if outcome == "error" else {e.item for e in errors} - {None}
        items = [
            ItemAnswer(**{**_fields(i), "decision": "error"}) if None in failed or i.sequence in failed else i
            for i in items
        ]
    period = get_dict(resource, "preAuthPeriod")
    return PayerAnswer(
        style=style,
        resource=resource,
        container=container,
        id=get_str(resource, "id"),
        use=get_str(resource, "use"),
        status=get_str(resource, "status"),
        outcome=outcome,
        disposition=get_str(resource, "disposition"),
        request=reference_of(resource.get("request")),
        preauth_ref=get_str(resource, "preAuthRef"),
        preauth_period=(get_str(period, "start"), get_str(period, "end")) if period else None,
        items=tuple(items),
        errors=errors,
        notes=tuple(text for _, note in dicts(resource.get("processNote")) if (text := get_str(note, "text"))),
        totals=tuple(_amount(total) for _, total in dicts(resource.get("total"))),
    )


@dataclass(frozen=True, slots=True)
class _Review:
    code: str | None
    number: str | None
    reasons: tuple[Reason, ...]


def _fields(item: ItemAnswer) -> dict[str, Any]:
    return {name: getattr(item, name) for name in ItemAnswer.__slots__}


def _with_review(item: ItemAnswer | None, review: _Review) -> ItemAnswer:
    base = item if item is not None else ItemAnswer(sequence=None, decision="unknown")
    return ItemAnswer(
        **{
            **_fields(base),
            "review_code": review.code,
            "decision": REVIEW_DECISIONS.get(review.code or "", "unknown"),
            "number": base.number or review.number,
            "reasons": (*base.reasons, *review.reasons),
        }
    )


def _review(extensions: Any) -> _Review | None:
    """The PAS reviewAction among `extensions`: its X12 306 code, number and reasons."""
    for _, extension in dicts(extensions):
        if get_str(extension, "url") != REVIEW_ACTION:
            continue
        code = number = None
        reasons: list[Reason] = []
        for _, part in dicts(extension.get("extension")):
            url = get_str(part, "url")
            if url in (REVIEW_ACTION_CODE, "code"):
                code = next((c for _, _, c, _ in codings(part.get("valueCodeableConcept")) if c), None)
            elif url == "number":
                number = get_str(part, "valueString")
            elif url == "reasonCode":
                for _, system, value, display in codings(part.get("valueCodeableConcept")):
                    if value:
                        reasons.append(Reason("review", value, system, display))
        return _Review(code, number, tuple(reasons))
    return None


def _legacy_review(resource: Mapping[str, Any]) -> _Review | None:
    """The reference implementation's style: `ClaimResponse.extension` reviewAction as a string."""
    for _, extension in dicts(resource.get("extension")):
        if get_str(extension, "url") == REVIEW_ACTION:
            code = get_str(extension, "valueString") or get_str(extension, "valueCode")
            if code is None:
                continue
            reasons = tuple(
                Reason("review", value, None, None)
                for _, ext in dicts(resource.get("extension"))
                if get_str(ext, "url") == REVIEW_ACTION_REASON and (value := get_str(ext, "valueString"))
            )
            code = code.strip().upper()
            number = get_str(resource, "preAuthRef") if REVIEW_DECISIONS.get(code) in AUTHORIZING else None
            return _Review(code, number, reasons)
    return None


def _header_review(resource: Mapping[str, Any]) -> _Review | None:
    for _, adjudication in dicts(resource.get("adjudication")):
        review = _review(adjudication.get("extension"))
        if review is not None:
            return review
    return None


def _item(item: Mapping[str, Any], added: bool, outcome: str | None) -> ItemAnswer:
    amounts = tuple(_amount(adjudication) for _, adjudication in dicts(item.get("adjudication")))
    review = next(
        (r for _, a in dicts(item.get("adjudication")) if (r := _review(a.get("extension"))) is not None), None
    )
    sequences = item.get("itemSequence")
    sequence = (
        sequences if isinstance(sequences, int) else next((s for s in sequences or [] if isinstance(s, int)), None)
    )
    period = next(
        (
            (get_str(get_dict(e, "valuePeriod"), "start"), get_str(get_dict(e, "valuePeriod"), "end"))
            for _, e in dicts(item.get("extension"))
            if get_str(e, "url") == ITEM_PREAUTH_PERIOD
        ),
        None,
    )
    trace = next(
        (
            get_str(get_dict(e, "valueIdentifier"), "value")
            for _, e in dicts(item.get("extension"))
            if get_str(e, "url") == ITEM_TRACE_NUMBER
        ),
        None,
    )
    reasons = tuple(a.reason for a in amounts if a.reason is not None)
    answer = ItemAnswer(
        sequence=sequence,
        decision="unknown",
        period=period,
        amounts=amounts,
        reasons=reasons,
        trace_number=trace,
        added=added,
    )
    if review is not None:
        return _with_review(answer, review)
    return ItemAnswer(**{**_fields(answer), "decision": _core_decision(outcome, answer, None)})


def _core_decision(outcome: str | None, item: ItemAnswer | None, resource: Mapping[str, Any] | None) -> Decision:
    """Without a review action: queued is pended, error is error; an item with a benefit of zero is
    denied, one with a benefit (or, without one, an eligible amount) above zero approved; a
    preauthorization answered `complete` with a number approves the request."""
    if outcome == "queued":
        return "pended"
    if outcome == "error":
        return "error"
    if item is not None:
        benefit = item.amount("benefit") or item.amount("eligible")
        if benefit is not None and benefit.value is not None:
            return "approved" if benefit.value > 0 else "denied"
        return "unknown"
    if resource is not None and outcome == "complete" and get_str(resource, "preAuthRef"):
        return "approved"
    return "unknown"


def _amount(adjudication: Mapping[str, Any]) -> Amount:
    category = next((c for _, _, c, _ in codings(adjudication.get("category")) if c), None) or "unknown"
    money = get_dict(adjudication, "amount")
    value = money.get("value")
    percent = adjudication.get("value")
    return Amount(
        category=category,
        value=float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None,
        currency=get_str(money, "currency"),
        percent=float(percent) if isinstance(percent, int | float) and not isinstance(percent, bool) else None,
        reason=_reason(adjudication.get("reason")),
    )


def _reason(concept: Any) -> Reason | None:
    for _, system, code, display in codings(concept):
        if not code:
            continue
        kind: ReasonKind = "carc" if system in _CARC_SYSTEMS else "rarc" if system in _RARC_SYSTEMS else "other"
        return Reason(kind, code, system, display)
    return None


def _errors(resource: Mapping[str, Any]) -> Iterator[PayerError]:
    for _, error in dicts(resource.get("error")):
        coding = next(((s, c, d) for _, s, c, d in codings(error.get("code")) if c), (None, None, None))
        path = followup = None
        for _, extension in dicts(error.get("extension")):
            url = get_str(extension, "url")
            if url == ERROR_PATH:
                path = get_str(extension, "valueString")
            elif url == ERROR_FOLLOWUP:
                followup = next((c for _, _, c, _ in codings(extension.get("valueCodeableConcept")) if c), None)
            elif url == ERROR_ELEMENT and path is None:
                path = next(
                    (get_str(part, "valueString") for _, part in dicts(extension.get("extension"))),
                    None,
                )
        sequence = error.get("itemSequence")
        yield PayerError(
            item=sequence if isinstance(sequence, int) else None,
            code=coding[1],
            system=coding[0],
            display=coding[2],
            path=path,
            followup=followup,
        )


def authorization(resource: Mapping[str, Any]) -> tuple[str, tuple[str | None, str | None] | None] | None:
    """The prior authorization a preauthorization ClaimResponse grants: (number, period) when an
    item (or, in the older style, the request) is certified, or, without review actions, when the
    answer is `complete` with a `preAuthRef`. A denied or pended answer grants nothing."""
    if not isinstance(resource, dict) or get_str(resource, "use") != "preauthorization":
        return None
    answer = read_claim_response(resource)
    if answer.style == "core":
        if answer.outcome != "complete" or not answer.preauth_ref:
            return None
        return answer.preauth_ref, answer.preauth_period
    number = answer.authorization_number
    return (number, answer.authorization_period) if number else None
