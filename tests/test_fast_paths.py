"""Faster forms of small computations on the hot path give the answers of the plain forms."""

from __future__ import annotations

import datetime as dt
import re
import uuid

from hypothesis import given
from hypothesis import strategies as st

from adapter.decision import NAMESPACE, name_uuid
from adapter.read.locations import _names
from adapter.rules.selection import load_pack

# Characters around which the whole-word test changes its answer: word characters of several
# scripts, the reference punctuation it treats as part of a word, and separators.
_TEXT = st.text(alphabet="ab1_/- .·é٣Ⅻ\u00a0:[]()Z", max_size=14)


@given(st.text(max_size=40))
def test_name_uuid_is_uuid5(name: str) -> None:
    try:
        expected = str(uuid.uuid5(NAMESPACE, name))
    except UnicodeEncodeError:  # a lone surrogate: neither form takes it
        return
    assert name_uuid(name) == expected


@given(_TEXT, st.text(alphabet="ab1_/- é٣", max_size=4))
def test_a_label_is_named_as_the_regex_says(message: str, label: str) -> None:
    expected = re.search(rf"(?<![\w/-]){re.escape(label)}(?![\w/-])", message) is not None
    assert _names(message, label) is expected


def test_a_pack_on_a_day_is_the_same_pack_kept_or_not() -> None:
    pack = load_pack("medicare")
    for day in (dt.date(2024, 12, 31), dt.date(2025, 1, 1), dt.date(2019, 1, 1)):
        first = pack.on(day)
        assert pack.on(day) is first
        assert pack._on(day) == first
        assert first.in_force_on == day
    assert pack.on(dt.date(2024, 12, 31)).in_force != pack.on(dt.date(2025, 1, 1)).in_force
