"""Evidence around a session: pain and disability scores, conservative care, relief after earlier
blocks and a prior authorization on record (docs/input.md, evidence)."""

from __future__ import annotations

import datetime as dt
import re
from functools import cache
from typing import Any, NamedTuple

from ..fhir.ingest import Res
from ..fhir.systems import LOINC, SNOMED
from ..fhir.values import (
    add_months,
    codings,
    concept_text,
    concept_words,
    dicts,
    get_dict,
    get_str,
    parse_date,
    parse_instant,
    period_start_end,
)
from ..model import Evidence, EvidenceItem, FacetProcedure, InvalidValue, Relief
from ..tables import load_toml
from .access import Access
from .facets import code_tables, is_facet
from .facts import Care, Score
from .record import PatientRecord, observation_number
from .uses import DISABILITY_LOINC, PAIN_LOINC

_VOID_OBSERVATION = frozenset({"entered-in-error", "cancelled"})
# A care record that was stopped was still tried; one never started (not-done, not-taken, cancelled) was not.
_VOID_CARE = frozenset({"entered-in-error", "not-done", "not-taken", "cancelled"})


def read_evidence(record: PatientRecord, prior_auth_option: str | None) -> Evidence:
    """Pain and disability scores, conservative care and a prior authorization on record."""
    evidence = Evidence()
    window_start = add_months(record.dos, -12)
    if record.facts.scores is None:
        record.facts.scores = _scores(record)
    for score in record.facts.scores:
        when, value, pain = score.when, score.value, score.pain
        if when is None or when > record.dos:
            continue
        if value is None:
            continue  # a score without a value (dataAbsentReason) is not a score on record
        if pain and when < window_start:
            continue
        invalid = out_of_scale(score.res, value, "pain score" if pain else "Oswestry disability index")
        if invalid is not None:
            evidence.invalid.append(invalid)
            continue
        item = EvidenceItem(
            kind="pain-score" if pain else "disability-score",
            source_key=score.res.key,
            path=score.path,
            date=when,
            value=float(value),
            unit=score.unit,
        )
        (evidence.pain_scores if pain else evidence.disability_scores).append(item)
    evidence.pain_scores.sort(key=lambda item: item.date or dt.date.min)
    evidence.conservative_care = _conservative_care(record)
    evidence.conservative_days = _care_days(evidence.conservative_care, record.dos)
    if prior_auth_option:
        evidence.prior_auth, evidence.prior_auth_source = prior_auth_option, "option"
    else:
        for res in record.own("ClaimResponse"):
            # Imported here: few records hold a ClaimResponse, and a one-file run starts faster without it.
            from ..claimresponse.answer import authorization

            granted = authorization(res.data)
            if granted is None:
                continue
            number, period = granted
            start, end = (parse_date(period[0]), parse_date(period[1])) if period else (None, None)
            if (start and record.dos < start) or (end and record.dos > end):
                continue
            record.access.use(res)
            evidence.prior_auth, evidence.prior_auth_source = number, res.key
            break
    return evidence


def _scores(record: PatientRecord) -> list[Score]:
    """The patient's pain and disability Observations, whatever the session (each checked)."""
    found: list[Score] = []
    for res in record.own("Observation"):
        data = res.data
        if get_str(data, "status") in _VOID_OBSERVATION:
            continue
        code = data.get("code")
        loinc = {value for _, system, value, _ in codings(code) if system == LOINC}
        if not loinc & {PAIN_LOINC, DISABILITY_LOINC}:
            continue
        record.access.use(res)
        when_raw, _, element = period_start_end(data, "effective")
        found.append(
            Score(
                res=res,
                pain=PAIN_LOINC in loinc,
                when=parse_date(when_raw) or parse_date(data.get("issued")),
                value=observation_number(data),
                path=f"{res.path}.value" if element is None else f"{res.path}.{element}",
                unit=get_str(get_dict(data, "valueQuantity"), "unit"),
            )
        )
    return found


# What each evidence value measures and its scale (docs/input.md, pain and disability scores).
_SCALES: dict[str, tuple[float, float, str]] = {
    "pain score": (0, 10, "0-10"),
    "Oswestry disability index": (0, 100, "0-100"),
    "relief percent": (0, 100, "0-100 %"),
}


