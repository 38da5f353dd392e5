"""One hook call, end to end: the facet orders asked about, their record, the library's decision
for each planned session, and the answer (docs/cds-hooks.md, the answer).

Each draft ServiceRequest that is a facet intervention is coded as a planned session (the
`preauthorization` use) by the library, from an index built in memory of the draft orders and the
record, with the pack the Coverage chooses, exactly as `check --use preauthorization` would for
the same record. Other orders are passed over. Every failure after the request was understood is
answered per order (not determined, or a card), never as an HTTP error.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError, NoDateOfServiceError, NoFacetProcedureError
from ..fhir import r4schema
from ..fhir.ingest import ResourceIndex, index_resources
from ..fhir.values import get_dict, get_str, parse_date, reference_of
from ..model import SessionRef
from ..pipeline import Options, Result, process_index
from ..read.catalog import choose_session, facet_catalog
from .assessment import Assessment, assess, error_assessment, timeframe_assessment
from .cards import notice_card, session_card
from .extension import InvariantError, already_said, coverage_information, updated
from .record import PrefetchMissing, Record, ServerAccess, assemble, prefetched_coverages
from .request import HookCall, HookRequestError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Answer:
    cards: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    assessments: list[Assessment] = field(default_factory=list)
    results: dict[str, Result] = field(default_factory=dict)  # the library's result per order

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"cards": self.cards}
        if self.actions:
            body["systemActions"] = self.actions
        return body


def facet_orders(call: HookCall) -> list[dict[str, Any]]:
    """The draft orders asked about that are facet interventions to authorize (draft or active
    facet ServiceRequests, as the library reads them); others are passed over."""
    catalog = facet_catalog(index_resources(call.orders))
    wanted = {
        entry.proc.key
        for entry in catalog.entries
        if entry.proc.resource_type == "ServiceRequest" and entry.proc.billable and call.in_scope(entry.proc.key)
    }
    return [order for order in call.orders if f"{order['resourceType']}/{order['id']}" in wanted]


def answer(call: HookCall, access: ServerAccess, *, now: dt.datetime | None = None) -> Answer:
    """The answer to a validated call. Raises `PrefetchMissing` (HTTP 412) and `HookRequestError`
    (HTTP 400, a facet order that is not valid R4 or not about the context's patient) only."""
    try:
        orders = facet_orders(call)
    except InputError as exc:
        raise HookRequestError(f"context.draftOrders cannot be read: {exc.message}") from None
    if not orders:
        log.info("hook %s: %d order(s), none a facet intervention to authorize", call.log_id, len(call.orders))
        return Answer()
    _check_orders(call, orders)
    keys = [f"ServiceRequest/{order['id']}" for order in orders]
    try:
        result = _answer(call, assemble(call, orders, access), keys, now)
    except PrefetchMissing:
        raise
    except Exception as exc:  # never a 500: a bug answers "not determined" and is logged
        log.error("hook %s: answering failed (%s)", call.log_id, type(exc).__name__)
        result = Answer()
        today = (now or dt.datetime.now(dt.UTC)).date()
        coverage = _fallback_coverage(Record([], coverages=prefetched_coverages(call)))
        for key in keys:
            _error(result, call, key, coverage, today, "The service failed while answering.")
    # CRD's configuration options (davinci-crd.configuration): no updates, and at most so many cards.
    result.cards = result.cards[: call.max_cards]
    if not call.coverage_info:
        result.actions = []
    log.info(
        "hook %s: %d facet order(s): %s",
        call.log_id,
        len(keys),
        ", ".join(f"{a.order} {a.covered}/{a.pa_needed or '-'}" for a in result.assessments) or "no coverage answer",
    )
    return result


def _check_orders(call: HookCall, orders: Sequence[Mapping[str, Any]]) -> None:
    """A facet draft order must be valid R4 (its update must be) and about the context's patient."""
    for order in orders:
        key = f"ServiceRequest/{order['id']}"
        issues = r4schema.validate(order, max_issues=10)
        if issues:
            raise HookRequestError(
                f"Draft order {key} is not valid FHIR R4.", [f"{key}: {i.path}: {i.message}" for i in issues]
            )
        subject = reference_of(order.get("subject")) or ""
        if subject != f"Patient/{call.patient_id}" and not subject.endswith(f"/Patient/{call.patient_id}"):
            raise HookRequestError(f"Draft order {key} is not about context.patientId.")


def _answer(call: HookCall, record: Record, keys: list[str], now: dt.datetime | None) -> Answer:
    result = Answer()
    today = (now or dt.datetime.now(dt.UTC)).date()
    coverage = _fallback_coverage(record)
    if record.problem is not None:
        text = f"The EHR's FHIR server could not be read: {record.problem}"
        for key in keys:
            _error(result, call, key, coverage, today, text)
        return result
    try:
        index = index_resources(record.resources, base_url=call.fhir_server)
    except InputError as exc:
        for key in keys:
            _error(result, call, key, coverage, today, f"The record cannot be read: {exc.message}")
        return result
    sessions: dict[SessionRef, list[str]] = {}
    for key in keys:
        try:
            sessions.setdefault(choose_session(index, "preauthorization", key), []).append(key)
        except NoDateOfServiceError as exc:
            _timeframe(result, call, key, coverage, today, exc.message)
        except NoFacetProcedureError:
            log.info("hook %s: %s is not a facet procedure to authorize; passed over", call.log_id, key)
    for session_keys in sessions.values():
        _answer_session(result, call, index, record, session_keys, now)
    return result


def _answer_session(
    result: Answer,
    call: HookCall,
    index: ResourceIndex,
    record: Record,
    keys: Sequence[str],
    now: dt.datetime | None,
) -> None:
    today = (now or dt.datetime.now(dt.UTC)).date()
    coverage = _fallback_coverage(record)
    try:
        library = process_index(index, Options(use="preauthorization", focus=keys[0], now=now))
    except InputError as exc:
        for key in keys:
            _error(result, call, key, coverage, today, f"The record cannot be coded: {exc.message}")
        return
    decision = library.decision
    insurer = decision.parties.payer.display if decision.parties.payer is not None else library.pack.title
    if decision.coverage is None:
        result.cards.append(
            notice_card(
                "No coverage on record: coverage requirements cannot be determined",
                "The patient's record has no Coverage, so the service cannot say whether the order is covered "
                "or needs prior authorization. Record the patient's insurance and sign the order again.",
                insurer=insurer,
                version=call.crd_version,
                orders=keys,
            )
        )
        return
    active = _in_force(index, decision.coverage, decision.date)
    session: list[Assessment] = []
    for key in keys:
        result.results[key] = library
        try:
            assessment = assess(decision, key, library.pack, hook=call.hook, coverage_active=active)
            extension = coverage_information(assessment, call.crd_version)
        except InvariantError as exc:
            log.error("hook %s: coverage information for %s broke an invariant: %s", call.log_id, key, exc)
            _error(result, call, key, decision.coverage, today, "The service failed while writing the answer.")
            continue
        session.append(assessment)
        _update(result, call, key, assessment, extension)
    card = session_card(
        session,
        decision,
        insurer=insurer,
        pa_severity=library.pack.rule("prior-auth-required").severity,
        version=call.crd_version,
    )
    if card is not None:
        result.cards.append(card)


def _update(result: Answer, call: HookCall, key: str, assessment: Assessment, extension: Mapping[str, Any]) -> None:
    result.assessments.append(assessment)
    order = next(o for o in call.orders if f"{o['resourceType']}/{o['id']}" == key)
    if already_said(order, extension):
        return  # CRD: no update when nothing is new
    result.actions.append(
        {"type": "update", "description": f"Coverage information for {key}", "resource": updated(order, extension)}
    )


def _error(result: Answer, call: HookCall, key: str, coverage: str | None, day: dt.date, text: str) -> None:
    if coverage is None:
        result.cards.append(
            notice_card(
                "Coverage requirements could not be determined",
                text,
                insurer="Coverage requirements",
                version=call.crd_version,
                orders=[key],
            )
        )
        return
    assessment = error_assessment(key, coverage, day, text)
    _update(result, call, key, assessment, coverage_information(assessment, call.crd_version))


def _timeframe(result: Answer, call: HookCall, key: str, coverage: str | None, day: dt.date, text: str) -> None:
    if coverage is None:
        _error(result, call, key, None, day, text)
        return
    assessment = timeframe_assessment(key, coverage, day, text)
    _update(result, call, key, assessment, coverage_information(assessment, call.crd_version))


def _fallback_coverage(record: Record) -> str | None:
    """The Coverage an error answer is about: the first active one at hand, else the first."""
    ranked = sorted(record.coverages, key=lambda c: c.get("status") != "active")
    for coverage in ranked:
        if isinstance(coverage.get("id"), str):
            return f"Coverage/{coverage['id']}"
    return None


def _in_force(index: ResourceIndex, coverage: str, day: dt.date) -> bool:
    """Whether the Coverage is active and its period covers the date of service."""
    found = index.get(coverage)
    if found is None:
        return True  # named but not at hand: nothing says it is not in force
    data = found.data
    if get_str(data, "status") != "active":
        return False
    period = get_dict(data, "period")
    start, end = parse_date(period.get("start")), parse_date(period.get("end"))
    return not ((start is not None and day < start) or (end is not None and day > end))
