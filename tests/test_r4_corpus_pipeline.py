"""Valid R4 is never called invalid, end to end: every official R4 example (npm hl7.fhir.r4.examples)
goes through the adapter's reader without being rejected as not-FHIR or not-R4, and the examples of
the resource types the adapter reads, grafted onto a patient's record, never break coding or checks.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from test_r4schema import KNOWN_INVALID_EXAMPLES

from adapter.errors import InvalidR4Error, NoFacetProcedureError, NotFhirError
from adapter.pipeline import Options, process

CORPUS = REPO / ".cache" / "r4-examples" / "package"
EXAMPLE = REPO / "examples" / "medicare-lumbar-bilateral" / "input.json"
PATIENT = "Patient/pt-ana"
# Types the adapter reads from a patient's record.
GRAFTED_TYPES = (
    "Procedure",
    "Condition",
    "Observation",
    "Coverage",
    "Encounter",
    "MedicationStatement",
    "MedicationRequest",
    "ClaimResponse",
    "ServiceRequest",
)
PATIENT_ELEMENTS = ("subject", "patient", "beneficiary")


def _corpus() -> list[Path]:
    if not CORPUS.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("the R4 example corpus is missing under CI=true: run tools/fetch-r4-examples")
        pytest.skip("run tools/fetch-r4-examples to fetch the official R4 examples")
    return sorted(p for p in CORPUS.glob("*.json") if p.name not in ("package.json", ".index.json"))


def test_every_official_example_is_accepted_as_r4_input() -> None:
    rejected = []
    for path in _corpus():
        if path.name in KNOWN_INVALID_EXAMPLES:
            continue
        try:
            process(path.read_bytes(), Options(payer="medicare"), name=path.name)
        except NoFacetProcedureError:
            continue  # the expected answer: valid R4, but nothing to code
        except (NotFhirError, InvalidR4Error) as error:
            rejected.append(f"{path.name}: {error.message}")
    assert not rejected, rejected[:20]


def _graft(resource: dict[str, Any], prefix: str) -> dict[str, Any]:
    copied = copy.deepcopy(resource)
    copied["id"] = f"{prefix}-{copied.get('id', 'x')}"[:64]
    for element in PATIENT_ELEMENTS:
        if isinstance(copied.get(element), dict) and "reference" in copied[element]:
            copied[element] = {"reference": PATIENT}
    return copied


def test_official_examples_grafted_onto_a_record_never_break_the_adapter() -> None:
    base = json.loads(EXAMPLE.read_text())
    grafted = 0
    for index, path in enumerate(_corpus()):
        if path.name in KNOWN_INVALID_EXAMPLES:
            continue
        resource = json.loads(path.read_text())
        if resource.get("resourceType") not in GRAFTED_TYPES:
            continue
        base["entry"].append({"resource": _graft(resource, f"x{index}")})
        grafted += 1
    assert grafted > 100
    result = process(json.dumps(base).encode(), Options(payer="medicare"))
    assert result.exit_code in (0, 1)
    lines = sorted((line.code, tuple(line.modifiers)) for line in result.coding.lines)
    assert ("64493", ("50", "KX")) in lines
    assert result.bundle["entry"][0]["resource"]["resourceType"] == "Claim"
