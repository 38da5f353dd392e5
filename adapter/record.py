"""The patient's record around a session: diagnoses, evidence (onset, pain and disability scores,
conservative care, relief after earlier blocks, prior authorization) and Coverage (contract §2.4)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from .data import load_toml
from .facets import code_tables, is_facet
from .fhirpath import (
    ICD10CM_LIKE,
    LOINC,
    SNOMED,
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
    reference_of,
)
from .icd10 import normalize
from .ingest import Res, ResourceIndex
from .model import ConditionOnset, Diagnosis, Evidence, EvidenceItem, FacetProcedure, Relief, Session

PAIN_LOINC = "72514-3"
DISABILITY_LOINC = "97909-6"
_REFUTED = frozenset({"refuted", "entered-in-error"})
_INACTIVE = frozenset({"inactive", "resolved", "remission"})
_VOID_OBSERVATION = frozenset({"entered-in-error", "cancelled"})
# A care record that was stopped was still tried; one never started (not-done, not-taken, cancelled) was not.
_VOID_CARE = frozenset({"entered-in-error", "not-done", "not-taken", "cancelled"})


def is_radiculopathy(code: str) -> bool:
    compact = code.replace(".", "").upper()
    return compact.startswith(("M541", "M472", "M501", "M511", "M543", "M544")) or compact == "M48062"


def _onset(res: Res) -> tuple[dt.date | None, str | None]:
    """onsetDateTime, else onsetPeriod.start, else recordedDate (contract §2.4)."""
    data = res.data
    candidates = [
        (data.get("onsetDateTime"), "onsetDateTime"),
        (get_dict(data, "onsetPeriod").get("start"), "onsetPeriod.start"),
        (data.get("recordedDate"), "recordedDate"),
    ]
    for raw, element in candidates:
        day = parse_date(raw)
        if day is not None:
            return day, f"{res.path}.{element}"
    return None, None


def observation_number(data: dict[str, Any]) -> float | None:
    """The number an Observation records: valueQuantity.value, or valueInteger (a 0-10 score is
    naturally an integer)."""
    for value in (get_dict(data, "valueQuantity").get("value"), data.get("valueInteger")):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


class PatientRecord:
    """The patient's Conditions, Observations, care history, Coverage and authorizations."""

    def __init__(self, index: ResourceIndex, patient: str, date_of_service: dt.date) -> None:
        self.index = index
        self.patient = patient
        self.dos = date_of_service
        self.conditions: list[ConditionOnset] = []  # filled by diagnoses()

    def own(self, *types: str) -> list[Res]:
        """The patient's resources of these types, contained ones included (they must resolve too)."""
        found = []
        for res in self.index.of_type(*types, contained=True):
            subject = res.data.get("subject") or res.data.get("patient") or res.data.get("beneficiary")
            if patient_of(self.index, res, subject) == self.patient:
                found.append(res)
        return found

    # -- diagnoses
    def diagnoses(self, session: Session, encounter: Res | None) -> list[Diagnosis]:
        reason_keys = [key for p in session.procedures for key in p.reason_references]
        # Encounter.diagnosis in the order of its `rank` (then as listed).
        encounter_keys: list[str] = []
        if encounter is not None:
            listed = []
            for position, entry in dicts(encounter.data.get("diagnosis")):
                target = self.index.resolve(entry.get("condition"), encounter)
                if target is not None and target.type == "Condition":
                    rank = entry.get("rank") if isinstance(entry.get("rank"), int) else 1_000_000
                    listed.append((rank, position, target.key))
            encounter_keys = [key for _, _, key in sorted(listed)]
        found: dict[str, Diagnosis] = {}
        ordered: list[tuple[int, int, Diagnosis]] = []
        self.conditions = []
        conditions = self.own("Condition")
        for position, res in enumerate(conditions):
            self.index.validate_used(res)
            if not self._counts(res):
                continue
            dx = self._condition(res)
            onset, onset_path = _onset(res)
            self.conditions.append(
                ConditionOnset(res.key, onset, onset_path, dx.code if dx else None, res.key in reason_keys)
            )
            if dx is None:
                continue
            from_encounter = res.key in encounter_keys or (
                encounter is not None and self.index.resolve(res.data.get("encounter"), res) is encounter
            )
            rank = 0 if res.key in reason_keys else (1 if from_encounter else 2)
            if rank == 0:
                order = reason_keys.index(res.key)
            elif res.key in encounter_keys:
                order = encounter_keys.index(res.key)
            else:
                order = len(encounter_keys) + position
            dx.from_reason, dx.from_encounter = rank == 0, from_encounter
            ordered.append((rank, order, dx))
        # reasonReference before reasonCode: a Condition carries onset and status, a bare code does not.
        position = len(reason_keys)
        for proc in session.procedures:
            for code, path in proc.reason_codes:
                position += 1
                ordered.append(
                    (0, position, Diagnosis(code=code, source_key=None, path=path, from_reason=True, owner=proc.key))
                )
        for _, _, dx in sorted(ordered, key=lambda item: (item[0], item[1])):
            if dx.code in found:
                existing = found[dx.code]
                if existing.onset is None and dx.onset is not None:
                    existing.onset, existing.onset_path, existing.source_key = (
                        dx.onset,
                        dx.onset_path,
                        dx.source_key,
                    )
                continue
            found[dx.code] = dx
        return list(found.values())

    def _counts(self, res: Res) -> bool:
        """Not refuted or entered in error, not abated before the date of service, and not
        inactive / resolved / in remission without an abatement date (contract §2.4)."""
        data = res.data
        verification = {v for _, _, v, _ in codings(data.get("verificationStatus"))}
        if verification & _REFUTED:
            return False
        clinical = {v for _, _, v, _ in codings(data.get("clinicalStatus"))}
        abatement_raw = data.get("abatementDateTime")
        if abatement_raw is None and isinstance(data.get("abatementPeriod"), dict):
            abatement_raw = data["abatementPeriod"].get("end") or data["abatementPeriod"].get("start")
        abatement = parse_date(abatement_raw)
        if abatement is not None and abatement < self.dos:
            return False
        # abatementString / abatementAge / abatementBoolean are not dates.
        return not (clinical & _INACTIVE and abatement is None)

    def _condition(self, res: Res) -> Diagnosis | None:
        data = res.data
        code = data.get("code")
        chosen = next(((i, value) for i, system, value, _ in codings(code) if system in ICD10CM_LIKE and value), None)
        if chosen is None:
            return None
        onset, onset_path = _onset(res)
        return Diagnosis(
            code=normalize(chosen[1]),
            source_key=res.key,
            path=f"{res.path}.code.coding[{chosen[0]}]",
            onset=onset,
            onset_path=onset_path,
            owner=res.key,
        )

    # -- evidence
    def evidence(self, prior_auth_option: str | None) -> Evidence:
        evidence = Evidence()
        window_start = add_months(self.dos, -12)
        for res in self.own("Observation"):
            data = res.data
            if get_str(data, "status") in _VOID_OBSERVATION:
                continue
            code = data.get("code")
            loinc = {value for _, system, value, _ in codings(code) if system == LOINC}
            if not loinc & {PAIN_LOINC, DISABILITY_LOINC}:
                continue
            self.index.validate_used(res)
            when_raw, _, element = period_start_end(data, "effective")
            when = parse_date(when_raw) or parse_date(data.get("issued"))
            if when is None or when > self.dos:
                continue
            quantity = get_dict(data, "valueQuantity")
            value = observation_number(data)
            if value is None:
                continue  # a score without a value (dataAbsentReason) is not a score on record
            item = EvidenceItem(
                kind="pain-score" if PAIN_LOINC in loinc else "disability-score",
                source_key=res.key,
                path=f"{res.path}.value" if element is None else f"{res.path}.{element}",
                date=when,
                value=float(value) if value is not None else None,
                unit=get_str(quantity, "unit"),
            )
            if PAIN_LOINC in loinc:
                if when >= window_start:
                    evidence.pain_scores.append(item)
            else:
                evidence.disability_scores.append(item)
        evidence.pain_scores.sort(key=lambda item: item.date or dt.date.min)
        evidence.conservative_care = self._conservative_care()
        evidence.conservative_days = _care_days(evidence.conservative_care, self.dos)
        if prior_auth_option:
            evidence.prior_auth, evidence.prior_auth_source = prior_auth_option, "option"
        else:
            for res in self.own("ClaimResponse"):
                data = res.data
                if get_str(data, "use") != "preauthorization" or get_str(data, "outcome") != "complete":
                    continue
                number = get_str(data, "preAuthRef")
                if not number:
                    continue
                period = get_dict(data, "preAuthPeriod")
                start, end = parse_date(period.get("start")), parse_date(period.get("end"))
                if (start and self.dos < start) or (end and self.dos > end):
                    continue
                self.index.validate_used(res)
                evidence.prior_auth, evidence.prior_auth_source = number, res.key
                break
        return evidence

    def _conservative_care(self) -> list[EvidenceItem]:
        vocab = care_vocabulary()
        items: list[EvidenceItem] = []
        for res in self.own("Procedure", "MedicationStatement", "MedicationRequest"):
            data = res.data
            if get_str(data, "status") in _VOID_CARE:
                continue
            if res.type == "Procedure":
                concept = data.get("code")
                start_raw, end_raw, element = period_start_end(data, "performed")
                open_ended = element == "performedPeriod" and end_raw is None
            elif res.type == "MedicationStatement":
                concept = self._medication_concept(res)
                start_raw, end_raw, element = period_start_end(data, "effective")
                if start_raw is None:
                    start_raw, element = data.get("dateAsserted"), "dateAsserted"
                open_ended = element != "effectiveDateTime" and end_raw is None
            else:
                concept = self._medication_concept(res)
                validity = get_dict(get_dict(data, "dispenseRequest"), "validityPeriod")
                start_raw, end_raw, element = data.get("authoredOn"), validity.get("end"), "authoredOn"
                open_ended = end_raw is None and get_str(data, "status") in ("active", "on-hold", None)
            if res.type == "Procedure" and is_facet(res, code_tables()):
                continue
            kind = vocab.match(concept)
            if kind is None:
                continue
            start = parse_date(start_raw)
            if start is None or start >= self.dos:
                continue
            end = parse_date(end_raw) if end_raw is not None else (self.dos if open_ended else start)
            self.index.validate_used(res)
            items.append(
                EvidenceItem(
                    kind="conservative-care",
                    source_key=res.key,
                    path=f"{res.path}.{element}" if element else res.path,
                    date=start,
                    end=min(end or start, self.dos),
                    text=kind,
                )
            )
        return sorted(items, key=lambda item: item.date or dt.date.min)

    def _medication_concept(self, res: Res) -> Any:
        concept = res.data.get("medicationCodeableConcept")
        if concept is not None:
            return concept
        target = self.index.resolve(res.data.get("medicationReference"), res)
        return target.data.get("code") if target is not None and target.type == "Medication" else None

    def _observations_about(self) -> dict[int, list[Res]]:
        """Observations by the resource they are about (partOf / focus), found once per input."""
        cached = self.index.memo.get("observations-about")
        if isinstance(cached, dict):
            return cached
        about: dict[int, list[Res]] = {}
        for res in self.index.of_type("Observation"):
            if get_str(res.data, "status") in _VOID_OBSERVATION:
                continue
            for _, link in [*dicts(res.data.get("partOf")), *dicts(res.data.get("focus"))]:
                target = self.index.resolve(link, res)
                if target is not None and res not in about.setdefault(id(target), []):
                    about[id(target)].append(res)
        self.index.memo["observations-about"] = about
        return about

    def relief(self, proc: FacetProcedure) -> Relief:
        """Relief after an earlier block, from Observations linked to it by partOf or focus."""
        target = self.index.get(proc.key)
        if target is None:
            return Relief(percent=None, source_keys=[], path=None)
        percents: list[tuple[float, Res]] = []
        pains: list[tuple[dt.datetime | None, dt.date | None, float, Res]] = []
        for res in self._observations_about().get(id(target), []):
            data = res.data
            self.index.validate_used(res)
            quantity = get_dict(data, "valueQuantity")
            value = observation_number(data)
            if value is None:
                continue
            loinc = {v for _, system, v, _ in codings(data.get("code")) if system == LOINC}
            words = " ".join(
                filter(None, [concept_text(data.get("code")), *(d for _, _, _, d in codings(data.get("code")))])
            ).lower()
            if (get_str(quantity, "unit") == "%" or get_str(quantity, "code") == "%") and "relief" in words:
                percents.append((float(value), res))
            elif PAIN_LOINC in loinc:
                when_raw = period_start_end(data, "effective")[0]
                pains.append((parse_instant(when_raw), parse_date(when_raw), float(value), res))
        if percents:
            best, res = max(percents, key=lambda pair: pair[0])
            return Relief(percent=best, source_keys=[res.key], path=f"{res.path}.valueQuantity")
        if len(pains) >= 2:
            return _pain_pair_relief(pains, proc, target)
        return Relief(percent=None, source_keys=[], path=None)

    def coverage(self) -> tuple[str | None, list[str]]:
        coverages = self.own("Coverage")
        if not coverages:
            return None, []
        chosen = next((c for c in coverages if get_str(c.data, "status") == "active"), coverages[0])
        self.index.validate_used(chosen)
        names: list[str] = []
        for _, payor in dicts(chosen.data.get("payor")):
            names.extend(filter(None, [get_str(payor, "display")]))
            identifier = get_dict(payor, "identifier")
            names.extend(filter(None, [get_str(identifier, "value"), get_str(identifier, "system")]))
            target = self.index.resolve(payor, chosen)
            if target is not None and target.type == "Organization":
                self.index.validate_used(target)
                names.extend(filter(None, [get_str(target.data, "name")]))
                names.extend(a for a in target.data.get("alias", []) if isinstance(a, str))
                for _, ident in dicts(target.data.get("identifier")):
                    names.extend(filter(None, [get_str(ident, "value"), get_str(ident, "system")]))
        return chosen.key, names


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


def patient_of(index: ResourceIndex, res: Res, subject: Any) -> str | None:
    if subject is None:
        return None
    target = index.resolve(subject, res)
    if target is not None:
        return target.key
    ref = reference_of(subject)
    if not ref:
        return None
    parts = ref.rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else ref


# --------------------------------------------------------------------------- conservative care words


@dataclass(frozen=True, slots=True)
class CareVocabulary:
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
