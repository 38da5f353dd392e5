"""The level and side grammar of free text (docs/input.md, levels and sides).

`read_text` turns one text field into the joints it names and the side of each:

* joint names and spans: `L4-L5`, `L4-5`, `L4/L5`, `L4/5`, `L4 L5`, `L4–L5`, `L3-L5` (= L3-L4 and
  L4-L5), `L4-S1`, `L3 through L5`, any case;
* medial-branch wording: in a text that speaks of medial branches (or dorsal rami, or the third
  occipital nerve) single vertebrae are nerves, and each pair of consecutive nerves names the
  joint they supply (mappings/spine.toml `nerve_pairs`). Joint names are never nerves, and the
  nerve reading wins over the `L4 L5` spelling;
* sides: `left`, `right`, `bilateral`, `bilat`, `both` (sides), `b/l`. A side word applies to the levels
  that follow it up to the next side word; a side written after all the levels applies to every
  level still without one; in a text that names no level, the sides are the whole procedure's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal

from ..spine import NERVES, VERTEBRAE, Side, joint_between, spine, union_side

LevelKind = Literal["joint", "nerve"]

_DASHES = str.maketrans({"–": "-", "—": "-", "‒": "-", "−": "-", "‐": "-", "‑": "-"})

_VERT = r"([CTLS])\s?(\d{1,2})"
_TOKEN = re.compile(
    rf"""
    (?P<span>\b{_VERT}\s*(?:-|/|\bto\b|\bthrough\b|\bthru\b)\s*(?:([CTLS])\s?)?(\d{{1,2}})\b)
  | (?P<pair>\b{_VERT}\s+([CTLS])\s?(\d{{1,2}})\b(?!\s*(?:-|/|\bto\b|\bthrough\b|\bthru\b)\s*[CTLS]?\s?\d))
  | (?P<single>\b{_VERT}\b)
  | (?P<ton>\bthird[\s-]+occipital\b)
  | (?P<side>\b(?:left|right|bilateral(?:ly)?|bilat|b/l)\b|\bboth(?=\s+sides?\b|\s*(?:[.,;:)]|$)))
    """,
    re.IGNORECASE | re.VERBOSE,
)
_NERVE_CONTEXT = re.compile(r"medial[\s-]+branch|dorsal[\s-]+ram|third[\s-]+occipital", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class LevelMention:
    joint: str
    side: Side | None
    kind: LevelKind


@dataclass(slots=True)
class TextLevels:
    """What one text field says about levels and sides."""

    levels: list[LevelMention] = field(default_factory=list)
    whole_sides: set[Side] = field(default_factory=set)  # sides of a text that names no level

    @property
    def joint_sides(self) -> dict[str, set[Side]]:
        found: dict[str, set[Side]] = {}
        for mention in self.levels:
            sides = found.setdefault(mention.joint, set())
            if mention.side:
                sides.add(mention.side)
        return found


def side_word(word: str) -> Side:
    lowered = word.lower()
    if lowered.startswith("left"):
        return "left"
    if lowered.startswith("right"):
        return "right"
    return "bilateral"


def _vertebra(letter: str, number: str) -> str | None:
    name = f"{letter.upper()}{int(number)}"
    return name if name in VERTEBRAE else None


def _nerve(letter: str, number: str) -> str | None:
    name = f"{letter.upper()}{int(number)}"
    return name if name in NERVES else None


@dataclass(slots=True)
class _Item:
    kind: Literal["joint", "nerve", "ton", "side"]
    value: str


def read_text(text: object) -> TextLevels:
    """Levels and sides named in one free-text field. Never raises."""
    if not isinstance(text, str) or not text:
        return TextLevels()
    normalized = text.translate(_DASHES)
    nerve_mode = _NERVE_CONTEXT.search(normalized) is not None
    items: list[_Item] = []
    for match in _TOKEN.finditer(normalized):
        groups = match.groups()
        if match.group("span"):
            upper = _vertebra(groups[1], groups[2])
            lower = _vertebra(groups[3] or groups[1], groups[4])
            if upper and lower:
                items.extend(_Item("joint", joint) for joint in joint_between(upper, lower))
        elif match.group("pair"):
            first = (groups[6], groups[7])
            second = (groups[8], groups[9])
            if nerve_mode:
                for letter, number in (first, second):
                    nerve = _nerve(letter, number)
                    if nerve:
                        items.append(_Item("nerve", nerve))
            else:
                upper = _vertebra(*first)
                lower = _vertebra(*second)
                joints = joint_between(upper, lower) if upper and lower else []
                if len(joints) == 1:
                    items.append(_Item("joint", joints[0]))
        elif match.group("single"):
            if nerve_mode:
                nerve = _nerve(groups[11], groups[12])
                if nerve:
                    items.append(_Item("nerve", nerve))
        elif match.group("ton"):
            # The third occipital nerve alone supplies C2-C3 (mappings/spine.toml).
            items.append(_Item("ton", spine().single_nerve_joints.get("C3", "C2-C3")))
        elif match.group("side"):
            items.append(_Item("side", side_word(match.group("side"))))
    return _assign_sides(items)


def _assign_sides(items: list[_Item]) -> TextLevels:
    result = TextLevels()
    has_levels = any(item.kind != "side" for item in items)
    if not has_levels:
        result.whole_sides = {side_word(item.value) for item in items}
        return result
    last_level_at = max(i for i, item in enumerate(items) if item.kind != "side")
    trailing = [side_word(item.value) for item in items[last_level_at + 1 :] if item.kind == "side"]
    trailing_side = union_side(set(trailing))

    current: Side | None = None
    after_side = False  # side words with no level between them are one side: "left and right" = bilateral
    nerve_runs: list[tuple[Side | None, list[str]]] = []
    for item in items:
        if item.kind == "side":
            word = side_word(item.value)
            current = union_side({word, current}) if after_side and current else word
            after_side = True
            continue
        after_side = False
        if item.kind in ("joint", "ton"):
            result.levels.append(LevelMention(item.value, current, "joint" if item.kind == "joint" else "nerve"))
            continue
        if nerve_runs and nerve_runs[-1][0] == current:
            nerve_runs[-1][1].append(item.value)
        else:
            nerve_runs.append((current, [item.value]))
    for side, nerves in nerve_runs:
        result.levels.extend(LevelMention(joint, side, "nerve") for joint in _joints_of_nerves(nerves))
    if trailing_side is not None:
        result.levels = [
            mention if mention.side else LevelMention(mention.joint, trailing_side, mention.kind)
            for mention in result.levels
        ]
    return result


def _joints_of_nerves(nerves: list[str]) -> list[str]:
    """Each pair of consecutive nerves names the joint they supply; a lone C3 names C2-C3."""
    table = spine()
    ordered = sorted(set(nerves), key=NERVES.index)
    joints: list[str] = []
    for upper, lower in pairwise(ordered):
        if NERVES.index(lower) - NERVES.index(upper) == 1:
            joint = table.nerve_pairs.get((upper, lower))
            if joint and joint not in joints:
                joints.append(joint)
    if len(ordered) == 1 and ordered[0] in table.single_nerve_joints:
        joints.append(table.single_nerve_joints[ordered[0]])
    return joints