def out_of_scale(res: Res, value: float, what: str) -> InvalidValue | None:
    """The value as an invalid one when it is outside its scale (evidence-invalid), else None."""
    low, high, scale = _SCALES[what]
    if low <= value <= high:
        return None
    element = "valueInteger" if "valueInteger" in res.data else "valueQuantity.value"
    return InvalidValue(res.key, f"{res.path}.{element}", what, value, scale)


def _conservative_care(record: PatientRecord) -> list[EvidenceItem]:
    if record.facts.care is None:
        record.facts.care = _care_records(record)
    items: list[EvidenceItem] = []
    for care in record.facts.care:
        start = parse_date(care.start_raw)
        if start is None or start >= record.dos:
            continue
        if care.end_raw is not None:
            end = parse_date(care.end_raw)
        else:
            end = record.dos if care.open_ended else start
        record.access.use(care.res)
        items.append(
            EvidenceItem(
                kind="conservative-care",
                source_key=care.res.key,
                path=care.path,
                date=start,
                end=min(end or start, record.dos),
                text=care.kind,
            )
        )
    return sorted(items, key=lambda item: item.date or dt.date.min)


def _care_records(record: PatientRecord) -> list[Care]:
    """The patient's conservative-care records, whatever the session: the session keeps those
    started before its date of service."""
    vocab = care_vocabulary()
    found: list[Care] = []
    for res in record.own("Procedure", "MedicationStatement", "MedicationRequest"):
        data = res.data
        if get_str(data, "status") in _VOID_CARE:
            continue
        if res.type == "Procedure":
            concept = data.get("code")
            start_raw, end_raw, element = period_start_end(data, "performed")
            open_ended = element == "performedPeriod" and end_raw is None
        elif res.type == "MedicationStatement":
            concept = _medication_concept(record, res)
            start_raw, end_raw, element = period_start_end(data, "effective")
            if start_raw is None:
                start_raw, element = data.get("dateAsserted"), "dateAsserted"
            open_ended = element != "effectiveDateTime" and end_raw is None
        else:
            concept = _medication_concept(record, res)
            validity = get_dict(get_dict(data, "dispenseRequest"), "validityPeriod")
            start_raw, end_raw, element = data.get("authoredOn"), validity.get("end"), "authoredOn"
            open_ended = end_raw is None and get_str(data, "status") in ("active", "on-hold", None)
        if res.type == "Procedure" and is_facet(res, code_tables()):
            continue
        kind = vocab.match(concept)
        if kind is None:
            continue
        path = f"{res.path}.{element}" if element else res.path
        found.append(Care(res, kind, start_raw, end_raw, open_ended, path))
    return found


def _medication_concept(record: PatientRecord, res: Res) -> Any:
    concept = res.data.get("medicationCodeableConcept")
    if concept is not None:
        return concept
    target = record.access.resolve(res, "medicationReference", res.data.get("medicationReference"))
    return target.data.get("code") if target is not None else None


def _observations_about(access: Access) -> dict[int, list[Res]]:
    """Observations by the resource they are about (partOf / focus), found once per input."""
    cached = access.index.memo.get("observations-about")
    if isinstance(cached, dict):
        return cached
    about: dict[int, list[Res]] = {}
    for res in access.scan("Observation"):
        if get_str(res.data, "status") in _VOID_OBSERVATION:
            continue
        for element, link in [
            *(("partOf", link) for _, link in dicts(res.data.get("partOf"))),
            *(("focus", link) for _, link in dicts(res.data.get("focus"))),
        ]:
            target = access.peek(res, element, link)
            if target is not None and res not in about.setdefault(id(target), []):
                about[id(target)].append(res)
    access.index.memo["observations-about"] = about
    return about


def read_relief(record: PatientRecord, proc: FacetProcedure) -> Relief:
    """Relief after an earlier block, from Observations linked to it by partOf or focus: the same
    for every later session of the patient."""
    kept = record.facts.reliefs.get(proc.key)
    if kept is None:
        kept = record.facts.reliefs[proc.key] = _relief(record, proc)
    return kept


