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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The sentences of contract §2.2 (v1.2).
        ("L4-L5 left and L5-S1 right", [("L4-L5", "left"), ("L5-S1", "right")]),
        ("L4-5 left, L5-S1 right", [("L4-L5", "left"), ("L5-S1", "right")]),
        ("left L4-L5 and right L5-S1", [("L4-L5", "left"), ("L5-S1", "right")]),
        ("bilateral L4-5 and L5-S1", [("L4-L5", "bilateral"), ("L5-S1", "bilateral")]),
        ("L4-5 and L5-S1, bilateral, under fluoroscopy", [("L4-L5", "bilateral"), ("L5-S1", "bilateral")]),
        ("L4-5, L5-S1 left", [("L4-L5", "left"), ("L5-S1", "left")]),
    ],
)
def test_sides_of_the_contract_sentences(text: str, expected: list[tuple[str, str | None]]) -> None:
    assert [(j, s) for j, s, _ in levels(text)] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # v1.1 read every side word as a prefix and reversed these.
        ("L4-5 left; L5-S1 right", [("L4-L5", "left"), ("L5-S1", "right")]),
        ("L4-5 left. L5-S1 right.", [("L4-L5", "left"), ("L5-S1", "right")]),
        ("L4-5 left\nL5-S1 right", [("L4-L5", "left"), ("L5-S1", "right")]),
        ("L4/L5 right, L5/S1 left", [("L4-L5", "right"), ("L5-S1", "left")]),
        ("L4 L5 left, L5 S1 right", [("L4-L5", "left"), ("L5-S1", "right")]),
        # A decimal point is not a clause break; a sentence period is.
        ("L4-5 right, 0.5 mL each; L5-S1 left", [("L4-L5", "right"), ("L5-S1", "left")]),
        ("Levels: L4-5 left. Right: L5-S1", [("L4-L5", "left"), ("L5-S1", "right")]),
        # Styles mix clause by clause.
        ("right L3-L4, L5-S1 left", [("L3-L4", "right"), ("L5-S1", "left")]),
        ("left L3-L4 and L4-L5, right L5-S1", [("L3-L4", "left"), ("L4-L5", "left"), ("L5-S1", "right")]),
        # Side words with no level between them are one side, written before or after the levels.
        ("L4-L5 left and right", [("L4-L5", "bilateral")]),
        ("left and right L4-L5", [("L4-L5", "bilateral")]),
        # A postfix clause gives nothing to the levels after its last side word; a prefix clause
        # nothing to a side word with no level after it.
        ("L4-5 left and L5-S1, right L3-4", [("L4-L5", "left"), ("L5-S1", None), ("L3-L4", "right")]),
        ("left L4-5 and right", [("L4-L5", "left")]),
        # Two sides named: the level of a side-less clause keeps none (laterality-unknown).
        ("Right L3-L4, L4-L5; left L5-S1", [("L3-L4", "right"), ("L4-L5", None), ("L5-S1", "left")]),
        # A clause-free side fills only the levels without their own.
        ("L4-L5 left, L5-S1, bilateral", [("L4-L5", "left"), ("L5-S1", "bilateral")]),
        ("Right L4-5, bilateral", [("L4-L5", "right")]),
        ("L4-5 and L5-S1. Left.", [("L4-L5", "left"), ("L5-S1", "left")]),
        # Side words cut off from their levels by a comma are the whole procedure's, so these
        # levels are bilateral, as the clause rule says, whatever the writer meant.
        ("L4-5, left, and L5-S1, right", [("L4-L5", "bilateral"), ("L5-S1", "bilateral")]),
        (
            "L4-5 facet joint, left side; L5-S1 facet joint, right side",
            [("L4-L5", "bilateral"), ("L5-S1", "bilateral")],
        ),
    ],
)
def test_sides_in_clauses(text: str, expected: list[tuple[str, str | None]]) -> None:
    assert [(j, s) for j, s, _ in levels(text)] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("left L3 and L4 medial branches", [("L4-L5", "left")]),
        ("L3 and L4 medial branches left, L4 and L5 medial branches right", [("L4-L5", "left"), ("L5-S1", "right")]),
        ("left L3 and L4 medial branches, L4 and L5 medial branches right", [("L4-L5", "left"), ("L5-S1", "right")]),
        ("left L1, L2, L3 medial branches", [("L2-L3", "left"), ("L3-L4", "left")]),
        # The commas of a nerve list separate the nerves of one level mention, not clauses.
        (
            "right L3, L4 and L5 medial branches, left L3 and L4 medial branches",
            [("L4-L5", "right"), ("L5-S1", "right"), ("L4-L5", "left")],
        ),
        (
            "L3, L4 and L5 medial branches right, L3 and L4 medial branches left",
            [("L4-L5", "right"), ("L5-S1", "right"), ("L4-L5", "left")],
        ),
        ("L4 medial branch and L5 dorsal ramus, left", [("L5-S1", "left")]),
        ("third occipital nerve right, C3 and C4 medial branches left", [("C2-C3", "right"), ("C3-C4", "left")]),
    ],
)
def test_sides_of_medial_branch_wording(text: str, expected: list[tuple[str, str | None]]) -> None:
    assert [(j, s) for j, s, _ in levels(text)] == expected


