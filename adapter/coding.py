"""Code: a session of the coding model → claim lines (docs/coding.md).

Entry point: `code_session(session, billing, thoraco_lumbar=...)`. The coding table, the
thoraco-lumbar rule and the bilateral formats are data (mappings/cpt.toml, the pack's [billing], and
whether the pack's coding version in force on the date of service has the thoraco-lumbar rule); this
module only orders the levels and walks the table.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from typing import Any, NamedTuple

from .errors import RulePackError
from .model import ClaimLine, FacetProcedure, Family, Intent, Level, LineLevel, Session
from .read.facets import code_tables
from .rules.packs import Billing
from .spine import Region, Side, spine, union_side
from .tables import load_toml

_SIDE_MODIFIER = {"left": "LT", "right": "RT"}


class Table(NamedTuple):
    first: str
    second: str
    further: str
    further_once_per_day: bool
    junction: str | None = None  # thoraco-lumbar tables only


class CodingTables(NamedTuple):
    version: str
    tables: dict[tuple[Region, Family, bool], Table]
    thoraco_lumbar: dict[tuple[Family, bool], Table]
    modifier_systems: dict[str, str]
    descriptions: dict[str, str]


@cache
def coding_tables() -> CodingTables:
    raw = load_toml("cpt.toml")
    try:
        tables = {
            (row["region"], row["family"], bool(row["ultrasound"])): Table(
                row["first"], row["second"], row["further"], bool(row["further_once_per_day"])
            )
            for row in raw["tables"]
        }
        thoraco_lumbar = {
            (row["family"], bool(row["ultrasound"])): Table(
                row["junction"],
                row["partner"],
                row["further"],
                bool(row["further_once_per_day"]),
                row["junction"],
            )
            for row in raw["thoraco_lumbar"]
        }
        descriptions = {str(code): str(row["description"]) for code, row in raw["codes"].items()}
        for table in [*tables.values(), *thoraco_lumbar.values()]:
            for code in (table.first, table.second, table.further):
                if code not in descriptions:
                    raise RulePackError(f"cpt.toml: table code {code} is not described under [codes].")
        return CodingTables(
            version=str(raw["version"]),
            tables=tables,
            thoraco_lumbar=thoraco_lumbar,
            modifier_systems={str(k): str(v) for k, v in raw["modifier_systems"].items()},
            descriptions=descriptions,
        )
    except (KeyError, TypeError) as exc:
        raise RulePackError(f"cpt.toml is malformed: missing {exc}") from exc


def leading_intent(intents: set[Intent | None]) -> Intent | None:
    """Diagnostic when any of them is (KX, the diagnostic limits), else therapeutic, else unknown."""
    if "diagnostic" in intents:
        return "diagnostic"
    if "therapeutic" in intents:
        return "therapeutic"
    return None


@dataclass(slots=True)
class GroupLevel:
    level: Level
    sides: set[Side]
    procedures: list[FacetProcedure]

    @property
    def side(self) -> Side | None:
        return union_side(self.sides)

    @property
    def intent(self) -> Intent | None:
        return leading_intent({p.intent for p in self.procedures})


@dataclass(slots=True)
class Group:
    """Levels of one session that share a coding table: region, family, and ultrasound or not."""

    region: Region
    family: Family
    ultrasound: bool
    thoraco_lumbar: bool
    levels: list[GroupLevel]
    procedures: list[FacetProcedure]

    @property
    def label(self) -> str:
        kind = "RFA" if self.family == "ablation" else "injection"
        extra = ", ultrasound-guided" if self.ultrasound else ""
        junction = ", thoraco-lumbar" if self.thoraco_lumbar else ""
        return f"{self.region} {kind}{extra}{junction}"


@dataclass(slots=True)
class Correction:
    group: Group
    input_codes: list[str]
    derived_codes: list[str]

    @property
    def removed(self) -> list[str]:
        return sorted((Counter(self.input_codes) - Counter(self.derived_codes)).elements())

    @property
    def added(self) -> list[str]:
        return sorted((Counter(self.derived_codes) - Counter(self.input_codes)).elements())


@dataclass(slots=True)
class Coding:
    lines: list[ClaimLine] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    corrections: list[Correction] = field(default_factory=list)


def code_session(session: Session, billing: Billing, *, thoraco_lumbar: bool = True) -> Coding:
    coding = Coding()
    coding.groups = group_levels(session.procedures, thoraco_lumbar=thoraco_lumbar)
    for group in coding.groups:
        assigned = _assign_codes(group)
        coding.lines.extend(_lines(group, assigned, billing))
        correction = _correction(group, assigned, coding.groups)
        if correction is not None:
            coding.corrections.append(correction)
    return coding


# --------------------------------------------------------------------------- grouping


def group_levels(procedures: list[FacetProcedure], *, thoraco_lumbar: bool = True) -> list[Group]:
    """Merge the session's levels by joint and split them into coding groups; without the
    thoraco-lumbar rule, T12-L1 stays cervical-thoracic whatever else the session has."""
    merged: dict[tuple[Family, bool], dict[Any, GroupLevel]] = {}
    for proc in procedures:
        ultrasound = proc.family == "injection" and proc.guidance == "ultrasound"
        bucket = merged.setdefault((proc.family, ultrasound), {})
        for finding in proc.levels:
            key = finding.level.joint or (finding.level.region, finding.level.ordinal)
            entry = bucket.get(key)
            if entry is None:
                bucket[key] = GroupLevel(finding.level, set(finding.sides), [proc])
            else:
                entry.sides |= finding.sides
                if proc not in entry.procedures:
                    entry.procedures.append(proc)

    table = spine()
    groups: list[Group] = []
    for (family, ultrasound), levels in merged.items():
        joints = {key for key in levels if isinstance(key, str)}
        junction_joins = thoraco_lumbar and table.junction in joints and table.partner in joints
        by_region: dict[Region, list[GroupLevel]] = {}
        for key, entry in levels.items():
            # T12-L1 with L1-L2 is one lumbar session (mappings/spine.toml [thoraco_lumbar]).
            region: Region = "lumbar-sacral" if key == table.junction and junction_joins else entry.level.region
            by_region.setdefault(region, []).append(entry)
        for region, entries in sorted(by_region.items()):
            procs: list[FacetProcedure] = []
            for entry in entries:
                procs.extend(p for p in entry.procedures if p not in procs)
            groups.append(
                Group(
                    region=region,
                    family=family,
                    ultrasound=ultrasound,
                    thoraco_lumbar=region == "lumbar-sacral" and junction_joins,
                    levels=_order(entries),
                    procedures=procs,
                )
            )
    groups.sort(key=lambda g: (g.region != "lumbar-sacral", g.family, g.ultrasound))
    return groups


def _order(entries: list[GroupLevel]) -> list[GroupLevel]:
    """Bilateral levels first, then caudal to cranial; unnamed levels keep their CPT order."""

    def key(entry: GroupLevel) -> tuple[int, int, int]:
        named = entry.level.joint is not None
        caudal_first = -entry.level.ordinal if named else entry.level.ordinal
        return (0 if entry.side == "bilateral" else 1, 0 if named else 1, caudal_first)

    return sorted(entries, key=key)


# --------------------------------------------------------------------------- codes and lines


@dataclass(slots=True)
class Assigned:
    code: str
    levels: list[GroupLevel]
    per_level_quantity: bool  # RFA add-ons: the quantity counts the joints


def _assign_codes(group: Group) -> list[Assigned]:
    tables = coding_tables()
    table_key = (group.family, group.ultrasound)
    junction = spine().junction
    if group.thoraco_lumbar and table_key in tables.thoraco_lumbar:
        table = tables.thoraco_lumbar[table_key]
        first = [e for e in group.levels if e.level.joint == junction]
        second = [e for e in group.levels if e.level.joint == spine().partner]
        rest = [e for e in group.levels if e not in first and e not in second]
    else:
        table = tables.tables[(group.region, group.family, group.ultrasound)]
        first, second, rest = group.levels[:1], group.levels[1:2], group.levels[2:]
    assigned: list[Assigned] = [Assigned(table.first, first, False)] if first else []
    if table.further_once_per_day:
        if second:
            assigned.append(Assigned(table.second, second, False))
        if rest:
            assigned.append(Assigned(table.further, rest, False))
    elif second or rest:
        if table.second == table.further:
            assigned.append(Assigned(table.second, second + rest, True))
        else:
            assigned.append(Assigned(table.second, second, True))
            if rest:
                assigned.append(Assigned(table.further, rest, True))
    return assigned


def _lines(group: Group, assigned: list[Assigned], billing: Billing) -> list[ClaimLine]:
    lines: list[ClaimLine] = []
    for item in assigned:
        if item.per_level_quantity:
            by_side: dict[Side | None, list[GroupLevel]] = {}
            for entry in item.levels:
                by_side.setdefault(entry.side, []).append(entry)
            for side, entries in by_side.items():
                lines.extend(_format(group, item.code, entries, side, len(entries), billing))
        else:
            side = union_side({s for entry in item.levels if (s := entry.side) is not None})
            lines.extend(_format(group, item.code, item.levels, side, 1, billing))
    return lines


def _format(
    group: Group, code: str, levels: list[GroupLevel], side: Side | None, quantity: int, billing: Billing
) -> list[ClaimLine]:
    intent = leading_intent({entry.intent for entry in levels})
    kx, kx_reason = _kx(group.family, intent, billing)
    extra = ["KX"] if kx else []
    if side == "bilateral" and billing.bilateral == "rt-lt":
        variants: list[tuple[list[str], Side | None]] = [(["RT"], "right"), (["LT"], "left")]
    elif side == "bilateral":
        variants = [(["50"], "bilateral")]
    elif side in _SIDE_MODIFIER:
        variants = [([_SIDE_MODIFIER[side]], side)]
    else:
        variants = [([], None)]
    keys: list[str] = []
    for entry in levels:
        keys.extend(p.key for p in entry.procedures if p.key not in keys)
    position = _rationale(group, code)
    lines = []
    for modifiers, line_side in variants:
        reasons = {modifier: _side_reason(modifier, side) for modifier in modifiers}
        left_off = {} if modifiers else {"RT, LT or 50": "no side is recorded for the level (laterality-unknown)"}
        if kx:
            reasons["KX"] = kx_reason
        elif kx_reason:
            left_off["KX"] = kx_reason
        lines.append(
            ClaimLine(
                code=code,
                modifiers=modifiers + extra,
                quantity=quantity,
                levels=[LineLevel(entry.level, entry.side) for entry in levels],
                side=line_side,
                region=group.region,
                family=group.family,
                intent=intent,
                procedure_keys=keys,
                rationale=position,
                modifier_reasons=reasons,
                modifiers_left_off=left_off,
            )
        )
    return lines


def _kx(family: Family, intent: Intent | None, billing: Billing) -> tuple[bool, str]:
    """Whether the line takes KX, and why it does or does not (docs/coding.md, KX)."""
    if not billing.kx_on_diagnostic_injections:
        return False, "this payer profile asks for no KX" if family == "injection" and intent == "diagnostic" else ""
    if family == "ablation":
        return False, "radiofrequency ablation; the payer asks for KX on diagnostic injections only"
    if intent == "diagnostic":
        return True, "diagnostic injection; the payer asks for KX on every diagnostic facet injection line"
    if intent == "therapeutic":
        return False, "therapeutic injection; the payer asks for KX on diagnostic injections only"
    return False, "the record does not say whether the injection is diagnostic (intent-unknown)"


def _side_reason(modifier: str, side: Side | None) -> str:
    if modifier == "50":
        return "bilateral; this payer profile bills both sides on one line"
    name = "right" if modifier == "RT" else "left"
    if side == "bilateral":
        return f"{name} side of a bilateral level; this payer profile bills each side on its own line"
    return f"{name} side only"


def _rationale(group: Group, code: str) -> str:
    description = coding_tables().descriptions.get(code, code)
    return f"{code}: {description} (group: {group.label}; mappings/cpt.toml {coding_tables().version})"


# --------------------------------------------------------------------------- input corrections


def _correction(group: Group, assigned: list[Assigned], all_groups: list[Group]) -> Correction | None:
    # An add-on billed with a quantity (64634 / 64636 for each further joint) cannot carry that
    # quantity on a FHIR Procedure: such a code compares by presence, the others code by code.
    per_joint = {item.code for item in assigned if item.per_level_quantity}
    derived = [item.code for item in assigned]
    facet_codes = coding_tables().descriptions
    seen: set[tuple[str, frozenset[Any]]] = set()
    input_codes: list[str] = []
    for proc in group.procedures:
        levels_here = frozenset(
            entry.level.joint or (entry.level.region, entry.level.ordinal)
            for entry in group.levels
            if proc in entry.procedures
        )
        for code in proc.cpt_codes:
            if code not in facet_codes or (code, levels_here) in seen:
                continue
            if not _counts_in(code, proc, group, all_groups):
                continue
            seen.add((code, levels_here))
            input_codes.append(code)
    input_codes = [c for c in input_codes if c not in per_joint] + sorted({c for c in input_codes if c in per_joint})
    if not input_codes or Counter(input_codes) == Counter(derived):
        return None
    return Correction(group=group, input_codes=sorted(input_codes), derived_codes=sorted(derived))


def _counts_in(code: str, proc: FacetProcedure, group: Group, all_groups: list[Group]) -> bool:
    """An input code is compared in the group of its own table when its procedure spans several."""
    own_groups = [g for g in all_groups if proc in g.procedures]
    if len(own_groups) <= 1:
        return True
    row = code_tables().facet_codes[code]
    matching = [g for g in own_groups if g.family == row["family"] and (g.region == row["region"] or g.thoraco_lumbar)]
    return group is (matching[0] if matching else own_groups[0])