def _relief(record: PatientRecord, proc: FacetProcedure) -> Relief:
    target = record.access.get(proc.key)
    if target is None:
        return Relief(percent=None, source_keys=[], path=None)
    percents: list[tuple[float, Res]] = []
    pains: list[tuple[dt.datetime | None, dt.date | None, float, Res]] = []
    invalid: list[InvalidValue] = []
    for res in _observations_about(record.access).get(id(target), []):
        data = res.data
        record.access.use(res)
        quantity = get_dict(data, "valueQuantity")
        value = observation_number(data)
        if value is None:
            continue
        loinc = {v for _, system, v, _ in codings(data.get("code")) if system == LOINC}
        words = " ".join(
            filter(None, [concept_text(data.get("code")), *(d for _, _, _, d in codings(data.get("code")))])
        ).lower()
        if (get_str(quantity, "unit") == "%" or get_str(quantity, "code") == "%") and "relief" in words:
            bad = out_of_scale(res, value, "relief percent")
            if bad is None:
                percents.append((float(value), res))
            else:
                invalid.append(bad)
        elif PAIN_LOINC in loinc:
            bad = out_of_scale(res, value, "pain score")
            if bad is not None:
                invalid.append(bad)
                continue
            when_raw = period_start_end(data, "effective")[0]
            pains.append((parse_instant(when_raw), parse_date(when_raw), float(value), res))
    relief = Relief(percent=None, source_keys=[], path=None)
    if percents:
        best, res = max(percents, key=lambda pair: pair[0])
        relief = Relief(percent=best, source_keys=[res.key], path=f"{res.path}.valueQuantity")
    elif len(pains) >= 2:
        relief = _pain_pair_relief(pains, proc, target)
    relief.invalid = invalid
    return relief


def _pain_pair_relief(
    pains: list[tuple[dt.datetime | None, dt.date | None, float, Res]],
    proc: FacetProcedure,
    target: Res | None,
) -> Relief:
    """(before - after) / before from linked 0-10 scores: the last score before the procedure and
    the first after it (the block's effect, not a later follow-up); with times unknown, the earliest
    and the latest."""
    procedure_time = parse_instant(period_start_end(target.data, "performed")[0]) if target is not None else None
    before = after = None
    if procedure_time is not None and all(p[0] is not None for p in pains):
        befores = [p for p in pains if p[0] is not None and p[0] < procedure_time]
        afters = [p for p in pains if p[0] is not None and p[0] > procedure_time]
        if befores and afters:
            before = max(befores, key=lambda p: p[0] or procedure_time)
            after = min(afters, key=lambda p: p[0] or procedure_time)
    if before is None or after is None:

        def when(p: tuple[dt.datetime | None, dt.date | None, float, Res]) -> tuple[dt.date, float]:
            # Calendar date first (as written); a time orders scores within a day.
            day = p[1] or (p[0].date() if p[0] else dt.date.min)
            return day, p[0].timestamp() if p[0] else float("-inf")

        ordered = sorted(pains, key=when)
        before, after = ordered[0], ordered[-1]
    if before[2] <= 0:
        return Relief(percent=None, source_keys=[before[3].key, after[3].key], path=None)
    percent = (before[2] - after[2]) / before[2] * 100.0
    return Relief(percent=percent, source_keys=[before[3].key, after[3].key], path=f"{after[3].path}.valueQuantity")


def _care_days(items: list[EvidenceItem], dos: dt.date) -> int | None:
    if not items:
        return None
    start = min(item.date for item in items if item.date is not None)
    end = max(min(item.end or item.date or dos, dos) for item in items)
    return max((end - start).days, 0)


# --------------------------------------------------------------------------- conservative care words


class CareVocabulary(NamedTuple):
    snomed: dict[str, str]
    words: list[tuple[str, Any]]

    def match(self, concept: Any) -> str | None:
        for _, system, value, _ in codings(concept):
            if system == SNOMED and value in self.snomed:
                return self.snomed[value]
        text = concept_words(concept) or ""
        for kind, pattern in self.words:
            if pattern.search(text):
                return kind
        return None


@cache
def care_vocabulary() -> CareVocabulary:
    raw = load_toml("conservative-care.toml")
    kinds = raw["kinds"]
    words = [
        (str(entry.get("label", kind)), re.compile(str(entry["pattern"]), re.IGNORECASE))
        for kind, entry in kinds.items()
    ]
    snomed = {
        str(code): str(entry.get("label", kind)) for kind, entry in kinds.items() for code in entry.get("snomed", [])
    }
    return CareVocabulary(snomed=snomed, words=words)
