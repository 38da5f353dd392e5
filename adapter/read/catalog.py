"""Every facet procedure of an input, read once, and the sessions they make.

The catalog reads each facet Procedure / ServiceRequest of every patient a single time, without
checking it (a bad resource of one patient must not stop the others' sessions in a bulk file);
what each one touched is kept, and checked when a session of its patient is coded. Listing the
sessions and coding all of them is therefore linear in the size of the input.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from ..errors import NoDateOfServiceError, NoFacetProcedureError, UsageError
from ..fhir.ingest import Res, ResourceIndex
from ..fhir.r4codes import is_known_code
from ..model import FacetProcedure, SessionRef, Use
from .access import UNATTRIBUTED, Access
from .facets import code_tables, is_facet
from .procedures import read_procedure

_MEMO = "facet-catalog"


@dataclass(slots=True)
class CatalogEntry:
    proc: FacetProcedure
    res: Res
    touched: list[Res] = field(default_factory=list)  # what reading it used, checked with its session


@dataclass(slots=True)
class FacetCatalog:
    entries: list[CatalogEntry]
    by_patient: dict[str, list[CatalogEntry]]
    by_key: dict[str, CatalogEntry]

    def of_patient(self, patient: str) -> list[CatalogEntry]:
        return self.by_patient.get(patient, [])


def facet_catalog(index: ResourceIndex) -> FacetCatalog:
    cached = index.memo.get(_MEMO)
    if isinstance(cached, FacetCatalog):
        return cached
    tables = code_tables()
    access = Access(index)
    entries: list[CatalogEntry] = []
    for res in access.scan("Procedure") + access.scan("ServiceRequest"):
        if not is_facet(res, tables):
            continue
        touched: list[Res] = []
        entries.append(CatalogEntry(read_procedure(access.deferring(touched), res, tables), res, touched))
    by_patient: dict[str, list[CatalogEntry]] = {}
    for entry in entries:
        by_patient.setdefault(entry.proc.patient, []).append(entry)
    catalog = FacetCatalog(entries, by_patient, {entry.proc.key: entry for entry in entries})
    index.memo[_MEMO] = catalog
    return catalog


def wanted_type(use: Use) -> str:
    return "Procedure" if use == "claim" else "ServiceRequest"


def list_sessions(index: ResourceIndex, use: Use = "claim") -> list[SessionRef]:
    """Every facet session of every patient in the input, by patient then date: the billable
    facet procedures of the use's type (completed Procedures to claim, active or draft
    ServiceRequests to authorize) that have a date of service, grouped by patient and date."""
    grouped: dict[tuple[str, dt.date], list[str]] = {}
    for entry in facet_catalog(index).entries:
        proc = entry.proc
        if proc.billable and proc.resource_type == wanted_type(use) and proc.date is not None:
            grouped.setdefault((proc.patient, proc.date), []).append(proc.key)
    return [
        SessionRef(patient=patient, date=day, use=use, procedures=tuple(sorted(keys)))
        for (patient, day), keys in sorted(grouped.items())
    ]


def choose_session(
    index: ResourceIndex, use: Use, focus: str | None = None, *, patient: str | None = None
) -> SessionRef:
    """The session of the focus procedure, else the latest session of `patient` (`Patient/x` or
    `x`), else the latest session in the input (the latest date; among patients with a session that
    day, the greatest patient key) (docs/input.md, the patient and the session)."""
    entries = facet_catalog(index).entries
    if not entries:
        raise NoFacetProcedureError(
            "The input has no facet procedure (CPT 64490-64495, 64633-64636, 0213T-0218T, or facet / "
            "zygapophyseal / medial branch wording) to code."
        )
    billable = [e.proc for e in entries if e.proc.billable and e.proc.resource_type == wanted_type(use)]
    if not billable:
        # A status that is not an R4 code is invalid input, named as such, not "nothing to claim".
        for entry in entries:
            if not is_known_code(entry.res.type, "status", entry.res.data.get("status")):
                Access(index).use(entry.res)
        if use == "claim":
            raise NoFacetProcedureError(
                "--use claim needs a completed facet Procedure; the input has none "
                "(ServiceRequests are planned sessions: use --use preauthorization)."
            )
        raise NoFacetProcedureError(
            "--use preauthorization needs an active or draft facet ServiceRequest; the input has none."
        )
    dated = [p for p in billable if p.date is not None]
    if not dated:
        names = ", ".join(p.key for p in billable[:5])
        raise NoDateOfServiceError(f"The facet procedure(s) {names} have no date of service and cannot be claimed.")
    if patient is not None:
        wanted = patient_key_of(patient)
        dated = [p for p in dated if p.patient == wanted]
        if not dated:
            raise UsageError(
                f"--patient {patient}: {wanted} has no {'completed' if use == 'claim' else 'planned'} facet session "
                f"with a date of service in the input."
            )
    if focus is not None:
        focused = next((p for p in billable if p.key == focus), None)
        if focused is None:
            raise NoFacetProcedureError(f"{focus} is not a billable facet procedure of the input.")
        if focused.date is None:
            raise NoDateOfServiceError(f"{focused.key} has no date of service and cannot be claimed.")
        day, patient = focused.date, focused.patient
    else:
        day, patient = max((p.date, p.patient) for p in dated if p.date is not None)
    keys = tuple(sorted(p.key for p in dated if p.patient == patient and p.date == day))
    return SessionRef(patient=patient, date=day, use=use, procedures=keys)


def session_patients(index: ResourceIndex, use: Use = "claim") -> list[str]:
    """The patients with at least one session of this use, sorted (a facet procedure that names no
    patient belongs to no one, so it adds none)."""
    return sorted({ref.patient for ref in list_sessions(index, use) if ref.patient != UNATTRIBUTED})


def patient_key_of(value: str) -> str:
    """`Patient/x` for `--patient x` or `--patient Patient/x` (a key as the reader writes it)."""
    value = value.strip()
    return value if "/" in value or value.startswith("urn:") else f"Patient/{value}"
