"""What the reader uses from an input or a FHIR server, declared once.

Three consumers read this declaration, so they cannot drift apart:

- the reader's access layer (`adapter.read.access`) refuses a resource type or a reference that is
  not declared here (an internal error, so a test fails the moment a reader reaches further);
- `adapter.server.gather` derives its searches, `_include`s and follow-up reads from it;
- the docs list it (`docs/input.md`).

Codes the reader filters on live here too: the facet and imaging CPT codes come from
`mappings/cpt.toml`; the LOINC codes of the evidence Observations are below.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from ..fhir.systems import CPT, HCPCS, HCPCS_HTTPS, LOINC
from .facets import code_tables

# A preauthorization ClaimResponse grants the prior authorization on record when an item (or, in
# the PAS reference implementation's style, the request) carries one of these Da Vinci PAS review
# actions (X12 306: certified in total, certified in part, modified); without review actions, when
# its outcome is complete with a preAuthRef (docs/input.md, prior authorization).
AUTHORIZING_REVIEW_ACTIONS = ("A1", "A2", "A6")

PAIN_LOINC = "72514-3"  # pain severity 0-10, reported
DISABILITY_LOINC = "97909-6"  # Oswestry disability index
EVIDENCE_LOINC = (PAIN_LOINC, DISABILITY_LOINC)

PROVIDERS = ("Practitioner", "PractitionerRole", "Organization")

# A server search of a patient's resources may be limited to a date window around the session.
Window = Literal["history", "day"]
# Months of history read before the date of service (frequency counts 12 months; two years cover
# the diagnostic blocks an ablation needs and the conservative care before them).
HISTORY_MONTHS = 24


class PatientType(NamedTuple):
    """A resource type of the patient's record: how it names its patient, and how a server search
    for it is narrowed."""

    type: str
    search_param: str  # the search parameter naming the patient ("subject", "beneficiary", "patient")
    window: Window | None = None
    codes: Literal["facet", "evidence"] | None = None
    fixed_params: tuple[tuple[str, str], ...] = ()


class Follow(NamedTuple):
    """A reference the reader follows: from `source`, the element path `element` (dotted, list
    elements traversed), to one of `targets`. `include` is the search `_include` that brings the
    target along with the source, where one exists."""

    source: str
    element: str
    targets: tuple[str, ...]
    include: str | None = None

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.element.split("."))


class Reverse(NamedTuple):
    """Resources of `source` that point at a resource of `target` through `element` (relief
    Observations point at their block): `revinclude` brings them with a search of the target."""

    source: str
    element: str
    target: str
    revinclude: str
    search_param: str


# The patient's record. Every non-void resource of these types that belongs to the patient is
# read and must be valid R4.
PATIENT_TYPES: tuple[PatientType, ...] = (
    PatientType("Procedure", "subject", window="history"),
    PatientType("ServiceRequest", "subject", codes="facet"),
    PatientType("Condition", "subject"),
    PatientType("Observation", "subject", codes="evidence"),
    PatientType("Coverage", "beneficiary"),
    PatientType("Encounter", "subject", window="day"),
    PatientType("MedicationStatement", "subject"),
    PatientType("MedicationRequest", "subject"),
    PatientType("ClaimResponse", "patient", fixed_params=(("use", "preauthorization"),)),
)

FOLLOWED: tuple[Follow, ...] = (
    Follow("Procedure", "performer.actor", PROVIDERS, "Procedure:performer"),
    Follow("Procedure", "encounter", ("Encounter",), "Procedure:encounter"),
    Follow("Procedure", "partOf", ("Procedure",)),
    Follow("Procedure", "reasonReference", ("Condition",)),
    Follow("Procedure", "extension.valueReference", ("BodyStructure",)),
    Follow("ServiceRequest", "performer", PROVIDERS, "ServiceRequest:performer"),
    Follow("ServiceRequest", "requester", PROVIDERS, "ServiceRequest:requester"),
    Follow("ServiceRequest", "encounter", ("Encounter",), "ServiceRequest:encounter"),
    Follow("ServiceRequest", "reasonReference", ("Condition",)),
    Follow("ServiceRequest", "extension.valueReference", ("BodyStructure",)),
    Follow("Encounter", "location.location", ("Location",), "Encounter:location"),
    Follow("Encounter", "serviceProvider", PROVIDERS, "Encounter:service-provider"),
    Follow("Encounter", "diagnosis.condition", ("Condition",), "Encounter:diagnosis"),
    Follow("Condition", "encounter", ("Encounter",)),
    Follow("Coverage", "payor", ("Organization", "Patient", "RelatedPerson"), "Coverage:payor"),
    Follow("Coverage", "subscriber", ("Patient", "RelatedPerson"), "Coverage:subscriber"),
    Follow("MedicationStatement", "medicationReference", ("Medication",), "MedicationStatement:medication"),
    Follow("MedicationRequest", "medicationReference", ("Medication",), "MedicationRequest:medication"),
    Follow("Observation", "partOf", ("Procedure",)),
    Follow("Observation", "focus", ("Procedure",)),
    Follow("PractitionerRole", "practitioner", ("Practitioner",), "PractitionerRole:practitioner"),
    Follow("PractitionerRole", "organization", ("Organization",), "PractitionerRole:organization"),
    Follow("Location", "managingOrganization", ("Organization",), "Location:organization"),
)

REVERSE: tuple[Reverse, ...] = (
    Reverse("Observation", "partOf", "Procedure", "Observation:part-of", "part-of"),
    Reverse("Observation", "focus", "Procedure", "Observation:focus", "focus"),
    # A facet procedure not done often has no date (so no date search finds it): it belongs to the
    # session through its Encounter (procedure-not-done).
    Reverse("Procedure", "encounter", "Encounter", "Procedure:encounter", "encounter"),
)

# Types read without belonging to the patient by a subject: what references reach, the Patient
# itself, and the Observations found by what they are about.
REACHED_TYPES: frozenset[str] = frozenset(
    {"Patient", *(t for f in FOLLOWED for t in f.targets), *(r.source for r in REVERSE)}
)
DECLARED_TYPES: frozenset[str] = frozenset({p.type for p in PATIENT_TYPES} | REACHED_TYPES)
_FOLLOW_INDEX: dict[tuple[str, str], Follow] = {(f.source, f.element): f for f in FOLLOWED}


def follow_of(source: str, element: str) -> Follow | None:
    return _FOLLOW_INDEX.get((source, element))


def patient_type(name: str) -> PatientType | None:
    return next((p for p in PATIENT_TYPES if p.type == name), None)


def facet_codes() -> list[str]:
    return sorted(code_tables().facet_codes)


FACET_CODE_SYSTEMS = (CPT, HCPCS, HCPCS_HTTPS)


def facet_code_tokens() -> str:
    """`system|code,...` for every facet code: a token search OR-list (CPT and HCPCS systems)."""
    return ",".join(f"{system}|{code}" for system in FACET_CODE_SYSTEMS for code in facet_codes())


def evidence_code_tokens() -> str:
    return ",".join(f"{LOINC}|{code}" for code in EVIDENCE_LOINC)


def code_tokens(kind: Literal["facet", "evidence"]) -> str:
    return facet_code_tokens() if kind == "facet" else evidence_code_tokens()
