"""Small, defensive accessors for FHIR JSON dicts.

Input is untrusted: any element may have the wrong JSON type. These helpers return an empty
value instead of raising, so the reader never crashes on odd input (structure errors in the
resources the adapter uses are reported by the R4 schema check before reading).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Iterator, Mapping
from typing import Any

_DATE_PREFIX = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")


def as_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    if value is None:
        return []
    return [value]


def dicts(value: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, item) for the dict items of a list element."""
    for index, item in enumerate(as_list(value)):
        if isinstance(item, dict):
            yield index, item


def get_str(obj: Any, key: str) -> str | None:
    # `type(...) is dict` first: almost every value is a plain dict, and the Mapping ABC check
    # costs several times more.
    if type(obj) is dict or isinstance(obj, Mapping):
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def get_dict(obj: Any, key: str) -> dict[str, Any]:
    if type(obj) is dict or isinstance(obj, Mapping):
        value = obj.get(key)
        if isinstance(value, dict):
            return value
    return {}


def codings(concept: Any) -> Iterator[tuple[int, str | None, str | None, str | None]]:
    """(index, system, code, display) of a CodeableConcept's codings."""
    # `dicts` and `get_str` written out: the reader asks this of every concept it looks at.
    if not isinstance(concept, dict):
        return
    items = concept.get("coding")
    if not isinstance(items, list):
        if items is None:
            return
        items = [items]
    for index, coding in enumerate(items):
        if isinstance(coding, dict):
            system, code, display = coding.get("system"), coding.get("code"), coding.get("display")
            yield (
                index,
                system if isinstance(system, str) and system else None,
                code if isinstance(code, str) and code else None,
                display if isinstance(display, str) and display else None,
            )


def concept_text(concept: Any) -> str | None:
    return get_str(concept, "text")


def concept_words(concept: Any) -> str | None:
    """The text of a concept, else the displays of its codings."""
    text = concept_text(concept)
    if text:
        return text
    displays = [display for _, _, _, display in codings(concept) if display]
    return "; ".join(displays) if displays else None


def note_texts(resource: Mapping[str, Any]) -> Iterator[tuple[int, str]]:
    for index, note in dicts(resource.get("note")):
        text = get_str(note, "text")
        if text:
            yield index, text


def reference_of(value: Any) -> str | None:
    return get_str(value, "reference")


def parse_date(value: Any) -> dt.date | None:
    """The calendar date as written (no time-zone conversion); partial dates give None."""
    if not isinstance(value, str):
        return None
    match = _DATE_PREFIX.match(value)
    if not match:
        return None
    try:
        return dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def parse_instant(value: Any) -> dt.datetime | None:
    """An aware datetime when the value has a time and a zone, else None."""
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def period_start_end(resource: Mapping[str, Any], prefix: str) -> tuple[Any, Any, str | None]:
    """(start, end, element) of `{prefix}DateTime`, `{prefix}Instant`, `{prefix}Period` or the
    first event of `{prefix}Timing` — raw values, element name."""
    for single in ("DateTime", "Instant"):
        if f"{prefix}{single}" in resource:
            value = resource.get(f"{prefix}{single}")
            return value, value, f"{prefix}{single}"
    period = resource.get(f"{prefix}Period")
    if isinstance(period, dict):
        return period.get("start"), period.get("end"), f"{prefix}Period"
    timing = resource.get(f"{prefix}Timing")
    if isinstance(timing, dict) and isinstance(timing.get("event"), list) and timing["event"]:
        return timing["event"][0], timing["event"][-1], f"{prefix}Timing.event[0]"
    return None, None, None


def add_months(day: dt.date, months: int) -> dt.date:
    """Calendar-month arithmetic, clamping to the month's last day (Jan 31 + 1 month = Feb 28)."""
    month_index = day.month - 1 + months
    year = day.year + month_index // 12
    month = month_index % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def reference_holders(value: Any, *, into_contained: bool = False) -> Iterator[dict[str, Any]]:
    """Every dict with a string `reference` (a Reference), found iteratively: input may nest deeper
    than Python's recursion limit. Contained resources are skipped unless `into_contained`."""
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            if isinstance(current.get("reference"), str):
                yield current
            stack.extend(v for k, v in current.items() if into_contained or k != "contained")
        elif isinstance(current, list):
            stack.extend(current)


def copy_with_references(value: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A deep copy of a JSON object and, in the copy, every dict with a string `reference` that
    `reference_holders` would find (contained resources are copied, not searched): one walk where
    a copy and a search took two. Iterative, like `reference_holders`."""
    holders: list[dict[str, Any]] = []
    root: dict[str, Any] = {}
    stack: list[tuple[Any, Any, bool]] = [(value, root, True)]
    inner: Any
    while stack:
        source, target, search = stack.pop()
        if type(source) is dict:
            if search and type(source.get("reference")) is str:
                holders.append(target)
            for key, item in source.items():
                kind = type(item)
                if kind is dict:
                    target[key] = inner = {}
                    stack.append((item, inner, search and key != "contained"))
                elif kind is list:
                    target[key] = inner = []
                    stack.append((item, inner, search and key != "contained"))
                else:
                    target[key] = item
        else:
            for item in source:
                kind = type(item)
                if kind is dict:
                    inner = {}
                    target.append(inner)
                    stack.append((item, inner, search))
                elif kind is list:
                    inner = []
                    target.append(inner)
                    stack.append((item, inner, search))
                else:
                    target.append(item)
    return root, holders
