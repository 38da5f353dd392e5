"""The reader's only door into the input.

Every resource the reader hands to a coding decision passes through `Access.use`, which checks it
against the R4 structure rules the first time (the answer is kept per resource). So "everything
the adapter uses is valid R4" holds by construction, not by remembering a call at each site.

The door also enforces the declaration in `adapter.read.uses`: a resource type or a reference
that is not declared there is an internal error, so a reader that reaches further than the
declaration (and than what `sync` gathers from a server) fails the tests at once.

Two modes: a checking door validates at once; a deferring door (the catalog's first, defensive
pass over every facet procedure of every patient) records what it touched, and the session
reader validates those for the patient it codes. Other patients' data is never checked.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import UndeclaredUseError
from ..fhir.ingest import Res, ResourceIndex
from ..fhir.values import get_str, reference_of
from .uses import DECLARED_TYPES, PATIENT_TYPES, Follow, follow_of

# Statuses that take a resource out of the record: never read, never checked.
VOID_STATUSES = frozenset({"entered-in-error", "not-done"})
_PATIENT_ELEMENTS = ("subject", "patient", "beneficiary")
_PATIENT_TYPE_NAMES = tuple(p.type for p in PATIENT_TYPES)
_BY_PATIENT_MEMO = "patient-resources"
UNATTRIBUTED = "Patient/(unknown)"  # a facet procedure whose subject names no one


class Access:
    def __init__(self, index: ResourceIndex, *, deferred: list[Res] | None = None) -> None:
        self.index = index
        self._deferred = deferred

    def deferring(self, sink: list[Res]) -> Access:
        """A door over the same input that records what it touches into `sink` instead of checking."""
        return Access(self.index, deferred=sink)

    # -- checking
    def use(self, res: Res) -> Res:
        """Hand out a resource for reading: checked as R4 now (or recorded, when deferring)."""
        if self._deferred is not None:
            if all(res is not seen for seen in self._deferred):
                self._deferred.append(res)
        else:
            self.index.validate_used(res)
        return res

    def use_all(self, resources: list[Res]) -> None:
        for res in resources:
            self.use(res)

    def if_valid(self, res: Res | None) -> Res | None:
        """A resource whose content only an output format needs (an address, a name for an X12
        loop), never a coding decision: read when valid R4, else treated as not on record."""
        return res if res is not None and self.index.is_valid(res) else None

    # -- finding
    def scan(self, type_: str, *, contained: bool = False) -> list[Res]:
        """Every resource of a declared type, unchecked: for deciding which ones matter (is it a
        facet procedure, an imaging procedure, a report about a block). Use what matters."""
        _declared_type(type_)
        return self.index.of_type(type_, contained=contained)

    def get(self, key: str) -> Res | None:
        found = self.index.get(key)
        if found is not None:
            _declared_type(found.type)
        return found

    def patient(self, key: str) -> Res | None:
        """The Patient resource a patient key names, checked, else None (not in the input, or the key
        names something else: a Group subject, a resource hidden by a duplicate resourceType key)."""
        found = self.index.get(key)
        return self.use(found) if found is not None and found.type == "Patient" else None

    def resolve(self, res: Res, element: str, value: Any) -> Res | None:
        """The target of one reference value found at `element` of `res`, when it is one of the
        declared target types; checked as R4. Anything else (not in the input, another type)
        is None."""
        target = self.peek(res, element, value)
        return self.use(target) if target is not None else None

    def peek(self, res: Res, element: str, value: Any) -> Res | None:
        """Like `resolve`, for a reader that needs only the target's identity (its key and type),
        not its content: nothing is checked."""
        follow = _declared_follow(res.type, element)
        target = self.index.resolve(value, res)
        if target is None or target.type not in follow.targets:
            return None
        return target

    def follow(self, res: Res, element: str) -> list[Res]:
        """Every declared target reached from `res` through `element` (a dotted path)."""
        found: list[Res] = []
        for value in values_at(res.data, tuple(element.split("."))):
            target = self.resolve(res, element, value)
            if target is not None and all(target is not seen for seen in found):
                found.append(target)
        return found

    def reaches(self, res: Res, value: Any) -> bool:
        """Whether a reference value of `res` resolves to any resource of the input."""
        return self.index.resolve(value, res) is not None

    def follow_unchecked(self, res: Res, element: str) -> list[Res]:
        """The declared targets reached through `element`, for identity only (see `peek`)."""
        found: list[Res] = []
        for value in values_at(res.data, tuple(element.split("."))):
            target = self.peek(res, element, value)
            if target is not None and all(target is not seen for seen in found):
                found.append(target)
        return found

    # -- the patient's record
    def patient_of(self, res: Res) -> str | None:
        subject = next((res.data.get(e) for e in _PATIENT_ELEMENTS if res.data.get(e)), None)
        return patient_key(self.index, res, subject)

    def own(self, patient: str, *types: str) -> list[Res]:
        """The patient's resources of these declared record types, contained ones included (they
        must resolve too), in input order. Void ones are returned unchecked: callers skip them."""
        for type_ in types:
            if type_ not in _PATIENT_TYPE_NAMES:
                raise UndeclaredUseError(f"the reader reads {type_} as part of the patient's record, undeclared")
        mine = _resources_by_patient(self.index).get(patient, {})
        return [res for type_ in types for res in mine.get(type_, ())]

    def check_record(self, patient: str) -> None:
        """Check every non-void resource of the patient's declared record types: the record the
        adapter reads is valid R4 as a whole, whichever parts a rule happens to look at."""
        for res in self.own(patient, *_PATIENT_TYPE_NAMES):
            if get_str(res.data, "status") not in VOID_STATUSES:
                self.use(res)


def _declared_follow(source: str, element: str) -> Follow:
    follow = follow_of(source, element)
    if follow is None:
        raise UndeclaredUseError(f"the reader follows {source}.{element}, which adapter.read.uses does not declare")
    return follow


def _declared_type(type_: str) -> None:
    if type_ not in DECLARED_TYPES:
        raise UndeclaredUseError(f"the reader reads {type_} resources, which adapter.read.uses does not declare")


def patient_key(index: ResourceIndex, res: Res, subject: Any) -> str | None:
    """`Patient/x` of a subject reference: the resolved resource's key, else the reference's
    last two parts as written."""
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


def _resources_by_patient(index: ResourceIndex) -> dict[str, dict[str, list[Res]]]:
    """Record resources by patient and type, found once per input: reading every session of a
    bulk export stays linear in its size."""
    cached = index.memo.get(_BY_PATIENT_MEMO)
    if isinstance(cached, dict):
        return cached
    grouped: dict[str, dict[str, list[Res]]] = {}
    for res in index.of_type(*_PATIENT_TYPE_NAMES, contained=True):
        subject = next((res.data.get(e) for e in _PATIENT_ELEMENTS if res.data.get(e)), None)
        owner = patient_key(index, res, subject)
        if owner is not None:
            grouped.setdefault(owner, {}).setdefault(res.type, []).append(res)
    index.memo[_BY_PATIENT_MEMO] = grouped
    return grouped


def values_at(resource: Mapping[str, Any], path: tuple[str, ...]) -> Iterator[Any]:
    """The values at a dotted element path, lists traversed (`location.location`)."""
    values: list[Any] = [resource]
    for name in path:
        nxt: list[Any] = []
        for value in values:
            if isinstance(value, Mapping):
                item = value.get(name)
                nxt.extend(item if isinstance(item, list) else [item] if item is not None else [])
        values = nxt
    yield from values
