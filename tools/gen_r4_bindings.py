#!/usr/bin/env python3
"""Generate ``mappings/fhir-r4-bindings.json``: the codes of the R4 required bindings the adapter
depends on (``adapter.fhir.r4codes`` checks them with the R4 structure).

Input: HL7's own StructureDefinitions, ValueSets and CodeSystems from the npm package
``hl7.fhir.r4.examples@4.0.1``, by default ``.cache/r4-examples/package`` (``tools/fetch-r4-examples``).
For each element below, the generator reads the element's binding from the resource's
StructureDefinition (it must be ``required``), expands the value set from its ``compose`` (whole code
systems, listed concepts, included value sets; a filter or an exclude is an error, so a value set this
simple expansion cannot read is never silently half-expanded) and writes the codes by system.

    .venv/bin/python tools/gen_r4_bindings.py [--package DIR] [--check]

``--check`` compares with the committed file instead of writing it (exit 1 when they differ).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PACKAGE = ROOT / ".cache" / "r4-examples" / "package"
OUT = ROOT / "mappings" / "fhir-r4-bindings.json"
FHIR_VERSION = "4.0.1"
SOURCE = "hl7.fhir.r4.examples@4.0.1 (StructureDefinitions, ValueSets, CodeSystems)"

# The required bindings whose codes decide what the adapter does with a resource: a status it does not
# know would silently drop a procedure, a diagnosis or a piece of evidence.
ELEMENTS = (
    "Procedure.status",
    "ServiceRequest.status",
    "Condition.clinicalStatus",
    "Condition.verificationStatus",
    "Coverage.status",
    "Observation.status",
    "MedicationStatement.status",
    "MedicationRequest.status",
    "ClaimResponse.use",
    "ClaimResponse.outcome",
)


class GenError(Exception):
    pass


def _by_url(package: Path, prefix: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(package.glob(f"{prefix}-*.json")):
        doc = orjson.loads(path.read_bytes())
        if isinstance(doc, dict) and isinstance(doc.get("url"), str):
            found[doc["url"]] = doc
    return found


def _concepts(concepts: list[dict[str, Any]]) -> list[str]:
    codes: list[str] = []
    for concept in concepts:
        codes.append(concept["code"])
        codes.extend(_concepts(concept.get("concept", [])))
    return codes


def expand(url: str, value_sets: dict[str, Any], code_systems: dict[str, Any]) -> dict[str, list[str]]:
    canonical = url.split("|")[0]
    value_set = value_sets.get(canonical)
    if value_set is None:
        raise GenError(f"value set {canonical} is not in the package")
    compose = value_set.get("compose", {})
    if compose.get("exclude"):
        raise GenError(f"value set {canonical} excludes codes; this generator does not expand excludes")
    systems: dict[str, list[str]] = {}
    for include in compose.get("include", []):
        if include.get("filter"):
            raise GenError(f"value set {canonical} filters a code system; this generator does not expand filters")
        for nested in include.get("valueSet", []):
            for system, codes in expand(nested, value_sets, code_systems).items():
                systems.setdefault(system, []).extend(codes)
        system = include.get("system")
        if system is None:
            continue
        if include.get("concept"):
            codes = [concept["code"] for concept in include["concept"]]
        else:
            code_system = code_systems.get(system)
            if code_system is None:
                raise GenError(f"code system {system} (value set {canonical}) is not in the package")
            codes = _concepts(code_system.get("concept", []))
        systems.setdefault(system, []).extend(codes)
    return {system: sorted(set(codes)) for system, codes in sorted(systems.items())}


def generate(package: Path) -> dict[str, Any]:
    value_sets = _by_url(package, "ValueSet")
    code_systems = _by_url(package, "CodeSystem")
    elements: dict[str, Any] = {}
    for path in ELEMENTS:
        rtype = path.split(".")[0]
        definition = orjson.loads((package / f"StructureDefinition-{rtype}.json").read_bytes())
        element = next((e for e in definition["snapshot"]["element"] if e["path"] == path), None)
        if element is None:
            raise GenError(f"{path} is not in StructureDefinition-{rtype}.json")
        binding = element.get("binding", {})
        if binding.get("strength") != "required":
            raise GenError(f"{path} is bound {binding.get('strength')!r}, not required")
        types = [t["code"] for t in element.get("type", [])]
        if types not in (["code"], ["CodeableConcept"]):
            raise GenError(f"{path} is of type {types}; only code and CodeableConcept are supported")
        elements[path] = {
            "type": types[0],
            "valueSet": binding["valueSet"].split("|")[0],
            "systems": expand(binding["valueSet"], value_sets, code_systems),
        }
    return {"fhirVersion": FHIR_VERSION, "source": SOURCE, "elements": elements}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", type=Path, default=DEFAULT_PACKAGE)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if not (args.package / "StructureDefinition-Procedure.json").is_file():
        print(f"{args.package}: no R4 package there (run tools/fetch-r4-examples)", file=sys.stderr)
        return 2
    try:
        text = orjson.dumps(generate(args.package), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    except GenError as exc:
        print(f"gen_r4_bindings: {exc}", file=sys.stderr)
        return 2
    if args.check:
        same = OUT.is_file() and OUT.read_bytes() == text
        print(f"{OUT.name} is current" if same else f"{OUT.name} differs: regenerate it", file=sys.stderr)
        return 0 if same else 1
    OUT.write_bytes(text)
    print(f"wrote {OUT.relative_to(ROOT)} ({len(ELEMENTS)} elements)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
