"""The level and side grammar of free text (contract §2.2), with property tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.read.levels import read_text
from adapter.spine import VERTEBRAE, joint_between, spine

JOINTS = spine().joints


def levels(text: str) -> list[tuple[str, str | None, str]]:
    return [(m.joint, m.side, m.kind) for m in read_text(text).levels]


@pytest.mark.parametrize(
    "text",
    ["L4-L5", "L4-5", "L4/L5", "L4/5", "L4 L5", "L4–L5", "L4—L5", "l4-l5", "L4 - L5", "l4/5 facet", "(L4-5)"],
)
def test_spellings_of_one_joint(text: str) -> None:
    assert levels(text) == [("L4-L5", None, "joint")]


@pytest.mark.parametrize(
    ("text", "joints"),
    [
        ("L3-L5", ["L3-L4", "L4-L5"]),
        ("L4-S1", ["L4-L5", "L5-S1"]),
        ("L3 through L5", ["L3-L4", "L4-L5"]),
        ("C5-7", ["C5-C6", "C6-C7"]),
        ("T11-L1", ["T11-T12", "T12-L1"]),
        ("T12-L1 and L1-2", ["T12-L1", "L1-L2"]),
        ("C7-T1", ["C7-T1"]),
        ("L5-S1", ["L5-S1"]),
        ("L4-L5 and L5-S1", ["L4-L5", "L5-S1"]),
        ("L3-L4, L4-L5 and L5-S1", ["L3-L4", "L4-L5", "L5-S1"]),
    ],
)
def test_joints_and_spans(text: str, joints: list[str]) -> None:
    assert [j for j, _, _ in levels(text)] == joints


@pytest.mark.parametrize(
    ("text", "joints"),
    [
        ("L1, L2, L3 medial branches", ["L2-L3", "L3-L4"]),
        ("L3 and L4 medial branches", ["L4-L5"]),
        ("medial branches of L2 and L3", ["L3-L4"]),
        ("L4 medial branch and L5 dorsal ramus", ["L5-S1"]),
        ("T12 and L1 medial branches", ["L1-L2"]),
        ("T11 and T12 medial branches", ["T12-L1"]),
        ("T1 and T2 medial branches", ["T2-T3"]),
        ("C8 and T1 medial branches", ["T1-T2"]),
        ("C7 and C8 medial branches", ["C7-T1"]),
        ("C4 and C5 medial branches", ["C4-C5"]),
        ("third occipital nerve block", ["C2-C3"]),
        ("C3 medial branch", ["C2-C3"]),
        ("L4 L5 medial branches", ["L5-S1"]),  # the nerve reading wins over the `L4 L5` spelling
        ("L4 medial branch", []),  # a single nerve names no joint
        ("L2 and L4 medial branches", []),  # not consecutive
        ("medial branch block L4-L5", ["L4-L5"]),  # joint names are never nerves
    ],
)
def test_medial_branch_wording(text: str, joints: list[str]) -> None:
    assert [j for j, _, _ in levels(text)] == joints


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Right L3-L4, L4-L5 and L5-S1", [("L3-L4", "right"), ("L4-L5", "right"), ("L5-S1", "right")]),
        ("left L4-L5, right L5-S1", [("L4-L5", "left"), ("L5-S1", "right")]),
        ("L4-L5 and L5-S1, bilateral", [("L4-L5", "bilateral"), ("L5-S1", "bilateral")]),
        ("bilat L4-5", [("L4-L5", "bilateral")]),
        ("L4-5 both sides", [("L4-L5", "bilateral")]),
        ("L4-L5 left", [("L4-L5", "left")]),
        ("bilaterally L3-4", [("L3-L4", "bilateral")]),
        ("L4-L5 and L5-S1, both levels", [("L4-L5", None), ("L5-S1", None)]),
        ("left L2 and L3 medial branches", [("L3-L4", "left")]),
        ("L1, L2, L3 medial branches bilaterally", [("L2-L3", "bilateral"), ("L3-L4", "bilateral")]),
    ],
)
def test_sides(text: str, expected: list[tuple[str, str | None]]) -> None:
    assert [(j, s) for j, s, _ in levels(text)] == expected


def test_side_without_levels_is_the_whole_procedures() -> None:
    reading = read_text("Right lumbar facet joint injection")
    assert reading.levels == []
    assert reading.whole_sides == {"right"}
    assert read_text("left and right").whole_sides == {"left", "right"}


@pytest.mark.parametrize("text", ["", "facet injection", "C1-C2", "L6-L7", "S1 radiculopathy", "T1-weighted"])
def test_no_level(text: str) -> None:
    assert levels(text) == []


def test_joint_between() -> None:
    assert joint_between("L4", "L5") == ["L4-L5"]
    assert joint_between("L5", "L4") == ["L4-L5"]
    assert joint_between("L4", "L4") == []
    assert joint_between("C2", "S1") == list(JOINTS)


# --------------------------------------------------------------------------- properties

vertebra = st.sampled_from(VERTEBRAE)
separator = st.sampled_from(["-", "/", "–", " - ", " to "])


@given(upper=vertebra, lower=vertebra, sep=separator, case=st.sampled_from([str.upper, str.lower]))
def test_any_written_pair_reads_as_the_joints_between(upper: str, lower: str, sep: str, case: object) -> None:
    text = case(f"{upper}{sep}{lower}")  # type: ignore[operator]
    assert [j for j, _, _ in levels(text)] == joint_between(upper, lower)


@given(joint=st.sampled_from(JOINTS), side=st.sampled_from(["left", "right", "bilateral"]))
def test_side_before_a_joint_applies(joint: str, side: str) -> None:
    assert levels(f"{side} {joint} facet joint injection") == [(joint, side, "joint")]


@given(st.text(max_size=300))
@settings(max_examples=500)
def test_never_raises_and_only_names_real_joints(text: str) -> None:
    reading = read_text(text)
    assert all(m.joint in JOINTS for m in reading.levels)
    assert all(m.side in (None, "left", "right", "bilateral") for m in reading.levels)


@given(
    st.lists(
        st.one_of(
            st.sampled_from(JOINTS),
            st.sampled_from(["left", "right", "bilateral", "and", ",", "facet", "medial branch", "L4", "C3"]),
        ),
        max_size=12,
    )
)
def test_tokens_in_any_order_never_break_the_grammar(tokens: list[str]) -> None:
    reading = read_text(" ".join(tokens))
    named = {t for t in tokens if t in JOINTS}
    # Every joint name written is read (joint names are never nerves).
    assert named <= {m.joint for m in reading.levels}
