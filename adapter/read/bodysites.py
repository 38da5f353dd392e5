"""Levels and sides of one facet procedure (docs/input.md, levels and sides)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..fhir.ingest import Res
from ..fhir.systems import SNOMED
from ..fhir.values import codings, concept_text, concept_words, dicts, get_str
from ..model import Level, LevelFinding, LevelSource
from ..spine import Side, spine
from .access import Access
from .facets import CodeTables
from .levels import TextLevels, read_text

TARGET_BODY_STRUCTURE = "http://hl7.org/fhir/StructureDefinition/procedure-targetBodyStructure"


def _level(joint: str) -> Level:
    table = spine()
    return Level(joint=joint, region=table.region_of[joint], ordinal=table.joint_index[joint])


def _concept_sides(concept: Any) -> set[Side]:
    table = spine()
    return {
        table.snomed_laterality[value]
        for _, system, value, _ in codings(concept)
        if system == SNOMED and value in table.snomed_laterality
    }


def _concept_joints(concept: Any) -> list[str]:
    table = spine()
    return [
        value_joint
        for _, system, value, _ in codings(concept)
        if system == SNOMED and (value_joint := table.snomed_joints.get(value or "")) is not None
    ]


def _levels_of_concept(concept: Any, qualifiers: Iterable[Any] = ()) -> tuple[dict[str, set[Side]], set[Side]]:
    """Joints (with sides) named by one body-site concept, and its sides when it names none."""
    sides = _concept_sides(concept)
    for qualifier in qualifiers:
        sides |= _concept_sides(qualifier)
        qualifier_text = read_text(concept_words(qualifier))
        sides |= qualifier_text.whole_sides
    text = read_text(concept_text(concept) or _non_laterality_displays(concept))
    joints: dict[str, set[Side]] = {}
    for joint in _concept_joints(concept):
        joints.setdefault(joint, set()).update(sides | text.whole_sides)
    for mention in text.levels:
        found = joints.setdefault(mention.joint, set())
        if mention.side:
            found.add(mention.side)
        found.update(sides)
    if joints:
        for joint_sides in joints.values():
            if not joint_sides:
                joint_sides.update(text.whole_sides)
        return joints, set()
    return {}, sides | text.whole_sides


def _non_laterality_displays(concept: Any) -> str | None:
    table = spine()
    displays = [
        display
        for _, system, value, display in codings(concept)
        if display and not (system == SNOMED and value in table.snomed_laterality)
    ]
    return "; ".join(displays) if displays else None


def read_levels(
    access: Access, res: Res, texts: list[tuple[str, str]], cpt: list[str], tables: CodeTables
) -> tuple[list[LevelFinding], LevelSource | None]:
    """The procedure's levels and sides, from the first source that names any (docs/input.md):
    bodySite, the targetBodyStructure extension, medial-branch wording, level wording, CPT counts."""
    whole_sides: set[Side] = set()
    found: dict[str, LevelFinding] = {}
    source: LevelSource | None = None

    def add(joint: str, sides: set[Side], kind: LevelSource, path: str) -> None:
        if joint in found:
            found[joint].sides |= sides
        else:
            found[joint] = LevelFinding(_level(joint), set(sides), kind, path)

    for i, concept in dicts(res.data.get("bodySite")):
        joints, sides = _levels_of_concept(concept)
        whole_sides |= sides
        for joint, joint_sides in joints.items():
            add(joint, joint_sides, "bodySite", f"{res.path}.bodySite[{i}]")
    if found:
        source = "bodySite"
    if not found:
        for i, ext in dicts(res.data.get("extension")):
            if get_str(ext, "url") != TARGET_BODY_STRUCTURE:
                continue
            target = access.resolve(res, "extension.valueReference", ext.get("valueReference"))
            if target is None:
                continue
            location = target.data.get("location")
            qualifiers = [q for _, q in dicts(target.data.get("locationQualifier"))]
            joints, sides = _levels_of_concept(location, qualifiers)
            if not joints and get_str(target.data, "description"):
                described = read_text(target.data["description"])
                joints = {m.joint: ({m.side} if m.side else set()) | sides for m in described.levels}
            whole_sides |= sides
            for joint, joint_sides in joints.items():
                add(joint, joint_sides, "bodyStructure", f"{res.path}.extension[{i}]")
        if found:
            source = "bodyStructure"

    text_readings: list[tuple[TextLevels, str]] = [(read_text(text), path) for text, path in texts]
    text_joint_sides: dict[str, set[Side]] = {}
    for reading, _ in text_readings:
        whole_sides |= reading.whole_sides
        for joint, sides in reading.joint_sides.items():
            text_joint_sides.setdefault(joint, set()).update(sides)

    if not found:
        # Medial-branch wording (source 3) before level wording (source 4) (docs/input.md, sources of levels).
        preference: tuple[tuple[str, LevelSource], ...] = (("nerve", "nerve"), ("joint", "text"))
        for kind, level_source in preference:
            for reading, path in text_readings:
                for mention in reading.levels:
                    if mention.kind == kind:
                        add(mention.joint, {mention.side} if mention.side else set(), level_source, path)
            if found:
                source = level_source
                break

    levels = list(found.values())
    if not levels and cpt:
        levels = _cpt_count_levels(res, cpt, tables)
        source = "cpt" if levels else None

    for finding in levels:
        # A side the text gives on this very level joins the level's own ("left and right for one
        # level, from any sources, make it bilateral"); a side given for the whole procedure only
        # fills a level that has none.
        if finding.level.joint:
            finding.sides |= text_joint_sides.get(finding.level.joint, set())
        if not finding.sides:
            finding.sides |= whole_sides
    return levels, source


def _cpt_count_levels(res: Res, cpt: list[str], tables: CodeTables) -> list[LevelFinding]:
    """Unnamed levels from the CPT codes: 64493 = one level, 64493 + 64494 = two, ..."""
    positions: dict[tuple[str, int], str] = {}
    for code in cpt:
        row = tables.facet_codes[code]
        position = int(row["position"]) or 2  # an RFA add-on adds at least the second joint
        positions.setdefault((str(row["region"]), position), code)
    levels: list[LevelFinding] = []
    for (region, position), _code in sorted(positions.items(), key=lambda item: item[0][1]):
        level = Level(joint=None, region=region, ordinal=position)  # type: ignore[arg-type]
        levels.append(LevelFinding(level, set(), "cpt", f"{res.path}.code"))
    return levels