@pytest.mark.parametrize("text", ["L4. L5", "L4.5", "L4\nL5", "L4;L5"])
def test_no_level_spelling_reaches_across_a_clause_break(text: str) -> None:
    assert levels(text) == []


def test_clause_free_sides_are_the_whole_procedures() -> None:
    # They fill levels from other sources too (read.py), not only this text's own.
    assert read_text("L4-5 facet injection, left side, fluoroscopy").whole_sides == {"left"}
    assert read_text("Left L4-5 facet injection").whole_sides == set()


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


# --------------------------------------------------------------------------- side properties (v1.2)

SIDE_WORDS: dict[str, str] = {
    "left": "left",
    "right": "right",
    "bilateral": "bilateral",
    "bilat": "bilateral",
    "both sides": "bilateral",
    "b/l": "bilateral",
}
BREAKS = [", ", "; ", ". ", "\n", ".\n"]


@st.composite
def written_joint(draw: st.DrawFn, joint: str) -> str:
    upper, lower = joint.split("-")
    short = lower[1:] if lower[0] == upper[0] else lower
    return draw(st.sampled_from([f"{upper}-{lower}", f"{upper}-{short}", f"{upper}/{lower}", f"{upper}/{short}"]))


@st.composite
def clause(draw: st.DrawFn, joints: list[str], sided: bool = True) -> tuple[str, str | None]:
    """One clause naming `joints`, with a side word before (prefix) or after (postfix) them."""
    names = " and ".join([draw(written_joint(j)) for j in joints])
    if not sided:
        return f"{names} facet joint injection", None
    word = draw(st.sampled_from(sorted(SIDE_WORDS)))
    text = draw(st.sampled_from([f"{word} {names} facet joints", f"{names} {word}", f"{names} facet, {word}"]))
    # The last spelling moves the side word into a clause of its own: that is the whole
    # procedure's side, which still gives these (the only) levels their side.
    return text, SIDE_WORDS[word]


@st.composite
def clauses(draw: st.DrawFn, sided: bool = True) -> list[tuple[list[str], str, str | None]]:
    """Clauses naming distinct joints, one side each, no clause-free side word between them."""
    joints = draw(st.lists(st.sampled_from(JOINTS), min_size=1, max_size=6, unique=True))
    groups: list[list[str]] = []
    for joint in joints:
        if groups and len(groups[-1]) < 3 and draw(st.booleans()):
            groups[-1].append(joint)
        else:
            groups.append([joint])
    written: list[tuple[list[str], str, str | None]] = []
    for group in groups:
        text, side = draw(clause(group, sided))
        written.append((group, text, side))
    return written


