"""What the reader derives from one patient's record whatever the session: found at most once per
input and shared by that patient's sessions (a bulk export codes every session of a patient
against the same index, two or three a patient on average).

Each fact is kept only once it has been derived without an error. Deriving one checks resources
as R4 (through `Access.use`), and those answers are kept per resource by the index, so a fact
derived once would be derived again the same way: a later session that finds it kept skips
nothing it could have failed on. A derivation that raised keeps nothing, and the next session of
the patient derives it again and fails the same way, as each session did before facts were kept.

Only values no session changes are kept here (named tuples, and lists a session copies from).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from ..fhir.ingest import Res, ResourceIndex
from ..model import CoverageFacts, Relief

_MEMO = "patient-facts"


@dataclass(frozen=True, slots=True)
class Score:
    """A pain or disability Observation of the record, as far as the session does not matter."""

    res: Res
    pain: bool
    when: dt.date | None
    value: float | None
    path: str
    unit: str | None


@dataclass(frozen=True, slots=True)
class Care:
    """A conservative-care record: its kind and dates as written; the session decides the rest."""

    res: Res
    kind: str
    start_raw: Any
    end_raw: Any
    open_ended: bool
    path: str


@dataclass(frozen=True, slots=True)
class ConditionFacts:
    """A Condition as far as the session does not matter: its ICD-10-CM code, onset and statuses."""

    code: str | None  # normalized ICD-10-CM code of its first ICD-10-CM coding
    code_path: str | None
    onset: dt.date | None
    onset_path: str | None
    refuted: bool
    inactive: bool  # clinically inactive, resolved or in remission
    abatement: dt.date | None


@dataclass(slots=True)
class PatientFacts:
    record_checked: bool = False  # every facet procedure, the Patient and the record were valid R4
    coverage: tuple[str | None, CoverageFacts] | None = None
    scores: list[Score] | None = None
    care: list[Care] | None = None
    reliefs: dict[str, Relief] = field(default_factory=dict)  # by history procedure key
    conditions: dict[int, ConditionFacts] = field(default_factory=dict)  # by id() of the Condition's Res


def patient_facts(index: ResourceIndex, patient: str) -> PatientFacts:
    kept = index.memo.get(_MEMO)
    if not isinstance(kept, dict):
        kept = {}
        index.memo[_MEMO] = kept
    facts = kept.get(patient)
    if not isinstance(facts, PatientFacts):
        facts = kept[patient] = PatientFacts()
    return facts
