"""Faster forms of the reader's small computations give the answers of the plain forms."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from adapter.fhir.values import codings
from adapter.read import levels

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["system", "code", "x"]), inner),
    max_leaves=8,
)


def _codings_plain(concept: Any) -> list[tuple[int, str | None, str | None, str | None]]:
    def text(item: dict[str, Any], key: str) -> str | None:
        value = item.get(key)
        return value if isinstance(value, str) and value else None

    source = concept if isinstance(concept, dict) else {}
    items = source.get("coding")
    listed = items if isinstance(items, list) else [] if items is None else [items]
    return [
        (i, text(c, "system"), text(c, "code"), text(c, "display")) for i, c in enumerate(listed) if isinstance(c, dict)
    ]


@given(st.one_of(_JSON, st.dictionaries(st.just("coding"), _JSON)))
def test_codings_as_the_plain_form(concept: Any) -> None:
    assert list(codings(concept)) == _codings_plain(concept)


_WORDS = [
    *("left", "Right", "BOTH", "both", " sides", "third", " occipital", "bilat", "B/L", "eral", "thru"),
    *("L4", "c 3", "T1", "\u0663", "facet", "\u017f", "\u212a", "-", " ", ","),
]


@given(st.lists(st.sampled_from(_WORDS), max_size=8).map("".join))
def test_a_clause_passed_over_holds_no_token(clause: str) -> None:
    if levels._MAY_HOLD_TOKEN.search(clause) is None:
        assert levels._TOKEN.search(clause) is None
