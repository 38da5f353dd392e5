"""Every input form of contract §2: Bundles of any type, a single resource, NDJSON, references of
every kind (relative, absolute, urn:uuid, contained), history Bundles."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from builders import CaseBuilder, lines, rule_ids
from test_output_valid import assert_valid_r4

from adapter.errors import NoFacetProcedureError
from adapter.pipeline import Options, process

KX50 = frozenset({"50", "KX"})


def _therapeutic_case() -> CaseBuilder:
    case = CaseBuilder()
    case.block("L4-L5", date="2026-07-01", relief=90)
    case.block("L4-L5", date="2026-07-22", relief=85)
    case.block("L4-L5", intent="therapeutic")
    return case


def _as_transaction_without_ids(bundle: dict[str, Any]) -> dict[str, Any]:
    urls = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        urls[f"{resource['resourceType']}/{resource['id']}"] = f"urn:uuid:{uuid.uuid4()}"
    entries = []
    for entry in bundle["entry"]:
        resource = entry["resource"]
        url = urls[f"{resource['resourceType']}/{resource['id']}"]
        text = json.dumps(resource)
        for key, target in urls.items():
            text = text.replace(f'"reference": "{key}"', f'"reference": "{target}"')
        copied = json.loads(text)
        copied.pop("id")
        entries.append(
            {"fullUrl": url, "resource": copied, "request": {"method": "POST", "url": copied["resourceType"]}}
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def test_transaction_with_urn_uuid_references_and_no_ids() -> None:
    bundle = _as_transaction_without_ids(_therapeutic_case().bundle())
    result = process(json.dumps(bundle).encode(), Options(payer="medicare"))
    assert lines(result) == [("64493", frozenset({"50"}), 1)]
    assert "diagnostic-block-prerequisite" not in rule_ids(result)
    assert result.exit_code == 0
    assert_valid_r4(result.bundle)


def test_absolute_references_resolve_by_fullurl() -> None:
    base = "http://ehr.example.org/fhir"
    bundle = _therapeutic_case().bundle()
    for entry in bundle["entry"]:
        resource = entry["resource"]
        entry["fullUrl"] = f"{base}/{resource['resourceType']}/{resource['id']}"
    text = json.dumps(bundle).replace('"reference": "', f'"reference": "{base}/')
    result = process(text.encode(), Options(payer="medicare"))
    assert result.exit_code == 0
    assert "diagnostic-block-prerequisite" not in rule_ids(result)


def test_ndjson_input() -> None:
    case = _therapeutic_case()
    ndjson = "\n".join(json.dumps(r) for r in case.resources).encode()
    result = process(ndjson, Options(payer="medicare"), name="export.ndjson")
    assert result.exit_code == 0
    expressions = [e for f in result.findings for e in f.expressions]
    assert all(not e.startswith("Bundle") for e in expressions)


def test_single_resource_input() -> None:
    procedure = {
        "resourceType": "Procedure",
        "id": "solo",
        "status": "completed",
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "64493"}]},
        "subject": {"reference": "Patient/p9"},
        "performedDateTime": "2026-10-15",
        "bodySite": [{"text": "L4-L5, left"}],
    }
    result = process(json.dumps(procedure).encode(), Options(payer="medicare"))
    assert lines(result) == [("64493", frozenset({"LT"}), 1)]
    assert {"claim-data-missing", "intent-unknown", "pos-defaulted", "pain-duration"} <= rule_ids(result)
    outcome = result.outcome()
    assert any(e.startswith("Procedure") for i in outcome["issue"] for e in i.get("expression", []))
    assert_valid_r4(result.bundle)


def _history(entries: list[tuple[dict[str, Any], str]]) -> dict[str, Any]:
    built = []
    for resource, method in entries:
        entry: dict[str, Any] = {
            "fullUrl": f"http://ehr.example.org/fhir/{resource['resourceType']}/{resource['id']}",
            "request": {"method": method, "url": f"{resource['resourceType']}/{resource['id']}"},
            "response": {"status": "200"},
        }
        if method != "DELETE":
            entry["resource"] = resource
        built.append(entry)
    return {"resourceType": "Bundle", "type": "history", "entry": built}


def test_history_bundle_keeps_the_newest_version_and_drops_deleted() -> None:
    case = CaseBuilder()
    key = case.block("L4-L5", side="left")
    procedure = next(r for r in case.resources if f"Procedure/{r['id']}" == key)
    newer = json.loads(json.dumps(procedure))
    newer["bodySite"][0]["coding"][0]["code"] = "24028007"  # right
    newer["meta"] = {"versionId": "2", "lastUpdated": "2026-10-16T10:00:00Z"}
    procedure["meta"] = {"versionId": "1", "lastUpdated": "2026-10-15T10:00:00Z"}
    others = [(r, "PUT") for r in case.resources if r is not procedure]
    deleted = {"resourceType": "Procedure", "id": "gone"}
    history = _history([(newer, "PUT"), (procedure, "PUT"), *others])
    history["entry"].insert(
        0, {"request": {"method": "DELETE", "url": "Procedure/gone"}, "response": {"status": "204"}}
    )
    result = process(json.dumps(history).encode(), Options(payer="medicare"))
    assert lines(result) == [("64493", frozenset({"RT", "KX"}), 1)]
    del deleted
    # A facet procedure whose newest version is a delete is gone.
    only_deleted = _history([(procedure, "PUT"), *others])
    only_deleted["entry"].insert(
        0,
        {
            "request": {"method": "DELETE", "url": key},
            "response": {"status": "204", "lastModified": "2026-10-20T00:00:00Z"},
        },
    )
    with pytest.raises(NoFacetProcedureError):
        process(json.dumps(only_deleted).encode(), Options(payer="medicare"))


def test_contained_condition_is_read_and_written_as_its_own_entry() -> None:
    case = CaseBuilder(dx=[])
    key = case.block("L4-L5")
    procedure = next(r for r in case.resources if f"Procedure/{r['id']}" == key)
    procedure["contained"] = [
        {
            "resourceType": "Condition",
            "id": "dx",
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "M47.816"}]},
            "subject": {"reference": "Patient/p1"},
            "onsetDateTime": "2025-01-01",
        }
    ]
    procedure["reasonReference"] = [{"reference": "#dx"}]
    result = process(case.raw(), Options(payer="medicare"))
    assert result.exit_code == 0, [f.message for f in result.findings]
    claim = result.bundle["entry"][0]["resource"]
    assert claim["diagnosis"][0]["diagnosisCodeableConcept"]["coding"][0]["code"] == "M47.816"
    onset = next(s for s in claim["supportingInfo"] if s["category"]["coding"][0]["code"] == "onset")
    target = next(e for e in result.bundle["entry"] if e["fullUrl"] == onset["valueReference"]["reference"])
    assert target["resource"]["resourceType"] == "Condition"
    assert_valid_r4(result.bundle)


def test_other_patients_are_ignored() -> None:
    case = CaseBuilder()
    case.block("L4-L5")
    other = CaseBuilder(dx="M54.16")
    other.block("C5-C6", date="2026-10-01")
    for resource in other.resources:
        text = json.dumps(resource).replace("Patient/p1", "Patient/p2")
        resource = json.loads(text)
        if resource["resourceType"] == "Patient":
            resource["id"] = "p2"
        resource["id"] = f"other-{resource['id']}"
        case.add(resource)
    result = process(case.raw(), Options(payer="medicare"))
    assert result.case.patient == "Patient/p1"
    assert "radiculopathy" not in rule_ids(result)
    assert lines(result) == [("64493", KX50, 1)]
