"""Structural validation of FHIR R4 (4.0.1) JSON resources.

The rules come from ``mappings/fhir-r4/`` (generated from the R4 StructureDefinitions by
``tools/gen_r4_schema.py``): known elements, JSON types, cardinality, choice types, primitive formats.
Invariants, terminology bindings, profiles and reference targets are out of scope, with one exception:
a contained resource must not itself contain resources (DomainResource invariant dom-2). That rule is
about shape, not content, and the StructureDefinitions cannot express it through cardinality alone.

Schema files are read on first use, one resource type at a time, so importing this module is cheap.
Issue messages name the element and the expectation but never echo the offending value, which may be
patient data.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, Final, NamedTuple

__all__ = ["SchemaIssue", "is_r4_resource_type", "r4_resource_types", "validate", "validate_with_depth"]


class SchemaIssue(NamedTuple):
    path: str
    code: str
    message: str


# Element spec: (kind, target, is_array, choice group, type name). ``target`` is a bound ``fullmatch``
# for _STR, a checker for _PRIM, a _Table for _COMPLEX / _PEXT, the expected resource type (or
# "Resource") for _RESOURCE. _STR exists so the commonest case, a string primitive whose rule is just its
# regex, is checked inline without a function call.
_STR: Final = 0
_PRIM: Final = 1
_PEXT: Final = 2
_COMPLEX: Final = 3
_RESOURCE: Final = 4
_RTYPE: Final = 5
_KINDS: Final = {"p": _PRIM, "x": _PEXT, "c": _COMPLEX, "r": _RESOURCE, "t": _RTYPE}
_CALENDAR: Final = frozenset({"date", "dateTime", "instant"})

_Problem = tuple[str, str]  # (issue code, what was expected)
_Checker = Callable[[object], "_Problem | None"]
_Spec = tuple[int, Any, bool, "str | None", str]


class _Table:
    __slots__ = ("elements", "name", "required")

    def __init__(self, name: str) -> None:
        self.name = name
        self.elements: dict[str, _Spec] = {}
        self.required: tuple[tuple[str, tuple[str, ...]], ...] = ()


class _Full(Exception):
    """Raised internally once ``max_issues`` issues have been collected."""


@cache  # resolved once: each table read asked for it again
def _data_dir() -> Path:
    # In a wheel the tables travel inside the package (adapter/mappings); in a checkout they sit
    # beside it (mappings/).
    package = Path(__file__).resolve().parent.parent
    installed = package / "mappings" / "fhir-r4"
    if installed.exists():
        return installed
    return package.parent / "mappings" / "fhir-r4"


_lock = threading.Lock()
_resource_types: frozenset[str] | None = None
_datatypes: dict[str, _Table] | None = None
_checkers: dict[str, _Checker] = {}
_fullmatch: dict[str, Callable[[str], object]] = {}
_resources: dict[str, _Table] = {}


def _load_json(name: str) -> Any:
    import orjson  # deferred: not needed until the first validation, keeps the import cheap

    return orjson.loads((_data_dir() / name).read_bytes())


def r4_resource_types() -> frozenset[str]:
    """Names of all concrete FHIR R4 resource types (146, including those R4B/R5 dropped)."""
    global _resource_types
    if _resource_types is None:
        with _lock:
            if _resource_types is None:
                _resource_types = frozenset(_load_json("index.json")["resourceTypes"])
    return _resource_types


def is_r4_resource_type(name: object) -> bool:
    return isinstance(name, str) and name in r4_resource_types()


# ------------------------------------------------------------------------------------ primitive checks

_INT_RANGES: Final = {
    "integer": (-(2**31), 2**31 - 1),
    "unsignedInt": (0, 2**31 - 1),
    "positiveInt": (1, 2**31 - 1),
}
_FORMAT_HINTS: Final = {
    "date": "a valid FHIR date (YYYY, YYYY-MM or YYYY-MM-DD, a real calendar date)",
    "dateTime": "a valid FHIR dateTime (YYYY, YYYY-MM, YYYY-MM-DD, or YYYY-MM-DDThh:mm:ss with a timezone;"
    " a real calendar date)",
    "instant": "a valid FHIR instant (YYYY-MM-DDThh:mm:ss with a timezone, a real calendar date)",
    "time": "a valid FHIR time (hh:mm:ss)",
}
_DAYS: Final = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _real_date(s: str) -> bool:
    """The R4 regexes allow day 31 in any month; the calendar does not."""
    if len(s) < 10:
        return True
    day = int(s[8:10])
    if day <= 28:
        return True
    month = int(s[5:7])
    if month != 2:
        return day <= _DAYS[month]
    year = int(s[0:4])
    return day <= (29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28)


_STRING_PATTERN: Final = r"[ \r\n\t\S]+"


def _plain_text(v: str) -> bool | None:
    return True if v and "\x0b" not in v and "\x0c" not in v else None


def _make_checker(name: str, rule: list[Any]) -> _Checker:
    kind: str = rule[0]
    if kind == "b":
        bad_bool: _Problem = ("structure", f"a JSON boolean (FHIR {name})")

        def check_bool(v: object) -> _Problem | None:
            return None if v is True or v is False else bad_bool

        return check_bool
    if kind == "i":
        lo, hi = _INT_RANGES[name]
        bad_int_type: _Problem = ("structure", f"a JSON integer (FHIR {name})")
        bad_int_range: _Problem = ("value", f"a FHIR {name} in the range {lo}..{hi}")

        def check_int(v: object) -> _Problem | None:
            if type(v) is not int:
                return bad_int_type
            return None if lo <= v <= hi else bad_int_range

        return check_int
    if kind == "d":
        bad_dec_type: _Problem = ("structure", "a JSON number (FHIR decimal)")
        bad_dec_value: _Problem = ("value", "a finite FHIR decimal")

        def check_decimal(v: object) -> _Problem | None:
            t = type(v)
            if t is int:
                return None
            if t is float:
                return None if math.isfinite(v) else bad_dec_value  # type: ignore[arg-type]
            return bad_dec_type

        return check_decimal
    pattern: str | None = rule[3] if len(rule) > 3 else rule[1]
    # ASCII semantics match the XML Schema / Java reading of \s and \S in the HL7 patterns.
    fullmatch: Callable[[str], object] | None = re.compile(pattern, re.ASCII).fullmatch if pattern else None
    if pattern == _STRING_PATTERN:
        # Same language as the pattern under ASCII semantics (it excludes only \v and \f, and needs one
        # character), decided by two memchr scans instead of a regex walk over long free text.
        fullmatch = _plain_text
    calendar = name in _CALENDAR
    if fullmatch is not None and not calendar:
        _fullmatch[name] = fullmatch
    bad_str_type: _Problem = ("structure", f"a JSON string (FHIR {name})")
    bad_format: _Problem = ("value", _FORMAT_HINTS.get(name, f"a valid, non-empty FHIR {name}"))

    def check_str(v: object) -> _Problem | None:
        if type(v) is not str and not isinstance(v, str):
            return bad_str_type
        if not v:
            return bad_format
        if fullmatch is None:
            # xhtml has no pattern; all it needs structurally is some content.
            return None if not v.isspace() else bad_format
        if fullmatch(v) is None:
            return bad_format
        if calendar and not _real_date(v):
            return bad_format
        return None

    return check_str


# ------------------------------------------------------------------------------------------ loading


def _link(raw: Mapping[str, Any], tables: dict[str, _Table], lookup: Callable[[str], _Table]) -> None:
    """Turn the generated tables into _Table objects whose specs point straight at their targets."""
    for name in raw:
        tables[name] = _Table(name)
    for name, body in raw.items():
        table = tables[name]
        for key, item in body["e"].items():
            kind = _KINDS[item[0]]
            tname: str = item[1]
            target: Any
            if kind == _PRIM:
                if tname in _fullmatch:
                    kind = _STR
                    target = _fullmatch[tname]
                else:
                    target = _checkers[tname]
            elif kind == _PEXT:
                target = lookup("Element")
            elif kind == _COMPLEX:
                target = lookup(tname)
            else:
                target = tname
            group = item[3] if len(item) > 3 else None
            table.elements[key] = (kind, target, bool(item[2] & 2), group, tname)
        table.required = tuple((r[0], tuple(r[1:])) for r in body["r"])


def _load_datatypes() -> dict[str, _Table]:
    global _datatypes
    if _datatypes is None:
        with _lock:
            if _datatypes is None:
                data = _load_json("datatypes.json")
                for name, rule in data["primitives"].items():
                    _checkers[name] = _make_checker(name, rule)
                tables: dict[str, _Table] = {}
                _link(data["tables"], tables, tables.__getitem__)
                _datatypes = tables
    return _datatypes


def _resource_table(rtype: str) -> _Table:
    table = _resources.get(rtype)
    if table is None:
        datatypes = _load_datatypes()
        with _lock:
            table = _resources.get(rtype)
            if table is None:
                local: dict[str, _Table] = {}

                def lookup(name: str) -> _Table:
                    return local[name] if name in local else datatypes[name]

                _link(_load_json(f"resources/{rtype}.json"), local, lookup)
                table = local[rtype]
                _resources[rtype] = table
    return table


# ------------------------------------------------------------------------------------------ walking

_SAFE_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}", re.ASCII).fullmatch
_ANY: Final = "Resource"
_ANY_CONTAINED: Final = "#contained"

# A path is the resource's path string, or (parent path, key) / (parent path, key, index): building
# strings for every element would cost more than the checks themselves, and only issues need them.
_Path = str | tuple[Any, ...]
_Work = tuple[Any, "_Table | None", _Path, str, int]  # value, table, path, expected type, depth


def _render(path: _Path) -> str:
    parts: list[str] = []
    while type(path) is tuple:
        parts.append(f".{path[1]}[{path[2]}]" if len(path) == 3 else f".{path[1]}")
        path = path[0]
    parts.append(str(path))
    return "".join(reversed(parts))


def _shown(key: object) -> str:
    # Keys are structure, not data, but a hostile or garbled key could still carry anything.
    return key if isinstance(key, str) and _SAFE_KEY(key) else "?"


def _is_object(v: object) -> bool:
    return type(v) is dict or isinstance(v, Mapping)


def validate(resource: Mapping[str, Any], *, max_issues: int = 20) -> list[SchemaIssue]:
    """Check ``resource`` against the R4 structure rules; an empty list means it is valid.

    Never raises for JSON-shaped input. At most ``max_issues`` issues are returned (at least one is
    always reported for an invalid resource, whatever ``max_issues`` says).
    """
    return validate_with_depth(resource, max_issues=max_issues)[0]


def validate_with_depth(resource: Mapping[str, Any], *, max_issues: int = 20) -> tuple[list[SchemaIssue], int]:
    """`validate`, and the JSON nesting depth of the resource found in the same walk (objects and
    arrays each count one level, the resource itself is level 1). The depth is exact when there
    are no issues; with issues, parts of the resource may not have been walked."""
    issues: list[SchemaIssue] = []
    deepest = [1]
    try:
        _walk(resource, issues, max(1, max_issues), deepest)
    except _Full:
        pass
    except Exception:  # pragma: no cover - a bug must reject, not crash the caller's request
        if not issues:
            issues.append(SchemaIssue("Resource", "exception", "The validator failed on this input."))
    return issues, deepest[0]


def _walk(root: object, issues: list[SchemaIssue], limit: int, deepest: list[int]) -> None:
    def add(path: _Path, key: str | None, code: str, message: str) -> None:
        where = _render(path)
        issues.append(SchemaIssue(where if key is None else f"{where}.{key}", code, message))
        if len(issues) >= limit:
            raise _Full

    checkers = _checkers
    # Iterative on purpose: valid R4 can nest deeper than Python's recursion limit (orjson allows 1024).
    stack: list[_Work] = [(root, None, "", _ANY, 1)]
    depth_seen = 1
    while stack:
        obj, table, path, expected, depth = stack.pop()
        if depth > depth_seen:
            depth_seen = depth
            deepest[0] = depth
        if table is None:
            table = _resource_root(obj, path, expected, add)
            if table is None:
                continue
            if not path:
                path = table.name
        elements = table.elements
        children: list[_Work] | None = None
        groups: dict[str, str] | None = None
        for key, value in obj.items():
            spec = elements.get(key)
            if spec is None:
                shown = _shown(key)
                add(path, shown, "structure", f"Unknown element '{shown}' in {table.name}.")
                continue
            kind, target, is_array, group, tname = spec
            if group is not None:
                variant = key[1:] if key[0] == "_" else key
                if groups is None:
                    groups = {group: variant}
                elif groups.setdefault(group, variant) != variant:
                    add(
                        path,
                        key,
                        "structure",
                        f"Only one type of choice element '{group}[x]' may be present.",
                    )
                    continue
            if value is None:
                add(path, key, "structure", f"Element '{key}' must not be null.")
                continue
            if not is_array:
                if kind == _STR:
                    if type(value) is str and value and target(value) is not None:
                        continue
                    problem = checkers[tname](value)
                    if problem is not None:
                        add(path, key, problem[0], f"Element '{key}' must be {problem[1]}.")
                elif type(value) is list:
                    add(path, key, "structure", f"Element '{key}' does not repeat and must not be an array.")
                elif kind == _COMPLEX or kind == _PEXT:
                    if type(value) is dict or _is_object(value):
                        if children is None:
                            children = [(value, target, (path, key), "", depth + 1)]
                        else:
                            children.append((value, target, (path, key), "", depth + 1))
                    else:
                        what = "an object" if kind == _PEXT else f"a {tname} object"
                        add(path, key, "structure", f"Element '{key}' must be {what}.")
                elif kind == _PRIM:
                    problem = target(value)
                    if problem is not None:
                        add(path, key, problem[0], f"Element '{key}' must be {problem[1]}.")
                elif kind == _RESOURCE:
                    if children is None:
                        children = []
                    children.append((value, None, (path, key), target, depth + 1))
                # _RTYPE (resourceType) was already checked when the resource's table was chosen.
                continue
            if type(value) is not list:
                add(path, key, "structure", f"Element '{key}' repeats and must be a JSON array.")
                continue
            if not value:
                add(path, key, "structure", f"Element '{key}' must not be an empty array.")
                continue
            if depth + 1 > depth_seen:
                depth_seen = depth + 1
                deepest[0] = depth_seen
            if kind == _COMPLEX:
                if children is None:
                    children = []
                for i, item in enumerate(value):
                    if type(item) is dict or _is_object(item):
                        children.append((item, target, (path, key, i), "", depth + 2))
                    else:
                        add((path, key, i), None, "structure", f"Element '{key}' must hold {tname} objects.")
            elif kind == _STR or kind == _PRIM:
                check = checkers[tname]
                ext: Any = None
                for i, item in enumerate(value):
                    if kind == _STR and type(item) is str and item and target(item) is not None:
                        continue
                    if item is None:
                        # Allowed only as a placeholder for an entry that has just an extension.
                        if ext is None:
                            ext = obj.get("_" + key)
                            if type(ext) is not list:
                                ext = ()
                        if i >= len(ext) or ext[i] is None:
                            add(
                                (path, key, i),
                                None,
                                "structure",
                                f"Element '{key}' has a null entry without an extension in '_{key}'.",
                            )
                        continue
                    problem = check(item)
                    if problem is not None:
                        add((path, key, i), None, problem[0], f"Element '{key}' must be {problem[1]}.")
            elif kind == _PEXT:
                base = obj.get(key[1:])
                if base is not None and (type(base) is not list or len(base) != len(value)):
                    add(path, key, "structure", f"Element '{key}' must be an array as long as '{key[1:]}'.")
                    continue
                if children is None:
                    children = []
                for i, item in enumerate(value):
                    if item is None:
                        if base is None:
                            add((path, key, i), None, "structure", f"Element '{key}' has a null entry.")
                    elif _is_object(item):
                        children.append((item, target, (path, key, i), "", depth + 2))
                    else:
                        add((path, key, i), None, "structure", f"Element '{key}' must hold objects or null.")
            elif kind == _RESOURCE:
                if children is None:
                    children = []
                nested = _ANY_CONTAINED if key == "contained" else target
                for i, item in enumerate(value):
                    children.append((item, None, (path, key, i), nested, depth + 2))
        for name, keys in table.required:
            for k in keys:
                if k in obj:
                    break
            else:
                add(path, name, "required", f"Required element '{name}' is missing.")
        if children:
            children.reverse()
            stack.extend(children)


def _resource_root(
    obj: Any, path: _Path, expected: str, add: Callable[[_Path, str | None, str, str], None]
) -> _Table | None:
    """The table for a resource-typed value, or None (after reporting why) if it has no usable type."""
    here = path or "Resource"
    if not _is_object(obj):
        add(here, None, "structure", "A resource must be a JSON object.")
        return None
    rtype = obj.get("resourceType")
    if rtype is None:
        add(here, None, "required", "The resource has no resourceType.")
        return None
    if type(rtype) is not str and not isinstance(rtype, str):
        add(here, None, "structure", "resourceType must be a JSON string.")
        return None
    if rtype not in r4_resource_types():
        add(here, None, "invalid", "resourceType is not an R4 resource type.")
        return None
    if expected != _ANY and expected != _ANY_CONTAINED and rtype != expected:
        add(here, None, "invalid", f"A {expected} resource is expected here.")
        return None
    table = _resource_table(rtype)
    if expected == _ANY_CONTAINED and "contained" in obj:
        add(path, "contained", "invalid", "A contained resource must not contain further resources.")
    return table


# ------------------------------------------------------------------------- for adapter.fhir.r4fast
# The walk that only tells valid resources apart reads the same linked tables and checks.

STR, PRIM, PEXT, COMPLEX, RESOURCE = _STR, _PRIM, _PEXT, _COMPLEX, _RESOURCE
ANY_RESOURCE, ANY_CONTAINED = _ANY, _ANY_CONTAINED
Table = _Table


def resource_table(rtype: str) -> Table:
    """The linked element table of an R4 resource type (read on first use)."""
    return _resource_table(rtype)


def primitive_checkers() -> dict[str, _Checker]:
    """The check of each primitive type by name (the datatypes read on first use)."""
    _load_datatypes()
    return _checkers
