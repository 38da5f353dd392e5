"""The level and side grammar of free text (docs/input.md, levels and sides).

`read_text` turns one text field into the joints it names and the side of each:

* joint names and spans: `L4-L5`, `L4-5`, `L4/L5`, `L4/5`, `L4 L5`, `L4–L5`, `L3-L5` (= L3-L4 and
  L4-L5), `L4-S1`, `L3 through L5`, any case;
* medial-branch wording: in a text that speaks of medial branches (or dorsal rami, or the third
  occipital nerve) single vertebrae are nerves, and each pair of consecutive nerves names the
  joint they supply (mappings/spine.toml `nerve_pairs`). Joint names are never nerves, and the
  nerve reading wins over the `L4 L5` spelling;
* sides: `left`, `right`, `bilateral`, `bilat`, `both` (sides), `b/l`, read in clauses cut at
  commas, semicolons, periods (not a decimal point) and line breaks, never at "and" (v1.2). In a
  clause whose first level comes before its first side word a side word applies to the levels
  written before it, back to the previous side word ("L4-5 left, L5-S1 right"); in any other
  clause to the levels that follow it, up to the next side word ("left L4-L5 and right L5-S1").
  Side words with no level between them are one side ("left and right" = bilateral). The sides of
  clauses that name no level are the whole procedure's and fill every level still without its
  own; failing that, a text that names one side only gives it to those levels ("L4-5, L5-S1
  left"). Nerves take sides like joints, before they are paired into joints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal, NamedTuple

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
# Clause breaks (docs/input.md, sides): commas, semicolons, line breaks, and periods except a
# decimal point ("2.5 mL"); no level spelling contains a period. "and" is not a break.
_CLAUSE_BREAK = re.compile(r"[,;\n\r]|\.(?!\d)|(?<!\d)\.")
# Every token above needs a digit or one of these words: a clause with none of them (most free text)
# is passed over without trying each token at each position.
_MAY_HOLD_TOKEN = re.compile(r"\d|third|left|right|bilat|b/l|both", re.IGNORECASE)
_NERVE_CONTEXT = re.compile(r"medial[\s-]+branch|dorsal[\s-]+ram|third[\s-]+occipital", re.IGNORECASE)


class LevelMention(NamedTuple):
    joint: str
    side: Side | None
    kind: LevelKind


@dataclass(slots=True)
class TextLevels:
    """What one text field says about levels and sides."""

    levels: list[LevelMention] = field(default_factory=list)
    whole_sides: set[Side] = field(default_factory=set)  # side words of the clauses that name no level

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
    # Tokens are read clause by clause, so no level spelling reaches across a clause break.
    clauses = [_clause_items(clause, nerve_mode) for clause in _CLAUSE_BREAK.split(normalized)]
    return _assign_sides(_join_nerve_lists([items for items in clauses if items]))


def _clause_items(clause: str, nerve_mode: bool) -> list[_Item]:
    items: list[_Item] = []
    if _MAY_HOLD_TOKEN.search(clause) is None:
        return items
    for match in _TOKEN.finditer(clause):
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
    return items


def _join_nerve_lists(clauses: list[list[_Item]]) -> list[list[_Item]]:
    """A clause of nerves alone continues the nerve list next to it: the commas of "right L3, L4
    and L5 medial branches" separate the nerves of one level mention, not clauses."""

    def nerves_only(clause: list[_Item]) -> bool:
        return all(item.kind == "nerve" for item in clause)

    backward: list[list[_Item]] = []
    for clause in clauses:
        if backward and nerves_only(clause) and backward[-1][-1].kind == "nerve":
            backward[-1] = [*backward[-1], *clause]
        else:
            backward.append(clause)
    joined: list[list[_Item]] = []
    pending: list[_Item] = []
    for i, clause in enumerate(backward):
        following = backward[i + 1] if i + 1 < len(backward) else None
        if nerves_only(clause) and following and following[0].kind == "nerve":
            pending.extend(clause)
        else:
            joined.append([*pending, *clause])
            pending = []
    return joined


@dataclass(slots=True)
class _Placed:
    """A level item with the side its own clause gives it."""

    item: _Item
    side: Side | None


def _side_groups(clause: list[_Item]) -> list[list[_Item] | set[Side]]:
    """The clause as runs of levels and side groups: side words with no level between them are
    one side ("left and right L4-L5", "L4-L5 left and right" = bilateral)."""
    runs: list[list[_Item] | set[Side]] = []
    for item in clause:
        if item.kind == "side":
            if runs and isinstance(runs[-1], set):
                runs[-1].add(side_word(item.value))
            else:
                runs.append({side_word(item.value)})
        elif runs and isinstance(runs[-1], list):
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def _place_clause(clause: list[_Item]) -> tuple[list[_Placed], list[Side | None]]:
    """The clause's levels with their own sides (docs/input.md, sides), and the side of each of
    its side groups (a clause without a level gives its sides to the whole procedure)."""
    runs = _side_groups(clause)
    sides = [union_side(run) for run in runs if isinstance(run, set)]
    levels_first = isinstance(runs[0], list)
    placed: list[_Placed] = []
    for i, run in enumerate(runs):
        if isinstance(run, set):
            continue
        # Written before its first side word, a clause's sides look back; otherwise forward.
        at = i + 1 if levels_first else i - 1
        neighbour = runs[at] if 0 <= at < len(runs) else None
        side = union_side(neighbour) if isinstance(neighbour, set) else None
        placed.extend(_Placed(item, side) for item in run)
    return placed, sides


def _assign_sides(clauses: list[list[_Item]]) -> TextLevels:
    result = TextLevels()
    placed: list[_Placed] = []
    named: set[Side] = set()
    for clause in clauses:
        levels, sides = _place_clause(clause)
        named.update(side for side in sides if side)
        if levels:
            placed.extend(levels)
        else:
            result.whole_sides.update(side_word(item.value) for item in clause)
    # A side for the whole procedure fills every level still without its own; failing that,
    # a text that names one side only gives it to them ("L4-5, L5-S1 left").
    fill = union_side(result.whole_sides) or (next(iter(named)) if len(named) == 1 else None)
    for level in placed:
        if level.side is None:
            level.side = fill

    nerve_runs: list[tuple[Side | None, list[str]]] = []
    for level in placed:
        if level.item.kind in ("joint", "ton"):
            kind: LevelKind = "joint" if level.item.kind == "joint" else "nerve"
            result.levels.append(LevelMention(level.item.value, level.side, kind))
        elif nerve_runs and nerve_runs[-1][0] == level.side:
            nerve_runs[-1][1].append(level.item.value)
        else:
            nerve_runs.append((level.side, [level.item.value]))
    for side, nerves in nerve_runs:
        result.levels.extend(LevelMention(joint, side, "nerve") for joint in _joints_of_nerves(nerves))
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
