"""How a facet procedure was guided (docs/input.md, guidance)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from ..fhir.ingest import Res
from ..fhir.systems import CPT_LIKE_SYSTEMS
from ..fhir.values import codings, get_str, parse_date, period_start_end
from ..model import FacetProcedure, GuidanceValue
from .access import UNATTRIBUTED, VOID_STATUSES, Access, patient_key
from .facets import CodeTables
from .wording import guidance_of

_CODED_GUIDANCE: tuple[GuidanceValue, ...] = ("fluoroscopy", "ct", "ultrasound")
_MEMO = "imaging-procedures"


@dataclass(slots=True)
class _Imaging:
    """Procedures coded 77003 / 77012 / 76942, found once per input and indexed by the procedure
    they are part of and by patient and day, so coding every session of a bulk export does not
    scan them once per facet procedure."""

    ordered: list[tuple[Res, list[tuple[str, str]]]] = field(default_factory=list)
    by_target: dict[int, list[int]] = field(default_factory=dict)
    by_day: dict[tuple[str, dt.date], list[int]] = field(default_factory=dict)


def _imaging_procedures(access: Access, tables: CodeTables) -> _Imaging:
    cached = access.index.memo.get(_MEMO)
    if isinstance(cached, _Imaging):
        return cached
    found = _Imaging()
    for other in access.scan("Procedure"):
        if get_str(other.data, "status") in VOID_STATUSES:
            continue
        kinds = [
            (tables.imaging[value], f"{other.path}.code.coding[{i}]")
            for i, system, value, _ in codings(other.data.get("code"))
            if system in CPT_LIKE_SYSTEMS and value in tables.imaging
        ]
        if not kinds:
            continue
        position = len(found.ordered)
        found.ordered.append((other, kinds))
        for ref in access.follow_unchecked(other, "partOf"):
            found.by_target.setdefault(id(ref), []).append(position)
        day = parse_date(period_start_end(other.data, "performed")[0])
        if day is not None:
            owner = patient_key(access.index, other, other.data.get("subject")) or UNATTRIBUTED
            found.by_day.setdefault((owner, day), []).append(position)
    access.index.memo[_MEMO] = found
    return found


def read_guidance(
    access: Access, res: Res, proc: FacetProcedure, texts: list[tuple[str, str]], tables: CodeTables
) -> tuple[GuidanceValue, str | None, list[str]]:
    """A linked (partOf) or same-day imaging Procedure, else the words, else what the CPT code
    implies."""
    imaging = _imaging_procedures(access, tables)
    positions = set(imaging.by_target.get(id(res), ()))
    if proc.date is not None:
        positions.update(imaging.by_day.get((proc.patient, proc.date), ()))
    linked: list[tuple[str, Res, str]] = []
    for position in sorted(positions):
        other, kinds = imaging.ordered[position]
        if other is res:
            continue
        access.use(other)
        linked.extend((kind, other, path) for kind, path in kinds)
    coded = [(kind, path) for kind, _, path in linked] + [
        (tables.imaging[c], proc.code_path) for c in proc.imaging_codes
    ]
    if coded:
        # One preference over every coded source: fluoroscopy or CT (covered) before ultrasound.
        kinds_found = [kind for kind, _ in coded]
        chosen: GuidanceValue = next((k for k in _CODED_GUIDANCE if k in kinds_found), "fluoroscopy")
        path = next(path for kind, path in coded if kind == chosen)
        return chosen, path, sorted({other.key for _, other, _ in linked})
    for text, path in texts:
        said = guidance_of(text)
        if said:
            return said, path, []
    if proc.cpt_codes:
        if any(tables.facet_codes[code]["ultrasound"] for code in proc.cpt_codes):
            return "ultrasound", proc.code_path, []
        return "fluoroscopy-or-ct", proc.code_path, []
    return "unknown", None, []
