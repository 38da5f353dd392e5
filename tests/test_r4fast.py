"""adapter.fhir.r4fast agrees with adapter.fhir.r4schema: a resource it calls valid has no issue
and the same depth; for any other resource it defers (the full check reports the issues)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapter.fhir import r4fast, r4schema
from tests.test_r4schema import EXAMPLES, VALID

ROOT = Path(__file__).resolve().parent.parent


def agree(resource: Any) -> bool:
    """Whether the two checks agree on `resource`; returns the full check's verdict (valid)."""
    issues, depth = r4schema.validate_with_depth(resource)
    fast = r4fast.valid_depth(resource)
    if issues:
        assert fast is None, issues
    else:
        assert fast == depth
    return not issues


def _resources(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict) and isinstance(value.get("resourceType"), str):
        yield value
        for entry in value.get("entry", []) if value.get("resourceType") == "Bundle" else []:
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                yield from _resources(entry["resource"])


def project_inputs() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for folder in (ROOT / "examples", ROOT / "tests" / "cases", Path("/work/shared/cases/public")):
        for path in sorted(folder.rglob("*.json")) + sorted(folder.rglob("*.ndjson")) if folder.is_dir() else []:
            lines = path.read_bytes().splitlines() if path.suffix == ".ndjson" else [path.read_bytes()]
            for line in lines:
                try:
                    found.extend(_resources(orjson.loads(line)))
                except orjson.JSONDecodeError:
                    continue
    return found


def _paths(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*at, index))


def _mutations(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Each element of the resource broken in each of the ways the structure rules forbid."""
    for path in list(_paths(resource))[1:]:
        for change in ("drop", "null", "wrap", "empty", "number", "text", "unwrap", "unknown", "ext"):
            doc = copy.deepcopy(resource)
            holder: Any = doc
            for step in path[:-1]:
                holder = holder[step]
            last = path[-1]
            value = holder[last]
            if change == "drop":
                del holder[last]
            elif change == "null":
                holder[last] = None
            elif change == "wrap":
                holder[last] = [value]
            elif change == "empty":
                holder[last] = [] if isinstance(value, list) else {}
            elif change == "number":
                holder[last] = 1.5
            elif change == "text":
                holder[last] = " x"
            elif change == "unwrap" and isinstance(value, list) and value:
                holder[last] = value[0]
            elif change == "unknown" and isinstance(value, dict):
                value["notAnElement"] = "x"
            elif change == "ext" and isinstance(holder, dict) and isinstance(last, str):
                holder["_" + last] = [None] if isinstance(value, list) else {"id": "x"}
            else:
                continue
            yield doc


def test_official_examples_agree() -> None:
    if not EXAMPLES.is_dir():
        pytest.skip(f"{EXAMPLES} missing: run tools/fetch-r4-examples to get the official R4 examples")
    valid = 0
    for path in sorted(EXAMPLES.glob("*.json")):
        valid += agree(orjson.loads(path.read_bytes()))
    assert valid > 1000


def test_project_inputs_agree() -> None:
    resources = project_inputs()
    assert sum(agree(resource) for resource in resources) > 100


@pytest.mark.parametrize("name", sorted(VALID))
def test_every_broken_element_defers(name: str) -> None:
    for doc in _mutations(VALID[name]):
        agree(doc)


def test_broken_project_inputs_defer() -> None:
    for resource in project_inputs()[::7]:
        for doc in _mutations(resource):
            agree(doc)


def test_contained_and_nesting() -> None:
    inner = {"resourceType": "Organization", "id": "o", "name": "x"}
    outer = {"resourceType": "Patient", "id": "p", "contained": [inner]}
    assert agree(outer)
    assert not agree({**outer, "contained": [{**inner, "contained": [inner]}]})
    assert not agree({**outer, "contained": [{"resourceType": "NotAType"}]})
    assert not agree({**outer, "contained": ["x"]})
    assert not agree({"resourceType": "Patient", "birthDate": "2020-02-30"})
    two_values = {"resourceType": "Observation", "status": "final", "code": {}, "valueString": "a"}
    two_values["valueBoolean"] = True
    assert not agree(two_values)
    deep: dict[str, Any] = {"url": "http://x", "valueString": "v"}
    for _ in range(300):
        deep = {"url": "http://x", "extension": [deep]}
    assert agree({"resourceType": "Patient", "extension": [deep]})
