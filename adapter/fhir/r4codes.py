"""The R4 required bindings the adapter depends on: a status it cannot read is invalid input, never a
silently dropped procedure, diagnosis or piece of evidence (docs/input.md, valid R4).

The codes come from ``mappings/fhir-r4-bindings.json``, generated from HL7's R4 value sets by
``tools/gen_r4_bindings.py``. A ``code`` element must hold one of its value set's codes. A
``CodeableConcept`` must have a coding from the value set; a coding that names the value set's code
system (or no system) must use one of its codes. Messages name the element and the value set, never
the value. Checked with the structure, once per resource the adapter uses.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

from .r4schema import SchemaIssue

_lock = threading.Lock()
_bindings: dict[str, list[_Binding]] | None = None


class _Binding(NamedTuple):
    element: str  # the JSON key on the resource
    kind: str  # "code" or "CodeableConcept"
    value_set: str
    systems: dict[str, frozenset[str]]
    codes: frozenset[str]  # every code of the value set, whatever its system

    @property
    def listed(self) -> str:
        return ", ".join(sorted(self.codes))


def _load() -> dict[str, list[_Binding]]:
    global _bindings
    if _bindings is None:
        with _lock:
            if _bindings is None:
                import orjson

                from ..tables import mappings_dir

                raw = orjson.loads((mappings_dir() / "fhir-r4-bindings.json").read_bytes())
                table: dict[str, list[_Binding]] = {}
                for path, spec in raw["elements"].items():
                    rtype, _, element = path.partition(".")
                    systems = {system: frozenset(codes) for system, codes in spec["systems"].items()}
                    codes = frozenset(code for listed in systems.values() for code in listed)
                    table.setdefault(rtype, []).append(
                        _Binding(element, spec["type"], spec["valueSet"], systems, codes)
                    )
                _bindings = table
    return _bindings


def check(resource: Mapping[str, Any], path: str) -> list[SchemaIssue]:
    """Problems with the bound codes of a structurally valid resource and its contained resources."""
    issues = _check_one(resource, path)
    contained = resource.get("contained")
    if isinstance(contained, list):
        for index, inner in enumerate(contained):
            if isinstance(inner, Mapping):
                issues.extend(_check_one(inner, f"{path}.contained[{index}]"))
    return issues


def _check_one(resource: Mapping[str, Any], path: str) -> list[SchemaIssue]:
    rtype = resource.get("resourceType")
    bindings = _load().get(rtype) if isinstance(rtype, str) else None
    if not bindings:
        return []
    issues: list[SchemaIssue] = []
    for binding in bindings:
        value = resource.get(binding.element)
        if value is None:
            continue
        where = f"{path}.{binding.element}"
        if binding.kind == "code":
            if value not in binding.codes:
                issues.append(
                    SchemaIssue(
                        where,
                        "code-invalid",
                        f"Element '{binding.element}' must be a code of the R4 value set {binding.value_set} "
                        f"({binding.listed}).",
                    )
                )
            continue
        issues.extend(_check_concept(binding, value, where))
    return issues


def _check_concept(binding: _Binding, concept: Any, where: str) -> list[SchemaIssue]:
    codings = concept.get("coding") if isinstance(concept, Mapping) else None
    issues: list[SchemaIssue] = []
    bound = 0
    for index, coding in enumerate(codings if isinstance(codings, list) else []):
        if not isinstance(coding, Mapping):
            continue
        system, code = coding.get("system"), coding.get("code")
        if system is not None and system not in binding.systems:
            continue  # a translation in another code system
        allowed = binding.systems[system] if system is not None else binding.codes
        if code in allowed:
            bound += 1
        else:
            issues.append(
                SchemaIssue(
                    f"{where}.coding[{index}].code",
                    "code-invalid",
                    f"Element '{binding.element}' has a coding whose code is not in the R4 value set "
                    f"{binding.value_set} ({binding.listed}).",
                )
            )
    if not bound and not issues:
        issues.append(
            SchemaIssue(
                where,
                "code-invalid",
                f"Element '{binding.element}' must have a coding from the R4 value set {binding.value_set} "
                f"({binding.listed}).",
            )
        )
    return issues


def is_known_code(rtype: str, element: str, value: object) -> bool:
    """Whether a `code` element's value is one of its bound value set's codes (True when the adapter
    checks no binding for that element)."""
    binding = next((b for b in _load().get(rtype, ()) if b.element == element), None)
    return binding is None or value in binding.codes
