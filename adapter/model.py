"""The coding model: what the reader found, in the terms a coder uses.

Reading (FHIR → this model) and coding (this model → claim lines) meet here. Nothing in this
module knows FHIR JSON; every fact keeps the FHIRPath of the input element behind it so a
finding can point at it.

Values that never change once read (a level, an address, a party) are named tuples; records the
reader fills in step by step are dataclasses: a named tuple's class costs a fraction of a frozen
dataclass's to create, and a one-file `claim` creates every class of the model at start-up.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from .spine import Region, Side

Technique = Literal["intra-articular", "medial-branch-block", "radiofrequency-ablation"]
Intent = Literal["diagnostic", "therapeutic"]
Guidance = Literal["fluoroscopy", "ct", "ultrasound", "mri", "none"]
Family = Literal["injection", "ablation"]
LevelSource = Literal["bodySite", "bodyStructure", "nerve", "text", "cpt"]
GuidanceValue = Literal["fluoroscopy", "ct", "fluoroscopy-or-ct", "ultrasound", "mri", "none", "unknown"]
Use = Literal["claim", "preauthorization"]
FrequencyCategory = Literal["diagnostic", "therapeutic", "rfa"]


class Level(NamedTuple):
    """One facet joint level; `joint` is None for a level known only from a CPT count."""

    joint: str | None
    region: Region  # anatomical region of the joint (T12-L1 is cervical-thoracic)
    ordinal: int  # spine position for a named joint; the CPT position for an unnamed one

    @property
    def label(self) -> str:
        if self.joint:
            return self.joint
        return f"{self.region} level {self.ordinal} (unnamed)"


@dataclass(slots=True)
class LevelFinding:
    """A level of one facet procedure, its side, and where that came from."""

    level: Level
    sides: set[Side]
    source: LevelSource
    path: str


@dataclass(slots=True)
class FacetProcedure:
    """One facet Procedure or ServiceRequest of the input."""

    key: str  # "Procedure/proc4"
    resource_type: str
    id: str | None
    path: str  # FHIRPath of the resource in the input
    status: str | None
    billable: bool  # completed Procedure (claim) or active/draft ServiceRequest (preauthorization)
    patient: str
    date: dt.date | None
    date_path: str | None
    cpt_codes: list[str]  # facet codes written on the input, each once
    imaging_codes: list[str]  # 77003 / 77012 / 76942 written on the facet resource itself
    code_path: str
    family: Family
    technique: Technique | None
    intent: Intent | None
    intent_path: str | None
    guidance: GuidanceValue
    guidance_path: str | None
    levels: list[LevelFinding] = field(default_factory=list)
    level_source: LevelSource | None = None
    performer: str | None = None  # a reference string to the provider
    requester: str | None = None
    priority: str | None = None  # ServiceRequest.priority: routine | urgent | asap | stat
    encounter: str | None = None
    reason_references: list[str] = field(default_factory=list)  # resolved Condition keys
    reason_codes: list[tuple[str, str]] = field(default_factory=list)  # (ICD-10-CM code, path)
    guidance_resources: list[str] = field(default_factory=list)  # keys of guidance Procedures
    text: str | None = None  # code.text and notes, for words a later rule may need (never logged)

    @property
    def category(self) -> FrequencyCategory:
        if self.family == "ablation":
            return "rfa"
        return "diagnostic" if self.intent == "diagnostic" else "therapeutic"

    @property
    def joints(self) -> set[str]:
        return {finding.level.joint for finding in self.levels if finding.level.joint}


@dataclass(slots=True)
class Diagnosis:
    code: str  # dotted ICD-10-CM, upper case
    source_key: str | None  # Condition key, or None for a reasonCode
    path: str
    onset: dt.date | None = None
    onset_path: str | None = None
    from_reason: bool = False
    from_encounter: bool = False
    owner: str = ""  # the resource that holds the code (the Condition, or the Procedure of a reasonCode)


class ConditionOnset(NamedTuple):
    """A Condition of the patient that counts (not refuted, not resolved before the date of
    service), whatever its coding: what pain duration is measured from
    (docs/input.md, supporting conditions and pain duration)."""

    key: str
    onset: dt.date | None
    onset_path: str | None
    code: str | None  # its ICD-10-CM code, dotted, when it has one
    is_reason: bool  # referenced by the session's reasonReference


class InvalidValue(NamedTuple):
    """An evidence Observation whose value is outside its scale: not used (evidence-invalid)."""

    source_key: str
    path: str
    what: str  # "pain score", "Oswestry disability index", "relief percent"
    value: float
    scale: str  # "0-10", "0-100", "0-100 %"


@dataclass(slots=True)
class Relief:
    """Relief after an earlier block: a percent, or a before/after pain pair."""

    percent: float | None
    source_keys: list[str]
    path: str | None
    invalid: list[InvalidValue] = field(default_factory=list)  # linked Observations outside their scale


@dataclass(slots=True)
class Session:
    """The facet procedures one patient had (or will have) on one date of service."""

    patient: str
    date: dt.date
    procedures: list[FacetProcedure]

    @property
    def keys(self) -> list[str]:
        return sorted(p.key for p in self.procedures)


@dataclass(slots=True)
class EvidenceItem:
    kind: Literal[
        "onset",
        "pain-score",
        "disability-score",
        "conservative-care",
        "prior-block",
        "block-relief",
        "guidance",
    ]
    source_key: str | None
    path: str | None
    date: dt.date | None = None
    end: dt.date | None = None
    value: float | None = None
    unit: str | None = None
    text: str | None = None


@dataclass(slots=True)
class Evidence:
    pain_scores: list[EvidenceItem] = field(default_factory=list)
    disability_scores: list[EvidenceItem] = field(default_factory=list)
    conservative_care: list[EvidenceItem] = field(default_factory=list)
    conservative_days: int | None = None
    prior_auth: str | None = None
    prior_auth_source: str | None = None
    invalid: list[InvalidValue] = field(default_factory=list)  # scores outside their scale, not used


@dataclass(slots=True)
class LineLevel:
    level: Level
    side: Side | None


@dataclass(slots=True)
class ClaimLine:
    """One claim line: CPT code, modifiers, quantity, and the levels it bills."""

    code: str
    modifiers: list[str]
    quantity: int
    levels: list[LineLevel]
    side: Side | None
    region: Region
    family: Family
    intent: Intent | None
    procedure_keys: list[str]
    rationale: str  # why this code: the coding-table row, for the coder
    # Why each modifier is there, and why a modifier a coder may expect is not (KX on an RFA line,
    # a side modifier without a side): coding facts, in words, for every review format.
    modifier_reasons: dict[str, str] = field(default_factory=dict)
    modifiers_left_off: dict[str, str] = field(default_factory=dict)

    @property
    def body_site_text(self) -> str:
        names = ", ".join(level.level.label for level in self.levels)
        side = {"left": "left", "right": "right", "bilateral": "bilateral"}.get(self.side or "", "side unknown")
        return f"{names} facet joint(s), {side}"


class SessionRef(NamedTuple):
    """One facet session of an input: what `list_sessions` lists and `code_session` codes."""

    patient: str
    date: dt.date
    use: Use
    procedures: tuple[str, ...]  # keys of the session's facet Procedures / ServiceRequests, sorted


class Address(NamedTuple):
    lines: tuple[str, ...] = ()
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


class Party(NamedTuple):
    """A person or organization the record names for the claim, with what billing formats ask of
    it. `key` is the resource key in the input (or the reference as written when the resource is
    not in the input); every other field is None when the record does not say."""

    key: str | None
    resource_type: str | None = None
    name: str | None = None  # an organization's or location's name
    family: str | None = None  # a person's
    given: tuple[str, ...] = ()
    npi: str | None = None
    npi_path: str | None = None
    tax_id: str | None = None
    identifiers: tuple[tuple[str, str], ...] = ()  # (system, value) as written
    address: Address | None = None
    birth_date: dt.date | None = None
    gender: str | None = None

    @property
    def display(self) -> str:
        if self.name:
            return self.name
        person = " ".join([*self.given, self.family or ""]).strip()
        return person or (self.key or "not on record")


class Parties(NamedTuple):
    """Who the claim is about, for and from (docs/output.md, parties)."""

    patient: Party
    subscriber: Party | None = None
    relationship: str | None = None  # Coverage.relationship code: self, spouse, child, ...
    member_id: str | None = None
    group_number: str | None = None
    coverage_status: str | None = None  # the Coverage's status as written (active, cancelled, ...)
    payer: Party | None = None  # the insurer: the Coverage's payor Organization
    provider: Party | None = None  # the Claim's provider (performer, requester or service provider)
    billing: Party | None = None  # the billing organization where the record names one, else the provider
    # The organization that asks for a prior authorization: the provider when it is one, else the
    # billing organization (a PAS request names an Organization as requestor).
    requester: Party | None = None
    rendering: Party | None = None  # the practitioner who performed it
    facility: Party | None = None  # the session's Location


class CoverageFacts(NamedTuple):
    """What pack selection reads: the patient's Coverage (nothing when there is none) and the state
    of the place of service (docs/input.md, payer profile)."""

    # The payor's display, Organization name and aliases, identifier values and systems.
    payor_names: tuple[str, ...] = ()
    payor_identifiers: tuple[tuple[str | None, str], ...] = ()  # (system, value)
    coverage_types: tuple[tuple[str | None, str], ...] = ()  # (system, code) of Coverage.type
    coverage_classes: tuple[tuple[str, str], ...] = ()  # (type code, value) of Coverage.class
    # What the Coverage says of its plan: Coverage.type text and displays, Coverage.class names and values.
    plan_names: tuple[str, ...] = ()
    # The address of the place of service as written: the session Location's, else the billing
    # Organization's; `place_from` is the key of the resource it was read from.
    place_state: str | None = None
    place_country: str | None = None
    place_from: str | None = None


@dataclass(slots=True)
class Case:
    """Everything read from one input for the latest session of one patient."""

    use: Use
    patient: str
    patient_resource: str | None
    session: Session
    history: list[Session]
    diagnoses: list[Diagnosis]
    evidence: Evidence
    coverage: str | None
    payer_names: list[str]
    provider: str | None
    encounter: str | None
    place_of_service: str
    place_of_service_source: Literal["option", "location", "default"]
    place_of_service_path: str | None
    guidance_resources: list[str]
    reliefs: dict[str, Relief]  # per history procedure key
    radiculopathy: list[Diagnosis]
    undated: list[FacetProcedure] = field(default_factory=list)  # the patient's, left out of history
    conditions: list[ConditionOnset] = field(default_factory=list)
    # Every Condition of the patient with an ICD-10-CM code that is not refuted or entered in error,
    # whatever its clinical status: where pain duration finds the onset of a supporting code.
    coded_conditions: list[ConditionOnset] = field(default_factory=list)
    # The patient's facet procedures of the session's date (or encounter) marked not-done.
    not_done: list[FacetProcedure] = field(default_factory=list)
    # How many patients have facet sessions in the input, when the session was chosen as the
    # latest of the input rather than by --patient or a focus procedure (else None).
    input_patients: int | None = None
    parties: Parties | None = None
    location: str | None = None  # the session's Location key
    coverage_facts: CoverageFacts = field(default_factory=CoverageFacts)

    @property
    def ref(self) -> SessionRef:
        return SessionRef(self.patient, self.session.date, self.use, tuple(self.session.keys))


def label_guidance(value: GuidanceValue | Guidance) -> str:
    return {
        "fluoroscopy-or-ct": "fluoroscopy or CT (implied by the CPT code)",
        "ct": "CT",
        "mri": "MRI",
        "none": "no image guidance",
    }.get(value, value)