def joint_sides(text: str) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for mention in read_text(text).levels:
        assert mention.joint not in found, f"{mention.joint} read twice in {text!r}"
        found[mention.joint] = mention.side
    return found


def _strictly_sided(written: list[tuple[list[str], str, str | None]]) -> bool:
    return not any(", " in text for _, text, _ in written)


@given(written=clauses(), breaks=st.lists(st.sampled_from(BREAKS), min_size=6, max_size=6))
@settings(max_examples=300)
def test_each_level_takes_its_own_clauses_side(
    written: list[tuple[list[str], str, str | None]], breaks: list[str]
) -> None:
    text = "".join(t + b for (_, t, _), b in zip(written, breaks, strict=False))
    expected = {j: side for joints, _, side in written for j in joints}
    if not _strictly_sided(written):
        # A clause-free side word belongs to the whole procedure and fills only levels without one.
        free = {side for _, t, side in written if ", " in t}
        own = {j: side for joints, t, side in written for j in joints if ", " not in t}
        fill = "bilateral" if "bilateral" in free or len(free) > 1 else next(iter(free))
        expected = {j: own.get(j, fill) for j in expected}
    assert joint_sides(text) == expected


@given(written=clauses(), data=st.data())
@settings(max_examples=300)
def test_clause_order_does_not_matter(written: list[tuple[list[str], str, str | None]], data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(written))
    assert joint_sides(". ".join(t for _, t, _ in written)) == joint_sides(". ".join(t for _, t, _ in shuffled))


@given(
    written=clauses(),
    unsided=st.lists(st.sampled_from(JOINTS), max_size=3, unique=True),
    word=st.sampled_from(sorted(SIDE_WORDS)),
    at=st.integers(min_value=0, max_value=8),
)
@settings(max_examples=300)
def test_a_clause_free_side_never_overrides_a_levels_own(
    written: list[tuple[list[str], str, str | None]], unsided: list[str], word: str, at: int
) -> None:
    parts = [t for _, t, _ in written if ", " not in t]
    named = {j for joints, t, _ in written if ", " not in t for j in joints}
    unsided = [j for j in unsided if j not in named]
    parts += [f"{j} facet joint" for j in unsided]
    before = joint_sides("; ".join(parts))
    parts.insert(min(at, len(parts)), word)
    after = joint_sides("; ".join(parts))
    for joint, side in before.items():
        if joint in named:
            assert after[joint] == side
        else:
            assert after[joint] == SIDE_WORDS[word]


@given(written=clauses(sided=False), word=st.sampled_from(sorted(SIDE_WORDS)))
def test_a_text_naming_one_side_gives_it_to_its_side_less_levels(
    written: list[tuple[list[str], str, str | None]], word: str
) -> None:
    texts = [t for _, t, _ in written]
    texts[-1] = f"{texts[-1]} {word}"
    assert set(joint_sides(", ".join(texts)).values()) == {SIDE_WORDS[word]}


@given(
    first=st.lists(st.sampled_from(VERTEBRAE[:-1]), min_size=2, max_size=4, unique=True),
    second=st.lists(st.sampled_from(VERTEBRAE[:-1]), min_size=2, max_size=4, unique=True),
    prefix=st.booleans(),
    words=st.permutations(["left", "right", "bilateral"]),
)
def test_nerve_wording_takes_sides_like_joints(
    first: list[str], second: list[str], prefix: bool, words: list[str]
) -> None:
    """Two nerve clauses with their own sides: each names the joints it names alone, on its side."""
    parts = [" and ".join(nerves) + " medial branches" for nerves in (first, second)]
    sided = [f"{w} {p}" if prefix else f"{p} {w}" for w, p in zip(words, parts, strict=False)]
    reading = read_text("; ".join(sided))
    expected = [(m.joint, words[i]) for i, p in enumerate(parts) for m in read_text(p).levels]
    assert [(m.joint, m.side) for m in reading.levels] == expected
    assert all(m.kind == "nerve" for m in reading.levels)
