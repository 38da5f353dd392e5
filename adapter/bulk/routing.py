"""Where one NDJSON line goes: to its patient's partition, to the shared reference store, or to
the errors (docs/bulk.md, how an export is split).

A resource belongs to the patient its first patient element names (`subject`, `patient`,
`beneficiary`, as the reader's `Access.patient_of` reads them); a Patient to itself. The key is
the reference's `Type/id` (absolute and versioned references included), which is the key the
reader's ownership test gives for the same resource in one whole input, so a patient's
partition holds exactly what the reader would count as that patient's record.

Resources that name no patient are shared reference data (Organizations, Practitioners,
Locations, Medications, …): they go to the shared store, and a partition fetches the ones its
resources reference. Patients go to both, so that a reference from one patient's Coverage to
another patient (a subscriber) still resolves. A facet Procedure or ServiceRequest that names no
patient is a session of no one's: it goes to one partition of its own, as a one-file run would
code it. Resources that point at a resource of a patient without naming one (a relief
Observation `partOf` a block) are found from that resource: the store keeps those references.

Pure functions of one line: the local engine and the Spark engine call the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from ..fhir import r4schema
from ..fhir.ingest import relative_part
from ..read.uses import REVERSE

PATIENT_ELEMENTS = ("subject", "patient", "beneficiary")  # adapter.read.access reads these, in order
NO_PATIENT = "(no patient)"
_SESSION_TYPES = frozenset({"Procedure", "ServiceRequest"})
_REVERSE_ELEMENTS: dict[str, tuple[str, ...]] = {}
for _reverse in REVERSE:
    _REVERSE_ELEMENTS[_reverse.source] = (*_REVERSE_ELEMENTS.get(_reverse.source, ()), _reverse.element)

Kind = Literal["blank", "bad", "patient", "shared"]


@dataclass(frozen=True, slots=True)
class Routed:
    kind: Kind
    type: str | None = None
    key: str | None = None  # `Type/id`, or None for a resource without an id
    patient: str | None = None  # the partition, for kind "patient"
    shared: bool = False  # also kept in the shared store (Patients, and every "shared" line)
    about: tuple[str, ...] = ()  # keys a shared resource points at through a reverse-found element
    reason: str | None = None  # why a bad line is bad: never quotes the line


def route(raw: bytes) -> Routed:
    """Classify one line (without its end of line)."""
    if not raw.strip():
        return Routed("blank")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        reason = str(error.msg).split(":")[0] if error.msg else "invalid JSON"
        return Routed("bad", reason=f"not JSON ({reason}, column {error.colno})")
    if not isinstance(value, dict):
        return Routed("bad", reason="not a FHIR resource (a JSON value that is not an object)")
    problem = _type_problem(value)
    if problem is not None:
        return Routed("bad", reason=problem)
    type_: str = value["resourceType"]
    if type_ == "Bundle":
        return Routed("bad", type=type_, reason="a Bundle: bulk input holds one resource a line (code it with `claim`)")
    id_ = value.get("id")
    key = f"{type_}/{id_}" if isinstance(id_, str) and id_ else None
    if type_ == "Patient":
        if key is None:
            return Routed("shared", type=type_, shared=True)
        return Routed("patient", type=type_, key=key, patient=key, shared=True)
    owner = patient_of(value, key)
    if owner is not None:
        return Routed("patient", type=type_, key=key, patient=owner)
    if type_ in _SESSION_TYPES:
        return Routed("patient", type=type_, key=key, patient=NO_PATIENT)
    return Routed("shared", type=type_, key=key, shared=True, about=_about(value, type_))


def patient_of(resource: dict[str, Any], own_key: str | None) -> str | None:
    """The partition key of a resource's first patient element, as the reader reads it."""
    subject = next((resource.get(e) for e in PATIENT_ELEMENTS if resource.get(e)), None)
    if not isinstance(subject, dict):
        return None
    reference = subject.get("reference")
    if not isinstance(reference, str) or not reference:
        return None
    if reference.startswith("#"):
        # A patient contained in the resource itself: it is its own record.
        return own_key or f"{NO_PATIENT} {reference}"
    return relative_part(reference) or reference


def _about(resource: dict[str, Any], type_: str) -> tuple[str, ...]:
    found: list[str] = []
    for element in _REVERSE_ELEMENTS.get(type_, ()):
        values = resource.get(element)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, dict) and isinstance(value.get("reference"), str):
                target = relative_part(value["reference"])
                if target is not None and target not in found:
                    found.append(target)
    return tuple(found)


def _type_problem(value: dict[str, Any]) -> str | None:
    """What a one-file run's type check (adapter.fhir.ingest) would reject the whole input for."""
    declared = value.get("resourceType")
    if not isinstance(declared, str) or not declared:
        return "not a FHIR resource (no resourceType)"
    if not r4schema.is_r4_resource_type(declared):
        return "not a FHIR R4 resource type (R5/R4B-only types and unknown names are rejected)"
    contained = value.get("contained")
    if isinstance(contained, list):
        for index, inner in enumerate(contained):
            inner_type = inner.get("resourceType") if isinstance(inner, dict) else None
            if not isinstance(inner_type, str) or not inner_type:
                return f"contained[{index}] is not a FHIR resource (no resourceType)"
            if not r4schema.is_r4_resource_type(inner_type):
                return f"contained[{index}] is not a FHIR R4 resource type"
    return None
