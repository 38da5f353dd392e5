"""Everything written is valid FHIR R4 (contract §5): checked with the fhir.resources R4B models
(structurally identical to R4 for these resources) and with the adapter's own R4 schema."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from golden import CASES_DIR, case_files

from adapter.errors import InputError
from adapter.fhir import r4schema
from adapter.pipeline import Options, process

OWN_CASES = Path(__file__).resolve().parent / "cases"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CASES = [*case_files(CASES_DIR), *case_files(OWN_CASES)]
NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def assert_valid_r4(resource: dict[str, Any]) -> None:
    issues = r4schema.validate(resource)
    assert not issues, [f"{i.path}: {i.message}" for i in issues]
    model = get_fhir_model_class(resource["resourceType"])
    model.model_validate(resource)


def _outputs(raw: bytes, options: Options) -> tuple[dict[str, Any], dict[str, Any]] | None:
    try:
        result = process(raw, options)
    except InputError:
        return None
    return result.bundle, result.outcome()


def _case_inputs() -> list[tuple[str, bytes, Options]]:
    found = []
    for path in CASES:
        case = json.loads(path.read_text())
        options = Options(payer=case["payer"], use=case["use"], pos=case.get("pos"), now=NOW)
        found.append((path.name, json.dumps(case["input"]).encode(), options))
    for path in sorted(EXAMPLES.glob("*/input.*")):
        args = json.loads((path.parent / "args.json").read_text()) if (path.parent / "args.json").is_file() else {}
        found.append((f"examples/{path.parent.name}", path.read_bytes(), Options(now=NOW, **args)))
    return found


INPUTS = _case_inputs()


@pytest.mark.parametrize(("name", "raw", "options"), INPUTS, ids=[i[0] for i in INPUTS])
def test_written_bundle_and_outcome_are_valid_r4(name: str, raw: bytes, options: Options) -> None:
    outputs = _outputs(raw, options)
    if outputs is None:
        pytest.skip("input error case: nothing is written")
    bundle, outcome = outputs
    assert_valid_r4(bundle)
    assert_valid_r4(outcome)
    claim = bundle["entry"][0]["resource"]
    assert claim["resourceType"] == "Claim"
    urls = [entry["fullUrl"] for entry in bundle["entry"]]
    assert len(urls) == len(set(urls)), "each resource once"
    keys = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"] if "id" in e["resource"]]
    assert len(keys) == len(set(keys)), "each resource once"
    for entry in bundle["entry"]:
        assert_valid_r4(entry["resource"])
    # Every reference the Claim makes resolves inside the Bundle (or is display-only).
    for reference in _references(claim):
        assert reference in urls, reference
    # Item pointers point at existing diagnoses and supporting info.
    diagnosis = {d["sequence"] for d in claim.get("diagnosis", [])}
    information = {s["sequence"] for s in claim.get("supportingInfo", [])}
    for item in claim.get("item", []):
        assert set(item.get("diagnosisSequence", [])) <= diagnosis
        assert len(item.get("diagnosisSequence", [])) <= 4
        assert set(item.get("informationSequence", [])) <= information
    assert len(claim.get("diagnosis", [])) <= 12


def _references(value: Any) -> list[str]:
    found: list[str] = []
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            if isinstance(current.get("reference"), str):
                found.append(current["reference"])
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return found


@pytest.mark.parametrize(("name", "raw", "options"), INPUTS[:3], ids=[i[0] for i in INPUTS[:3]])
def test_same_input_same_identifier_and_fullurls(name: str, raw: bytes, options: Options) -> None:
    first = _outputs(raw, options)
    second = _outputs(raw, dataclasses.replace(options, now=NOW + dt.timedelta(days=1)))
    assert first is not None and second is not None
    claim_a, claim_b = first[0]["entry"][0]["resource"], second[0]["entry"][0]["resource"]
    assert claim_a["identifier"] == claim_b["identifier"]
    assert [e["fullUrl"] for e in first[0]["entry"]] == [e["fullUrl"] for e in second[0]["entry"]]
    assert claim_a["created"] != claim_b["created"]
