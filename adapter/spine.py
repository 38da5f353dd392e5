"""Facet joint levels, regions and sides (docs/coding.md, terms), from mappings/spine.toml."""

from __future__ import annotations

from functools import cache
from itertools import pairwise
from typing import Literal, NamedTuple

from .errors import RulePackError
from .tables import load_toml

Side = Literal["left", "right", "bilateral"]
Region = Literal["cervical-thoracic", "lumbar-sacral"]

# Vertebrae that bound a facet joint, cranial to caudal (C2 … S1), and the nerve order used by
# medial-branch wording, where C8 sits between C7 and T1.
VERTEBRAE: tuple[str, ...] = (
    *(f"C{n}" for n in range(2, 8)),
    *(f"T{n}" for n in range(1, 13)),
    *(f"L{n}" for n in range(1, 6)),
    "S1",
)
NERVES: tuple[str, ...] = (
    *(f"C{n}" for n in range(2, 9)),
    *(f"T{n}" for n in range(1, 13)),
    *(f"L{n}" for n in range(1, 6)),
)


class SpineTable(NamedTuple):
    version: str
    joints: tuple[str, ...]
    joint_index: dict[str, int]
    region_of: dict[str, Region]
    junction: str
    partner: str
    nerve_pairs: dict[tuple[str, str], str]
    single_nerve_joints: dict[str, str]
    snomed_laterality: dict[str, Side]
    snomed_joints: dict[str, str]


@cache
def spine() -> SpineTable:
    raw = load_toml("spine.toml")
    try:
        joints = tuple(str(j) for j in raw["joints"])
        index = {joint: i for i, joint in enumerate(joints)}
        expected = tuple(f"{a}-{b}" for a, b in pairwise(VERTEBRAE))
        if joints != expected:
            raise RulePackError("spine.toml: joints must list C2-C3 … L5-S1 in order.")
        region_of: dict[str, Region] = {}
        for region, (first, last) in raw["regions"].items():
            if region not in ("cervical-thoracic", "lumbar-sacral"):
                raise RulePackError(f"spine.toml: unknown region {region!r}.")
            for joint in joints[index[first] : index[last] + 1]:
                region_of[joint] = region
        if set(region_of) != set(joints):
            raise RulePackError("spine.toml: every joint must be in exactly one region.")
        pairs: dict[tuple[str, str], str] = {}
        for key, joint in raw["nerve_pairs"].items():
            upper, lower = key.split("+")
            if upper not in NERVES or lower not in NERVES or joint not in index:
                raise RulePackError(f"spine.toml: bad nerve pair {key} = {joint}.")
            pairs[(upper, lower)] = joint
        laterality: dict[str, Side] = {}
        for code, side in raw["snomed_laterality"].items():
            if side not in ("left", "right", "bilateral"):
                raise RulePackError(f"spine.toml: bad side {side!r} for SNOMED {code}.")
            laterality[str(code)] = side
        snomed_joints = {str(code): str(joint) for code, joint in raw["snomed_joints"].items()}
        if not set(snomed_joints.values()) <= set(joints):
            raise RulePackError("spine.toml: snomed_joints names an unknown joint.")
        return SpineTable(
            version=str(raw["version"]),
            joints=joints,
            joint_index=index,
            region_of=region_of,
            junction=str(raw["thoraco_lumbar"]["junction"]),
            partner=str(raw["thoraco_lumbar"]["partner"]),
            nerve_pairs=pairs,
            single_nerve_joints={str(k): str(v) for k, v in raw["single_nerve_joints"].items()},
            snomed_laterality=laterality,
            snomed_joints=snomed_joints,
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise RulePackError(f"spine.toml is malformed: {exc!r}") from exc


def joint_between(upper: str, lower: str) -> list[str]:
    """Joints from vertebra `upper` to vertebra `lower` (a joint when adjacent, a span otherwise)."""
    try:
        a, b = VERTEBRAE.index(upper), VERTEBRAE.index(lower)
    except ValueError:
        return []
    if a == b:
        return []
    if a > b:
        a, b = b, a
    return list(spine().joints[a:b])


def union_side(sides: set[Side] | frozenset[Side]) -> Side | None:
    """Left plus right, from any sources, is bilateral."""
    if not sides:
        return None
    if "bilateral" in sides or {"left", "right"} <= sides:
        return "bilateral"
    return next(iter(sides))
