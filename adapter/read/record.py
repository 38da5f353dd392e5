"""The patient's record around a session: diagnoses in claim order, the Conditions pain duration is
measured from, and the Coverage (docs/input.md, diagnoses). Evidence is in `evidence.py`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from ..fhir.ingest import Res
from ..fhir.systems import ICD10CM_LIKE
from ..fhir.values import codings, concept_text, dicts, get_dict, get_str, parse_date
from ..icd10 import normalize
from ..model import ConditionOnset, CoverageFacts, Diagnosis, Session
from .access import Access
from .facts import ConditionFacts, PatientFacts

_REFUTED = frozenset({"refuted", "entered-in-error"})
_INACTIVE = frozenset({"inactive", "resolved", "remission"})


def is_radiculopathy(code: str) -> bool:
    compact = code.replace(".", "").upper()
    return compact.startswith(("M541", "M472", "M501", "M511", "M543", "M544")) or compact == "M48062"


def _onset(res: Res) -> tuple[dt.date | None, str | None]:
    """onsetDateTime, else onsetPeriod.start, else recordedDate
    (docs/input.md, supporting conditions and pain duration)."""
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


def _condition_facts(res: Res) -> ConditionFacts:
    """What a Condition says whatever the session (its first ICD-10-CM coding is its code)."""
    data = res.data
    chosen = next(
        ((i, value) for i, system, value, _ in codings(data.get("code")) if system in ICD10CM_LIKE and value), None
    )
    verification = {v for _, _, v, _ in codings(data.get("verificationStatus"))}
    clinical = {v for _, _, v, _ in codings(data.get("clinicalStatus"))}
    abatement_raw = data.get("abatementDateTime")
    if abatement_raw is None and isinstance(data.get("abatementPeriod"), dict):
        abatement_raw = data["abatementPeriod"].get("end") or data["abatementPeriod"].get("start")
    onset, onset_path = _onset(res)
    return ConditionFacts(
        code=normalize(chosen[1]) if chosen is not None else None,
        code_path=f"{res.path}.code.coding[{chosen[0]}]" if chosen is not None else None,
        onset=onset,
        onset_path=onset_path,
        refuted=bool(verification & _REFUTED),
        inactive=bool(clinical & _INACTIVE),
        abatement=parse_date(abatement_raw),
    )


def observation_number(data: dict[str, Any]) -> float | None:
    """The number an Observation records: valueQuantity.value, or valueInteger (a 0-10 score is
    naturally an integer)."""
    for value in (get_dict(data, "valueQuantity").get("value"), data.get("valueInteger")):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


class PatientRecord:
    """The patient's Conditions, Observations, care history, Coverage and authorizations."""

    def __init__(self, access: Access, patient: str, date_of_service: dt.date, facts: PatientFacts) -> None:
        self.access = access
        self.patient = patient
        self.dos = date_of_service
        self.facts = facts  # what this patient's other sessions already derived
        self.conditions: list[ConditionOnset] = []  # filled by diagnoses()
        self.coded_conditions: list[ConditionOnset] = []  # filled by diagnoses()

    def own(self, *types: str) -> list[Res]:
        """The patient's resources of these types, contained ones included (they must resolve too)."""
        return self.access.own(self.patient, *types)

    # -- diagnoses
    def diagnoses(self, session: Session, encounter: Res | None) -> list[Diagnosis]:
        reason_keys = [key for p in session.procedures for key in p.reason_references]
        # Encounter.diagnosis in the order of its `rank` (then as listed).
        encounter_keys: list[str] = []
        if encounter is not None:
            listed = []
            for position, entry in dicts(encounter.data.get("diagnosis")):
                target = self.access.peek(encounter, "diagnosis.condition", entry.get("condition"))
                if target is not None:
                    rank = entry.get("rank") if isinstance(entry.get("rank"), int) else 1_000_000
                    listed.append((rank, position, target.key))
            encounter_keys = [key for _, _, key in sorted(listed)]
        found: dict[str, Diagnosis] = {}
        ordered: list[tuple[int, int, Diagnosis]] = []
        self.conditions = []
        self.coded_conditions = []
        conditions = self.own("Condition")
        for position, res in enumerate(conditions):
            self.access.use(res)
            fact = self.facts.conditions.get(id(res))
            if fact is None:
                fact = self.facts.conditions[id(res)] = _condition_facts(res)
            onset, onset_path = fact.onset, fact.onset_path
            dx = None
            if fact.code is not None and fact.code_path is not None:
                dx = Diagnosis(fact.code, res.key, fact.code_path, onset, onset_path, owner=res.key)
            if dx is not None and not fact.refuted:
                self.coded_conditions.append(
                    ConditionOnset(res.key, onset, onset_path, dx.code, res.key in reason_keys)
                )
            if not self._counts(fact):
                continue
            self.conditions.append(
                ConditionOnset(res.key, onset, onset_path, dx.code if dx else None, res.key in reason_keys)
            )
            if dx is None:
                continue
            from_encounter = res.key in encounter_keys or (
                encounter is not None and self.access.peek(res, "encounter", res.data.get("encounter")) is encounter
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

    def _counts(self, fact: ConditionFacts) -> bool:
        """Not refuted or entered in error, not abated before the date of service, and not
        inactive / resolved / in remission without an abatement date (docs/input.md, diagnoses)."""
        if fact.refuted:
            return False
        if fact.abatement is not None and fact.abatement < self.dos:
            return False
        # abatementString / abatementAge / abatementBoolean are not dates.
        return not (fact.inactive and fact.abatement is None)

    def coverage(self) -> tuple[str | None, CoverageFacts]:
        """The Coverage to bill (the first active one, else the first), and what a payer pack is
        chosen by: the payor's names, identifiers, and the Coverage's type and classes. The same
        for every session of the patient."""
        if self.facts.coverage is None:
            self.facts.coverage = self._coverage()
        return self.facts.coverage

    def _coverage(self) -> tuple[str | None, CoverageFacts]:
        coverages = self.own("Coverage")
        if not coverages:
            return None, CoverageFacts()
        chosen = next((c for c in coverages if get_str(c.data, "status") == "active"), coverages[0])
        self.access.use(chosen)
        names: list[str] = []
        identifiers: list[tuple[str | None, str]] = []
        for _, payor in dicts(chosen.data.get("payor")):
            names.extend(filter(None, [get_str(payor, "display")]))
            identifier = get_dict(payor, "identifier")
            names.extend(filter(None, [get_str(identifier, "value"), get_str(identifier, "system")]))
            identifiers.extend(_identifiers([identifier]))
            target = self.access.peek(chosen, "payor", payor)
            if target is not None and target.type == "Organization":
                self.access.use(target)
                names.extend(filter(None, [get_str(target.data, "name")]))
                names.extend(a for a in target.data.get("alias", []) if isinstance(a, str))
                for _, ident in dicts(target.data.get("identifier")):
                    names.extend(filter(None, [get_str(ident, "value"), get_str(ident, "system")]))
                identifiers.extend(_identifiers(item for _, item in dicts(target.data.get("identifier"))))
        classes: list[tuple[str, str]] = []
        plans: list[str] = []
        for _, entry in dicts(chosen.data.get("class")):
            value = get_str(entry, "value")
            if value is not None:
                classes.extend((code, value) for _, _, code, _ in codings(entry.get("type")) if code)
            plans.extend(filter(None, [get_str(entry, "name"), value]))
        kind = chosen.data.get("type")
        plans.extend(filter(None, [concept_text(kind), *(display for _, _, _, display in codings(kind))]))
        return chosen.key, CoverageFacts(
            payor_names=tuple(names),
            payor_identifiers=tuple(identifiers),
            coverage_types=tuple((system, code) for _, system, code, _ in codings(kind) if code),
            coverage_classes=tuple(classes),
            plan_names=tuple(plans),
        )


def _identifiers(items: Iterable[dict[str, Any]]) -> list[tuple[str | None, str]]:
    return [(get_str(item, "system"), value) for item in items if (value := get_str(item, "value")) is not None]
