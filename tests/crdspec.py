"""The structure of CRD's coverage-information extension, read from its FSH definition, and a check
of an extension against it.

`summary(corpus, version)` reads `input/fsh/extensions/CoverageInformation.fsh` and the value sets
of `input/fsh/valuesets/CoverageInformationValuesets.fsh` of the CRD source (shared reference
corpus: `davinci-crd/` for 2.2, `davinci-crd@2.0.1/` for 2.0) into: each sub-extension's
cardinality, value types and required binding (with its codes), the `detail` parts, and the
invariants the extension obeys. The summaries are committed in tests/data/crd/ so the check runs
without the corpus; `test_cds_coverage.py` regenerates them when the corpus is there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "reference" / "crd-corpus"
SUMMARIES = Path(__file__).resolve().parent / "data" / "crd" / "coverage-information.json"
FOLDERS = {"2.2": "davinci-crd", "2.0": "davinci-crd@2.0.1"}

_ELEMENT = re.compile(r"^(\s*)\* extension\[([\w-]+)\]")
_CONTAINS = re.compile(r"^(\s*)\* extension contains")
_MEMBER = re.compile(r"^\s+([\w-]+) (\d+)\.\.(\d+|\*)(?: MS)?(?: and)?\s*$")
_ONLY = re.compile(r"^(\s*)\* value\[x\] only (.+?)\s*$")
_FROM = re.compile(r"^(\s*)\* value(?:\[x\]|CodeableConcept) from (\w+) \((\w+)\)")
_VALUESET = re.compile(r"^ValueSet: (\w+)")
_CODE = re.compile(r"^\* [$\w-]+(?:\|[\d.]+)?#([\w-]+)")
_OBEYS = re.compile(r"^\* obeys (.+)$")


def _types(text: str) -> list[str]:
    if text.startswith("Reference("):
        return ["Reference"]
    names = [part.strip() for part in text.split(" or ")]
    return sorted({"Quantity" if n == "SimpleQuantity" else n.split("(", 1)[0] for n in names})


def value_sets(path: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    current: str | None = None
    for line in path.read_text().splitlines():
        named = _VALUESET.match(line)
        if named:
            current = named.group(1)
            found[current] = []
            continue
        code = _CODE.match(line)
        if code and current is not None:
            found[current].append(code.group(1))
    return found


def summary(corpus: Path, version: str) -> dict[str, Any]:
    root = corpus / FOLDERS[version] / "input" / "fsh"
    sets = value_sets(root / "valuesets" / "CoverageInformationValuesets.fsh")
    elements: dict[str, dict[str, Any]] = {}
    detail: dict[str, dict[str, Any]] = {}
    invariants: list[str] = []
    context: dict[int, str] = {}
    members: dict[str, dict[str, Any]] | None = None
    for line in (root / "extensions" / "CoverageInformation.fsh").read_text().splitlines():
        obeys = _OBEYS.match(line)
        if obeys:
            invariants = [name.strip() for name in obeys.group(1).split(" and ")]
            continue
        contains = _CONTAINS.match(line)
        if contains:
            members = elements if not contains.group(1) else detail
            continue
        member = _MEMBER.match(line) if members is not None else None
        if member and members is not None:
            members[member.group(1)] = {"min": int(member.group(2)), "max": member.group(3), "types": [], "codes": None}
            continue
        members = None
        element = _ELEMENT.match(line)
        if element:
            depth = len(element.group(1)) // 2
            context = {d: n for d, n in context.items() if d < depth}
            context[depth] = element.group(2)
            continue
        only, binding = _ONLY.match(line), _FROM.match(line)
        match = only or binding
        if match is None:
            continue
        depth = len(match.group(1)) // 2 - 1
        target = elements.get(context.get(0, "")) if depth == 0 else detail.get(context.get(1, ""))
        if target is None:
            continue
        if only:
            target["types"] = _types(only.group(2))
        elif binding and binding.group(3) == "required":
            target["codes"] = sorted(sets[binding.group(2)])
    return {"elements": elements, "detail": detail, "invariants": invariants}


def _value_type(part: Mapping[str, Any]) -> tuple[str, Any] | None:
    for key, value in part.items():
        if key.startswith("value"):
            name = key[len("value") :]
            return (name[0].lower() + name[1:] if name[0].isupper() and name not in _UPPER else name), value
    return None


_UPPER = {"Reference", "Coding", "CodeableConcept", "ContactDetail", "ContactPoint", "Quantity", "Period"}


def _check(parts: list[Mapping[str, Any]], elements: Mapping[str, Any], where: str) -> list[str]:
    problems: list[str] = []
    for name, spec in elements.items():
        count = sum(1 for p in parts if p.get("url") == name)
        if count < spec["min"] or (spec["max"] != "*" and count > int(spec["max"])):
            problems.append(f"{where}{name}: {count} repetition(s), the definition allows {spec['min']}..{spec['max']}")
    for part in parts:
        name = part.get("url")
        spec = elements.get(str(name))
        if spec is None:
            problems.append(f"{where}{name}: not a part the definition has")
            continue
        if name == "detail":
            continue
        typed = _value_type(part)
        if typed is None:
            problems.append(f"{where}{name}: no value")
            continue
        type_, value = typed
        if spec["types"] and type_ not in spec["types"]:
            problems.append(f"{where}{name}: value{type_} is not one of {spec['types']}")
        if spec["codes"] is not None and type_ == "code" and value not in spec["codes"]:
            problems.append(f"{where}{name}: {value!r} is not in the required value set")
    return problems


def conform(extension: Mapping[str, Any], spec: Mapping[str, Any]) -> list[str]:
    """What in `extension` the definition summarised in `spec` does not allow."""
    parts = list(extension.get("extension", []))
    problems = _check(parts, spec["elements"], "")
    for part in parts:
        if part.get("url") == "detail":
            problems += _check(list(part.get("extension", [])), spec["detail"], "detail.")
    return problems
