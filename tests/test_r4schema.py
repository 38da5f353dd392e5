"""Tests for adapter.fhir.r4schema, the structural FHIR R4 validator."""

from __future__ import annotations

import copy
import os
import re
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter.fhir import r4schema
from adapter.fhir.r4schema import SchemaIssue, is_r4_resource_type, r4_resource_types, validate

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / ".cache" / "r4-examples" / "package"

# ------------------------------------------------------------------------------------- sample resources

PROCEDURE: dict[str, Any] = {
    "resourceType": "Procedure",
    "id": "facet-rf-001",
    "meta": {
        "versionId": "3",
        "lastUpdated": "2026-10-15T14:32:10.123-05:00",
        "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-procedure"],
    },
    "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.4567.1.2", "value": "PRC-2026-0042817"}],
    "status": "completed",
    "category": {"coding": [{"system": "http://snomed.info/sct", "code": "387713003"}]},
    "code": {
        "coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "64635", "display": "Facet RF, lumbar"}],
        "text": "Radiofrequency ablation of lumbar facet joint nerves",
    },
    "subject": {"reference": "Patient/pat-1", "display": "Example Patient"},
    "encounter": {"reference": "Encounter/enc-1"},
    "performedDateTime": "2026-10-15T09:30:00-05:00",
    "recorder": {"reference": "Practitioner/prac-1"},
    "performer": [
        {
            "function": {"coding": [{"system": "http://snomed.info/sct", "code": "304292004"}]},
            "actor": {"reference": "Practitioner/prac-1"},
            "onBehalfOf": {"reference": "Organization/org-1"},
        }
    ],
    "location": {"reference": "Location/loc-1"},
    "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "M47.816"}]}],
    "bodySite": [
        {"coding": [{"system": "http://snomed.info/sct", "code": "765006009"}], "text": "Right L4 facet"},
        {"coding": [{"system": "http://snomed.info/sct", "code": "765007000"}], "text": "Right L5 facet"},
    ],
    "note": [{"authorReference": {"reference": "Practitioner/prac-1"}, "text": "No complications."}],
}

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "pat-1",
    "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Jane Doe</div>'},
    "identifier": [{"use": "usual", "system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"}],
    "active": True,
    "name": [{"use": "official", "family": "Doe", "given": ["Jane", "Q"]}],
    "telecom": [{"system": "phone", "value": "555-0100", "use": "home"}],
    "gender": "female",
    "birthDate": "1970-02-28",
    "deceasedBoolean": False,
    "address": [{"line": ["1 Main St"], "city": "Springfield", "postalCode": "12345"}],
    "multipleBirthInteger": 1,
    "communication": [{"language": {"text": "English"}, "preferred": True}],
}

CONDITION: dict[str, Any] = {
    "resourceType": "Condition",
    "clinicalStatus": {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
    },
    "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "M47.816"}]},
    "subject": {"reference": "Patient/pat-1"},
    "onsetAge": {"value": 52, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"},
    "recordedDate": "2026-09-01",
    "evidence": [{"detail": [{"reference": "Observation/obs-1"}]}],
}

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "status": "final",
    "category": [
        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey"}]}
    ],
    "code": {"text": "Pain severity 0-10"},
    "subject": {"reference": "Patient/pat-1"},
    "effectivePeriod": {"start": "2026-09-01", "end": "2026-09-30T23:59:59Z"},
    "issued": "2026-10-01T08:00:00.000+00:00",
    "valueQuantity": {"value": 7.5, "comparator": ">=", "unit": "score"},
    "referenceRange": [{"low": {"value": 0}, "high": {"value": 10}}],
    "component": [{"code": {"text": "duration"}, "valueInteger": 12, "referenceRange": [{"text": "n/a"}]}],
}

CLAIM: dict[str, Any] = {
    "resourceType": "Claim",
    "status": "active",
    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
    "use": "claim",
    "patient": {"reference": "Patient/pat-1"},
    "created": "2026-10-16",
    "provider": {"reference": "Organization/org-1"},
    "priority": {"coding": [{"code": "normal"}]},
    "diagnosis": [{"sequence": 1, "diagnosisCodeableConcept": {"text": "M47.816"}}],
    "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": "Coverage/cov-1"}}],
    "item": [
        {
            "sequence": 1,
            "diagnosisSequence": [1],
            "productOrService": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "64635"}]},
            "servicedDate": "2026-10-15",
            "quantity": {"value": 1},
            "unitPrice": {"value": 1200.0, "currency": "USD"},
            "net": {"value": 1200.0, "currency": "USD"},
        }
    ],
    "total": {"value": 1200.0, "currency": "USD"},
}

COVERAGE: dict[str, Any] = {
    "resourceType": "Coverage",
    "status": "active",
    "beneficiary": {"reference": "Patient/pat-1"},
    "payor": [{"reference": "Organization/payer-1"}],
}

BUNDLE: dict[str, Any] = {
    "resourceType": "Bundle",
    "type": "collection",
    "timestamp": "2026-10-16T10:00:00Z",
    "entry": [
        {"fullUrl": "urn:uuid:6f0bb1a6-2b36-4e0a-9a33-6b6e2c6d3c11", "resource": PATIENT},
        {"fullUrl": "urn:uuid:8b7c0a1e-1d7e-4b63-8f7a-1a2b3c4d5e6f", "resource": PROCEDURE},
        {"fullUrl": "urn:uuid:0c2d8a9e-5f4b-4c3d-9e8f-7a6b5c4d3e2f", "resource": CLAIM},
    ],
}

VALID = {
    "Procedure": PROCEDURE,
    "Patient": PATIENT,
    "Condition": CONDITION,
    "Observation": OBSERVATION,
    "Claim": CLAIM,
    "Coverage": COVERAGE,
    "Bundle": BUNDLE,
}


def mutated(base: dict[str, Any], change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    change(doc)
    return doc


def issues_of(resource: object, **kw: Any) -> list[tuple[str, str]]:
    return [(i.path, i.code) for i in validate(resource, **kw)]  # type: ignore[arg-type]


def one_issue(resource: object) -> SchemaIssue:
    found = validate(resource)  # type: ignore[arg-type]
    assert len(found) == 1, found
    return found[0]


# ------------------------------------------------------------------------------------------ type list


def test_resource_type_list() -> None:
    names = r4_resource_types()
    assert len(names) == 146
    assert {"Procedure", "Claim", "Bundle", "Parameters", "Binary", "OperationOutcome"} <= names
    # R4-only types that R4B/R5 removed stay valid R4.
    assert {
        "MedicinalProduct",
        "EffectEvidenceSynthesis",
        "RiskEvidenceSynthesis",
        "SubstanceSpecification",
    } <= names
    for not_r4 in (
        "SubscriptionStatus",
        "SubscriptionTopic",
        "Resource",
        "DomainResource",
        "MetadataResource",
    ):
        assert not is_r4_resource_type(not_r4), not_r4
    assert is_r4_resource_type("MedicinalProduct")
    assert not is_r4_resource_type(None)
    assert not is_r4_resource_type(["Patient"])
    assert not is_r4_resource_type("patient")


def test_schema_index_says_r4() -> None:
    index = orjson.loads((r4schema._data_dir() / "index.json").read_bytes())
    assert index["fhirVersion"] == "4.0.1"
    assert sorted(index["resourceTypes"]) == sorted(r4_resource_types())
    readme = (r4schema._data_dir() / "README.md").read_text()
    assert "4.0.1" in readme and "gen_r4_schema.py" in readme


# --------------------------------------------------------------------------------------- valid inputs


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_samples(name: str) -> None:
    assert validate(VALID[name]) == []


def test_accepts_any_mapping() -> None:
    frozen = types.MappingProxyType({**COVERAGE, "beneficiary": types.MappingProxyType(COVERAGE["beneficiary"])})
    assert validate(frozen) == []


# ------------------------------------------------------------------------------------ unknown elements


def test_unknown_top_level_element() -> None:
    issue = one_issue({**PROCEDURE, "performedBy": "x"})
    assert (issue.path, issue.code) == ("Procedure.performedBy", "structure")
    assert "performedBy" in issue.message and "Procedure" in issue.message


def test_unknown_element_in_backbone() -> None:
    doc = mutated(PROCEDURE, lambda d: d["performer"][0].__setitem__("role", {"text": "x"}))
    assert issues_of(doc) == [("Procedure.performer[0].role", "structure")]


def test_unknown_element_in_datatype() -> None:
    doc = mutated(PROCEDURE, lambda d: d["bodySite"][1]["coding"][0].__setitem__("codeSystem", "x"))
    assert issues_of(doc) == [("Procedure.bodySite[1].coding[0].codeSystem", "structure")]


def test_fhir_comments_are_not_r4() -> None:
    assert issues_of({**PATIENT, "fhir_comments": ["hi"]}) == [("Patient.fhir_comments", "structure")]


def test_choice_type_not_allowed_for_element() -> None:
    # Procedure.performed[x] has no boolean variant.
    assert issues_of({**PROCEDURE, "performedBoolean": True}) == [("Procedure.performedBoolean", "structure")]
    assert issues_of({**PROCEDURE, "performed": "2026"}) == [("Procedure.performed", "structure")]


def test_resource_type_only_at_resource_level() -> None:
    doc = mutated(PROCEDURE, lambda d: d["subject"].__setitem__("resourceType", "Reference"))
    assert issues_of(doc) == [("Procedure.subject.resourceType", "structure")]


def test_unprintable_keys_are_not_echoed() -> None:
    issue = one_issue({**PATIENT, "Jane Doe, 1970-02-28": 1})
    assert issue.path == "Patient.?"
    assert "Jane" not in issue.message


# ------------------------------------------------------------------------------- dates and date-times


@pytest.mark.parametrize(
    "value",
    [
        "2026-13-45",
        "2026-02-30",
        "2023-02-29",
        "1900-02-29",
        "2026-04-31",
        "2026-10-15T09:30:00",
        "2026-10-15T09:30Z",
        "2026-10-15T24:00:00Z",
        "2026-10-15 09:30:00Z",
        "26-10-15",
        "2026-1-5",
        "0000",
        "2026-10-15T09:30:00+15:00",
    ],
)
def test_bad_performed_datetime(value: str) -> None:
    issue = one_issue({**PROCEDURE, "performedDateTime": value})
    assert (issue.path, issue.code) == ("Procedure.performedDateTime", "value")
    assert "dateTime" in issue.message
    assert value not in issue.message


@pytest.mark.parametrize(
    "value",
    [
        "2026",
        "2026-10",
        "2026-10-15",
        "2026-10-15T09:30:00-05:00",
        "2026-10-15T09:30:00Z",
        "2024-02-29",
        "2000-02-29T00:00:00.123456+14:00",
        "2026-12-31T23:59:60Z",
    ],
)
def test_good_performed_datetime(value: str) -> None:
    assert validate({**PROCEDURE, "performedDateTime": value}) == []


def test_date_instant_time() -> None:
    assert issues_of({**PATIENT, "birthDate": "1970-02-29"}) == [("Patient.birthDate", "value")]
    assert issues_of({**PATIENT, "birthDate": "1970-02-28T00:00:00Z"}) == [("Patient.birthDate", "value")]
    assert validate({**PATIENT, "birthDate": "1972-02-29"}) == []
    assert issues_of({**OBSERVATION, "issued": "2026-10-01"}) == [("Observation.issued", "value")]
    assert issues_of({**OBSERVATION, "issued": "2026-11-31T08:00:00Z"}) == [("Observation.issued", "value")]
    obs = {k: v for k, v in OBSERVATION.items() if k != "valueQuantity"}
    assert validate({**obs, "valueTime": "23:59:59.5"}) == []
    assert issues_of({**obs, "valueTime": "24:00:00"}) == [("Observation.valueTime", "value")]
    assert issues_of({**obs, "valueTime": "09:30"}) == [("Observation.valueTime", "value")]


# ----------------------------------------------------------------------------------- primitive types


def test_wrong_json_type_for_code() -> None:
    issue = one_issue({**PROCEDURE, "status": 5})
    assert (issue.path, issue.code) == ("Procedure.status", "structure")
    assert "string" in issue.message and "code" in issue.message


@pytest.mark.parametrize("value", ["", " completed", "completed ", "in  progress", "a\t\tb"])
def test_code_format(value: str) -> None:
    assert issues_of({**PROCEDURE, "status": value}) == [("Procedure.status", "value")]


def test_string_rules() -> None:
    assert issues_of({**PROCEDURE, "code": {"text": ""}}) == [("Procedure.code.text", "value")]
    assert issues_of({**PROCEDURE, "code": {"text": "a\x0bb"}}) == [("Procedure.code.text", "value")]
    # The R4 string pattern allows line breaks, tabs and (in JSON) surrounding spaces.
    assert validate({**PROCEDURE, "code": {"text": " two\nlines\t "}}) == []
    assert issues_of({**PROCEDURE, "code": {"text": 3}}) == [("Procedure.code.text", "structure")]


def test_boolean_and_numbers() -> None:
    assert issues_of({**PATIENT, "active": "true"}) == [("Patient.active", "structure")]
    assert issues_of({**PATIENT, "active": 1}) == [("Patient.active", "structure")]
    assert issues_of({**PATIENT, "multipleBirthInteger": True}) == [("Patient.multipleBirthInteger", "structure")]
    assert issues_of({**PATIENT, "multipleBirthInteger": 1.0}) == [("Patient.multipleBirthInteger", "structure")]
    assert issues_of({**PATIENT, "multipleBirthInteger": 2**31}) == [("Patient.multipleBirthInteger", "value")]
    assert validate({**PATIENT, "multipleBirthInteger": -(2**31)}) == []
    claim = mutated(CLAIM, lambda d: d["item"][0].__setitem__("sequence", 0))
    assert issues_of(claim) == [("Claim.item[0].sequence", "value")]
    claim = mutated(CLAIM, lambda d: d["item"][0].__setitem__("diagnosisSequence", [1, -1]))
    assert issues_of(claim) == [("Claim.item[0].diagnosisSequence[1]", "value")]
    bad_values: list[tuple[object, str]] = [
        (True, "structure"),
        ("7.5", "structure"),
        (float("nan"), "value"),
        (float("inf"), "value"),
    ]
    for bad, code in bad_values:
        obs = copy.deepcopy(OBSERVATION)
        obs["valueQuantity"]["value"] = bad
        assert issues_of(obs) == [("Observation.valueQuantity.value", code)], bad
    obs = mutated(OBSERVATION, lambda d: d["valueQuantity"].__setitem__("value", 10**30))
    assert validate(obs) == []


def test_ids_uris_and_special_strings() -> None:
    assert validate({**PROCEDURE, "id": "A-b.9" * 12 + "abcd"}) == []  # 64 characters
    assert issues_of({**PROCEDURE, "id": "a" * 65}) == [("Procedure.id", "value")]
    assert issues_of({**PROCEDURE, "id": "bad/id"}) == [("Procedure.id", "value")]
    # Element.id is a plain string, not an ``id``.
    doc = mutated(PROCEDURE, lambda d: d["performer"][0].__setitem__("id", "performer #1"))
    assert validate(doc) == []
    assert issues_of({**PROCEDURE, "implicitRules": "has space"}) == [("Procedure.implicitRules", "value")]
    assert issues_of({**PROCEDURE, "implicitRules": ""}) == [("Procedure.implicitRules", "value")]
    bundle = mutated(BUNDLE, lambda d: d["entry"][0].__setitem__("fullUrl", "urn:uuid:6F0BB1A6"))
    assert validate(bundle) == []  # fullUrl is a uri, not a uuid
    assert issues_of({**PATIENT, "photo": [{"data": "not base64!"}]}) == [("Patient.photo[0].data", "value")]
    assert validate({**PATIENT, "photo": [{"data": "aGVs bG8= \n"}]}) == []


def test_xhtml_div_needs_a_string() -> None:
    assert issues_of({**PATIENT, "text": {"status": "generated", "div": 5}}) == [("Patient.text.div", "structure")]
    assert issues_of({**PATIENT, "text": {"status": "generated", "div": " "}}) == [("Patient.text.div", "value")]
    assert issues_of({**PATIENT, "text": {"status": "generated"}}) == [("Patient.text.div", "required")]
    assert issues_of({**PATIENT, "text": {"status": "generated", "div": "<div/>", "_div": {}}}) == [
        ("Patient.text._div", "structure")
    ]


# ------------------------------------------------------------------------------------ JSON shape rules


def test_repeating_element_must_be_array() -> None:
    issue = one_issue({**PROCEDURE, "bodySite": PROCEDURE["bodySite"][0]})
    assert (issue.path, issue.code) == ("Procedure.bodySite", "structure")
    assert "array" in issue.message


def test_single_element_must_not_be_array() -> None:
    assert issues_of({**PROCEDURE, "code": [PROCEDURE["code"]]}) == [("Procedure.code", "structure")]
    assert issues_of({**PROCEDURE, "status": ["completed"]}) == [("Procedure.status", "structure")]


def test_empty_array_and_nulls() -> None:
    assert issues_of({**PROCEDURE, "bodySite": []}) == [("Procedure.bodySite", "structure")]
    assert issues_of({**PROCEDURE, "note": None}) == [("Procedure.note", "structure")]
    assert issues_of({**PROCEDURE, "location": None}) == [("Procedure.location", "structure")]
    assert issues_of({**PROCEDURE, "bodySite": [None]}) == [("Procedure.bodySite[0]", "structure")]
    assert issues_of({**PROCEDURE, "bodySite": ["L4"]}) == [("Procedure.bodySite[0]", "structure")]
    assert issues_of({**PROCEDURE, "subject": "Patient/pat-1"}) == [("Procedure.subject", "structure")]
    assert issues_of({**PROCEDURE, "instantiatesUri": ["http://a", None]}) == [
        ("Procedure.instantiatesUri[1]", "structure")
    ]


def test_two_choice_variants() -> None:
    issue = one_issue({**PROCEDURE, "performedPeriod": {"start": "2026-10-15"}})
    assert issue.code == "structure"
    assert issue.path in ("Procedure.performedPeriod", "Procedure.performedDateTime")
    assert "performed[x]" in issue.message
    # A primitive extension sibling counts as its variant being present.
    doc = {**PROCEDURE, "_performedString": {"extension": [{"url": "http://x", "valueBoolean": True}]}}
    assert [i.code for i in validate(doc)] == ["structure"]
    doc = {**PROCEDURE, "_performedDateTime": {"id": "p"}}
    assert validate(doc) == []


# ---------------------------------------------------------------------------------------- cardinality


def test_missing_required_elements() -> None:
    doc = {k: v for k, v in PROCEDURE.items() if k not in ("status", "subject")}
    found = validate(doc)
    assert {(i.path, i.code) for i in found} == {
        ("Procedure.status", "required"),
        ("Procedure.subject", "required"),
    }
    assert all("missing" in i.message for i in found)


def test_required_in_backbone_and_datatype() -> None:
    doc = mutated(PROCEDURE, lambda d: d["performer"][0].pop("actor"))
    assert issues_of(doc) == [("Procedure.performer[0].actor", "required")]
    doc = {**PATIENT, "extension": [{"valueString": "x"}]}
    assert issues_of(doc) == [("Patient.extension[0].url", "required")]
    claim = mutated(CLAIM, lambda d: d["insurance"][0].pop("focal"))
    assert issues_of(claim) == [("Claim.insurance[0].focal", "required")]


def test_required_choice_element() -> None:
    doc = mutated(CLAIM, lambda d: d["diagnosis"][0].pop("diagnosisCodeableConcept"))
    assert issues_of(doc) == [("Claim.diagnosis[0].diagnosis[x]", "required")]
    doc = mutated(CLAIM, lambda d: d["diagnosis"][0].__setitem__("diagnosisReference", {"reference": "Condition/1"}))
    assert [i.code for i in validate(doc)] == ["structure"]


# ------------------------------------------------------------------------------ primitive extensions


STATUS_EXT = {"extension": [{"url": "http://example.org/why", "valueString": "see note"}]}


def test_primitive_extension_sibling() -> None:
    assert validate({**PROCEDURE, "_status": STATUS_EXT}) == []
    assert validate({**PROCEDURE, "_status": {"id": "s1"}}) == []
    # A required primitive may be present only as its extension.
    doc = {k: v for k, v in PROCEDURE.items() if k != "status"} | {"_status": STATUS_EXT}
    assert validate(doc) == []
    assert issues_of({**PROCEDURE, "_status": "x"}) == [("Procedure._status", "structure")]
    assert issues_of({**PROCEDURE, "_status": [STATUS_EXT]}) == [("Procedure._status", "structure")]
    assert issues_of({**PROCEDURE, "_status": {"value": "x"}}) == [("Procedure._status.value", "structure")]
    doc = {**PROCEDURE, "_status": {"extension": [{"url": "http://x", "valueDate": "2026-02-30"}]}}
    assert issues_of(doc) == [("Procedure._status.extension[0].valueDate", "value")]
    # Complex elements have no primitive extension sibling.
    assert issues_of({**PROCEDURE, "_subject": {"id": "x"}}) == [("Procedure._subject", "structure")]


def test_primitive_array_extensions_aligned() -> None:
    ext = {"extension": [{"url": "http://example.org/initial", "valueBoolean": True}]}
    name = {"family": "Doe", "given": ["Jane", None], "_given": [None, ext]}
    assert validate({**PATIENT, "name": [name]}) == []
    assert validate({**PATIENT, "name": [{"_given": [ext]}]}) == []
    bad = {"given": ["Jane", None], "_given": [None, None]}
    assert issues_of({**PATIENT, "name": [bad]}) == [("Patient.name[0].given[1]", "structure")]
    bad = {"given": ["Jane", "Q"], "_given": [None]}
    assert issues_of({**PATIENT, "name": [bad]}) == [("Patient.name[0]._given", "structure")]
    bad = {"given": ["Jane"], "_given": ext}
    assert issues_of({**PATIENT, "name": [bad]}) == [("Patient.name[0]._given", "structure")]
    bad = {"_given": [None]}
    assert issues_of({**PATIENT, "name": [bad]}) == [("Patient.name[0]._given[0]", "structure")]
    bad = {"given": ["Jane"], "_given": ["x"]}
    assert issues_of({**PATIENT, "name": [bad]}) == [("Patient.name[0]._given[0]", "structure")]


# ------------------------------------------------------------------------------------------ datatypes


def test_quantity_profiles_validate_as_quantity() -> None:
    # Claim.item.quantity is SimpleQuantity, Condition.onsetAge is Age, Money is its own type.
    claim = mutated(CLAIM, lambda d: d["item"][0].__setitem__("quantity", {"value": 2, "unit": "joint"}))
    assert validate(claim) == []
    claim = mutated(CLAIM, lambda d: d["item"][0]["quantity"].__setitem__("amount", 2))
    assert issues_of(claim) == [("Claim.item[0].quantity.amount", "structure")]
    cond = mutated(CONDITION, lambda d: d["onsetAge"].__setitem__("value", "52"))
    assert issues_of(cond) == [("Condition.onsetAge.value", "structure")]
    claim = mutated(CLAIM, lambda d: d["total"].__setitem__("unit", "USD"))
    assert issues_of(claim) == [("Claim.total.unit", "structure")]


def test_nested_extensions_and_narrative() -> None:
    nested = {"url": "http://example.org/a", "extension": [{"url": "b", "valueCoding": {"code": 1}}]}
    assert issues_of({**PATIENT, "extension": [nested]}) == [
        ("Patient.extension[0].extension[0].valueCoding.code", "structure")
    ]
    assert issues_of({**PATIENT, "modifierExtension": [{"url": "u", "valueFoo": 1}]}) == [
        ("Patient.modifierExtension[0].valueFoo", "structure")
    ]


def test_content_reference_is_followed() -> None:
    questionnaire: dict[str, Any] = {
        "resourceType": "Questionnaire",
        "status": "active",
        "item": [{"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "string", "colour": "x"}]}],
    }
    assert issues_of(questionnaire) == [("Questionnaire.item[0].item[0].colour", "structure")]
    questionnaire["item"][0]["item"][0] = {"type": "string"}
    assert issues_of(questionnaire) == [("Questionnaire.item[0].item[0].linkId", "required")]
    params = {
        "resourceType": "Parameters",
        "parameter": [{"name": "a", "part": [{"name": "b", "valueInteger": "1"}]}],
    }
    assert issues_of(params) == [("Parameters.parameter[0].part[0].valueInteger", "structure")]


# ------------------------------------------------------------------------------- nested resources


def test_contained_resource_errors() -> None:
    contained = {
        "resourceType": "Condition",
        "id": "c1",
        "code": {"text": "x"},
        "onsetDateTime": "2026-02-30",
    }
    doc = {**PROCEDURE, "contained": [{"resourceType": "Practitioner", "id": "p1"}, contained]}
    assert {(i.path, i.code) for i in validate(doc)} == {
        ("Procedure.contained[1].onsetDateTime", "value"),
        ("Procedure.contained[1].subject", "required"),
    }
    doc = {**PROCEDURE, "contained": [{"id": "x"}]}
    assert issues_of(doc) == [("Procedure.contained[0]", "required")]
    doc = {**PROCEDURE, "contained": [{"resourceType": "SubscriptionStatus", "status": "active"}]}
    assert issues_of(doc) == [("Procedure.contained[0]", "invalid")]
    doc = {**PROCEDURE, "contained": ["Patient/1"]}
    assert issues_of(doc) == [("Procedure.contained[0]", "structure")]
    doc = {**PROCEDURE, "contained": [{"resourceType": "Patient", "foo": 1}]}
    assert issues_of(doc) == [("Procedure.contained[0].foo", "structure")]


def test_contained_must_not_nest_contained() -> None:
    inner = {"resourceType": "Patient", "contained": [{"resourceType": "Patient"}]}
    assert issues_of({**PROCEDURE, "contained": [inner]}) == [("Procedure.contained[0].contained", "invalid")]


def test_bundle_entries_validated_as_resources() -> None:
    bundle = mutated(BUNDLE, lambda d: d["entry"][1]["resource"].__setitem__("bodySite", {"text": "x"}))
    assert issues_of(bundle) == [("Bundle.entry[1].resource.bodySite", "structure")]
    bundle = mutated(BUNDLE, lambda d: d["entry"][2]["resource"]["item"][0].pop("sequence"))
    assert issues_of(bundle) == [("Bundle.entry[2].resource.item[0].sequence", "required")]
    bundle = mutated(BUNDLE, lambda d: d.pop("type"))
    assert issues_of(bundle) == [("Bundle.type", "required")]
    # entry.response.outcome is any Resource in R4 (Medplum's copy narrows it to OperationOutcome).
    response = {"status": "201 Created", "outcome": {"resourceType": "Patient", "id": "x"}}
    bundle = {"resourceType": "Bundle", "type": "transaction-response", "entry": [{"response": response}]}
    assert validate(bundle) == []


def test_r4_only_resource_types_are_validated() -> None:
    product = {"resourceType": "MedicinalProduct", "id": "mp", "name": [{"productName": "Equilidem 2.5 mg"}]}
    assert validate(product) == []
    assert issues_of({**product, "name": [{"countryLanguage": []}]}) == [
        ("MedicinalProduct.name[0].countryLanguage", "structure"),
        ("MedicinalProduct.name[0].productName", "required"),
    ]
    ees = {
        "resourceType": "EffectEvidenceSynthesis",
        "status": "draft",
        "population": {"reference": "Group/g"},
        "exposure": {"reference": "EvidenceVariable/e"},
        "exposureAlternative": {"reference": "EvidenceVariable/a"},
        "outcome": {"reference": "EvidenceVariable/o"},
    }
    assert validate(ees) == []
    assert issues_of({k: v for k, v in ees.items() if k != "outcome"}) == [
        ("EffectEvidenceSynthesis.outcome", "required")
    ]


def test_r4b_r5_only_resource_types_are_rejected() -> None:
    for name in ("SubscriptionStatus", "SubscriptionTopic", "Citation", "DomainResource"):
        issue = one_issue({"resourceType": name, "status": "active"})
        assert (issue.path, issue.code) == ("Resource", "invalid")
        assert name not in issue.message


def test_medplum_additions_are_not_r4() -> None:
    meta = {**PROCEDURE["meta"], "project": "p"}
    assert issues_of({**PROCEDURE, "meta": meta}) == [("Procedure.meta.project", "structure")]
    binary = {"resourceType": "Binary", "contentType": "text/plain", "url": "http://x"}
    assert issues_of(binary) == [("Binary.url", "structure")]
    # HL7's R4 EvidenceVariable, which Medplum replaced with an R5 shape.
    ev = {
        "resourceType": "EvidenceVariable",
        "status": "draft",
        "characteristic": [{"definitionCanonical": "http://x"}],
    }
    assert validate(ev) == []
    assert issues_of({**ev, "characteristic": [{"definitionId": "x"}]}) != []


# ------------------------------------------------------------------------------ odd inputs, limits


@pytest.mark.parametrize("value", [None, [], [PATIENT], "Patient", 3, 2.5, True])
def test_non_object_input(value: object) -> None:
    issue = one_issue(value)
    assert (issue.path, issue.code) == ("Resource", "structure")


def test_resource_type_problems() -> None:
    assert issues_of({}) == [("Resource", "required")]
    assert issues_of({"resourceType": 5}) == [("Resource", "structure")]
    assert issues_of({"resourceType": "Patient2"}) == [("Resource", "invalid")]
    assert issues_of({"resourceType": "Coding", "code": "x"}) == [("Resource", "invalid")]


def test_max_issues() -> None:
    doc = {**PATIENT, **{f"x{i}": i for i in range(30)}}
    assert len(validate(doc)) == 20
    assert len(validate(doc, max_issues=3)) == 3
    assert len(validate(doc, max_issues=0)) == 1
    assert len(validate(doc, max_issues=100)) == 30


def test_messages_never_echo_values() -> None:
    secret = "SSN-123-45-6789"
    docs = [
        {**PATIENT, "gender": secret + " "},
        {**PATIENT, "birthDate": secret},
        {**PATIENT, "active": secret},
        {**PATIENT, "name": secret},
        {**PATIENT, "name": [secret]},
        {**PATIENT, "multipleBirthInteger": secret},
        {**PATIENT, "id": secret + "/"},
        {"resourceType": secret},
        {**PATIENT, "contained": [{"resourceType": secret}]},
        {**PATIENT, "extension": [{"url": secret + " x"}]},
    ]
    for doc in docs:
        found = validate(doc)
        assert found, doc
        for issue in found:
            assert secret not in issue.message and secret not in issue.path


def test_deep_nesting_does_not_hit_recursion_limit() -> None:
    ext: dict[str, Any] = {"url": "http://x", "valueString": "leaf"}
    for _ in range(600):  # 1,200 JSON levels: deeper than orjson parses, deeper than Python recurses
        ext = {"url": "http://x", "extension": [ext]}
    assert validate({**PATIENT, "extension": [ext]}) == []
    ref: dict[str, Any] = {"reference": "Organization/1"}
    for _ in range(1100):
        ref = {"identifier": {"assigner": ref}}
    assert validate({**PROCEDURE, "recorder": ref}) == []
    bad: dict[str, Any] = {"identifier": {"assigner": {"bogus": 1}}}
    for _ in range(1100):
        bad = {"identifier": {"assigner": bad}}
    found = validate({**PROCEDURE, "recorder": bad})
    assert [i.code for i in found] == ["structure"]
    assert found[0].path.endswith(".assigner.bogus")


def test_pathological_base64_is_fast_enough_to_finish() -> None:
    # The HL7 pattern backtracks exponentially on this with Python's re; the linear rewrite does not.
    near_miss = "AAAA " * 4000 + "!"
    assert issues_of({**PATIENT, "photo": [{"data": near_miss}]}) == [("Patient.photo[0].data", "value")]


def test_import_is_lazy() -> None:
    import subprocess
    import sys

    check = "m._datatypes is None and not m._resources and 'orjson' not in m.__dict__"
    code = f"import adapter.fhir.r4schema as m; print({check})"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


# ------------------------------------------------------------------------------ regex equivalences

_TEXT = st.text(alphabet=st.sampled_from("AZaz09+/= \t\n\r\x0b\x0c!é\u00a0"), max_size=24)


@given(_TEXT)
@settings(max_examples=400)
def test_base64_rewrite_matches_hl7_pattern(value: str) -> None:
    rules = orjson.loads((r4schema._data_dir() / "datatypes.json").read_bytes())["primitives"]
    kind, official, _has_ext, linear = rules["base64Binary"]
    assert kind == "s"
    expected = re.fullmatch(official, value, re.ASCII) is not None
    assert (re.fullmatch(linear, value, re.ASCII) is not None) == expected


@given(st.text(alphabet=st.sampled_from("ab \t\n\r\x0b\x0c\x00\u00a0\u2003é"), max_size=12))
def test_string_fast_path_matches_hl7_pattern(value: str) -> None:
    rules = orjson.loads((r4schema._data_dir() / "datatypes.json").read_bytes())["primitives"]
    for name in ("string", "markdown"):
        expected = re.fullmatch(rules[name][1], value, re.ASCII) is not None
        assert (r4schema._plain_text(value) is not None) == expected


# ------------------------------------------------------------------------------------- corpus test

# Official R4 examples that break the R4 StructureDefinitions themselves. The validator is right about
# each; they are listed with the exact issues so this list cannot go stale unnoticed.
KNOWN_INVALID_EXAMPLES: dict[str, tuple[str, set[tuple[str, str]]]] = {
    "ImplementationGuide-fhir.json": (
        "package manifest IG lacks ImplementationGuide.name and .status (both 1..1)",
        {("ImplementationGuide.name", "required"), ("ImplementationGuide.status", "required")},
    ),
    "ig-r4.json": (
        "same package manifest IG as ImplementationGuide-fhir.json",
        {("ImplementationGuide.name", "required"), ("ImplementationGuide.status", "required")},
    ),
    "Questionnaire-qs1.json": (
        "display-only nested items have no linkId (Questionnaire.item.linkId is 1..1)",
        {
            ("Questionnaire.item[0].item[0].linkId", "required"),
            ("Questionnaire.item[0].item[1].item[0].linkId", "required"),
        },
    ),
    "SearchParameter-questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json": (
        "Resource.id is 67 characters; the id type allows at most 64",
        {("SearchParameter.id", "value")},
    ),
    **{
        f"SearchParameter-{kind}-extensions-{rtype}-{name}.json": (
            "extension search parameter without SearchParameter.base (1..*)",
            {("SearchParameter.base", "required")},
        )
        for kind, rtype in (("codesystem", "CodeSystem"), ("valueset", "ValueSet"))
        for name in ("author", "effective", "end", "keyword", "workflow")
    },
}


def _examples_or_skip() -> list[Path]:
    files = sorted(EXAMPLES.glob("*.json")) if EXAMPLES.is_dir() else []
    if not files:
        reason = f"{EXAMPLES} missing: run tools/fetch-r4-examples to get the official R4 examples"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return files


@pytest.mark.slow
def test_official_r4_examples_are_valid() -> None:
    files = _examples_or_skip()
    checked = 0
    unexpected: dict[str, list[tuple[str, str, str]]] = {}
    known_seen: dict[str, set[tuple[str, str]]] = {}
    for path in files:
        doc = orjson.loads(path.read_bytes())
        if not isinstance(doc, dict) or "resourceType" not in doc:
            continue  # package.json
        checked += 1
        found = validate(doc, max_issues=1000)
        if path.name in KNOWN_INVALID_EXAMPLES:
            known_seen[path.name] = {(i.path, i.code) for i in found}
        elif found:
            unexpected[path.name] = [(i.path, i.code, i.message) for i in found[:5]]
    assert checked > 5000
    assert not unexpected, f"{len(unexpected)} official examples rejected: {dict(list(unexpected.items())[:10])}"
    for name, (_why, expected) in KNOWN_INVALID_EXAMPLES.items():
        if name == "Questionnaire-qs1.json":
            assert expected <= known_seen[name] and all(c == "required" for _p, c in known_seen[name])
        else:
            assert known_seen.get(name) == expected, name


# ------------------------------------------------------------------------------ cross-check with R4B

_MUTATIONS: list[tuple[str, str, Callable[[dict[str, Any]], object]]] = [
    ("status is a number", "Procedure", lambda d: d.__setitem__("status", 5)),
    ("month 13", "Procedure", lambda d: d.__setitem__("performedDateTime", "2026-13-45")),
    (
        "dateTime with time but no zone",
        "Procedure",
        lambda d: d.__setitem__("performedDateTime", "2026-10-15T09:30:00"),
    ),
    ("bodySite as object", "Procedure", lambda d: d.__setitem__("bodySite", {"text": "L4"})),
    ("unknown element", "Procedure", lambda d: d.__setitem__("performedBy", "x")),
    ("two choice variants", "Procedure", lambda d: d.__setitem__("performedPeriod", {"start": "2026"})),
    ("missing status", "Procedure", lambda d: d.pop("status")),
    ("missing subject", "Procedure", lambda d: d.pop("subject")),
    ("backbone missing actor", "Procedure", lambda d: d["performer"][0].pop("actor")),
    ("unknown element in backbone", "Procedure", lambda d: d["performer"][0].__setitem__("role", "x")),
    ("coding.code a number", "Procedure", lambda d: d["code"]["coding"][0].__setitem__("code", 64635)),
    ("Feb 30", "Patient", lambda d: d.__setitem__("birthDate", "1970-02-30")),
    ("gender as list", "Patient", lambda d: d.__setitem__("gender", ["female"])),
    ("given as string", "Patient", lambda d: d["name"][0].__setitem__("given", "Jane")),
    ("extension without url", "Patient", lambda d: d.__setitem__("extension", [{"valueString": "x"}])),
    ("id with a slash", "Patient", lambda d: d.__setitem__("id", "pat/1")),
    ("narrative without div", "Patient", lambda d: d.__setitem__("text", {"status": "generated"})),
    ("decimal as text", "Observation", lambda d: d["valueQuantity"].__setitem__("value", "abc")),
    ("missing code", "Observation", lambda d: d.pop("code")),
    ("integer out of range", "Observation", lambda d: d["component"][0].__setitem__("valueInteger", 2**40)),
    ("reference as string", "Condition", lambda d: d.__setitem__("subject", "Patient/1")),
    ("positiveInt zero", "Claim", lambda d: d["item"][0].__setitem__("sequence", 0)),
    ("missing beneficiary", "Coverage", lambda d: d.pop("beneficiary")),
    ("bundle without type", "Bundle", lambda d: d.pop("type")),
    (
        "bad date inside entry",
        "Bundle",
        lambda d: d["entry"][0]["resource"].__setitem__("birthDate", "1970-13-01"),
    ),
    (
        "bad contained resource",
        "Procedure",
        lambda d: d.__setitem__("contained", [{"resourceType": "Patient", "gender": 5}]),
    ),
]


def _r4b_accepts(doc: dict[str, Any]) -> bool:
    from fhir.resources.R4B import get_fhir_model_class

    try:
        get_fhir_model_class(doc["resourceType"]).model_validate(copy.deepcopy(doc))
    except Exception:  # pydantic ValidationError and fhir.resources' own errors
        return False
    return True


@pytest.mark.parametrize("name", sorted(VALID))
def test_cross_check_valid_originals(name: str) -> None:
    assert validate(VALID[name]) == []
    assert _r4b_accepts(VALID[name])


@pytest.mark.parametrize(("label", "rtype", "change"), _MUTATIONS, ids=[m[0] for m in _MUTATIONS])
def test_cross_check_invalid_mutations(label: str, rtype: str, change: Callable[[dict[str, Any]], object]) -> None:
    doc = mutated(VALID[rtype], change)
    assert validate(doc) != [], label
    assert not _r4b_accepts(doc), label


# ---------------------------------------------------------------------------------- property tests

_json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=12)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


def _all_keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _all_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _all_keys(v)}
    return set()


_SCHEMA_KEYS = sorted({k for doc in VALID.values() for k in _all_keys(doc)} | {"_status", "_given", "contained", "div"})


def _check_result(found: list[SchemaIssue], limit: int = 20) -> None:
    assert isinstance(found, list)
    assert len(found) <= max(1, limit)
    for issue in found:
        assert isinstance(issue, SchemaIssue)
        assert issue.code in {"structure", "required", "value", "invalid"}
        assert issue.path and issue.message


@given(_json, st.integers(-2, 30))
@settings(max_examples=300, deadline=None)
def test_never_raises_on_arbitrary_json(value: object, limit: int) -> None:
    _check_result(validate(value, max_issues=limit), limit)  # type: ignore[arg-type]


@given(
    st.sampled_from(sorted(r4_resource_types())),
    st.dictionaries(st.sampled_from(_SCHEMA_KEYS), _json, max_size=6),
)
@settings(max_examples=300, deadline=None)
def test_never_raises_on_random_resources(rtype: str, body: dict[str, Any]) -> None:
    _check_result(validate({**body, "resourceType": rtype}))


def _containers(value: object) -> list[dict[str, Any] | list[Any]]:
    out: list[dict[str, Any] | list[Any]] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            out.append(v)
            stack.extend(v.values())
        elif isinstance(v, list):
            out.append(v)
            stack.extend(v)
    return out


@given(st.sampled_from(sorted(VALID)), st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_never_raises_on_mutated_valid_resources(name: str, data: st.DataObject) -> None:
    doc = copy.deepcopy(VALID[name])
    for _ in range(data.draw(st.integers(1, 4))):
        target = data.draw(st.sampled_from(_containers(doc)))
        new = copy.deepcopy(data.draw(_json | st.sampled_from([None, [], {}, "x", 1, 1.5, True, [None], PATIENT])))
        if isinstance(target, dict):
            key = data.draw(st.sampled_from(sorted(target) + _SCHEMA_KEYS) if target else st.sampled_from(_SCHEMA_KEYS))
            target[key] = new
        elif target:
            target[data.draw(st.integers(0, len(target) - 1))] = new
    _check_result(validate(doc))
    # The validator reads, never writes.
    snapshot = orjson.dumps(doc)
    validate(doc)
    assert orjson.dumps(doc) == snapshot


@given(st.sampled_from(sorted(VALID)))
@settings(max_examples=20, deadline=None)
def test_round_tripped_valid_resources_stay_valid(name: str) -> None:
    assert validate(orjson.loads(orjson.dumps(VALID[name]))) == []


# ------------------------------------------------------------------------------------ the generator


def _generator() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_r4_schema", ROOT / "tools" / "gen_r4_schema.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_definitions(tmp: Path, edit: Callable[[dict[str, dict[str, Any]]], object] | None = None) -> Path:
    """A Medplum-shaped definitions dir built from HL7's own StructureDefinitions in the example package."""
    _examples_or_skip()
    index = orjson.loads((r4schema._data_dir() / "index.json").read_bytes())
    ids = [*index["resourceTypes"], *index["datatypes"], *index["primitiveTypes"]]
    ids += ["Element", "BackboneElement", "Resource", "DomainResource", "MetadataResource"]
    ids += ["SimpleQuantity", "MoneyQuantity"]
    sds = {i: orjson.loads((EXAMPLES / f"StructureDefinition-{i}.json").read_bytes()) for i in ids}
    if edit is not None:
        edit(sds)
    out = tmp / "package" / "dist" / "fhir" / "r4"
    out.mkdir(parents=True)
    for name, wanted in (("profiles-resources.json", True), ("profiles-types.json", False)):
        entries = [{"resource": sd} for sd in sds.values() if (sd.get("kind") in ("resource", "logical")) == wanted]
        (out / name).write_bytes(orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}))
    (out / "version.info").write_text("[FHIR]\nFhirVersion=4.0.1-9346c8cc45\nversion=4.0.1\n")
    return tmp


@pytest.mark.slow
def test_generator_reproduces_committed_schema_from_hl7_definitions(tmp_path: Path) -> None:
    gen = _generator()
    defs = _fake_definitions(tmp_path / "defs")
    gen.generate(gen.Source(defs), gen.Source(EXAMPLES.parent), tmp_path / "out", "fake")
    committed = r4schema._data_dir()
    produced = sorted(p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*.json"))
    assert produced == sorted(p.relative_to(committed) for p in committed.rglob("*.json"))
    for rel in produced:
        assert (tmp_path / "out" / rel).read_bytes() == (committed / rel).read_bytes(), rel


@pytest.mark.slow
def test_generator_refuses_other_fhir_versions(tmp_path: Path) -> None:
    gen = _generator()

    def relabel(sds: dict[str, dict[str, Any]]) -> None:
        sds["Procedure"] = {**sds["Procedure"], "fhirVersion": "4.3.0"}

    defs = _fake_definitions(tmp_path / "a", relabel)
    with pytest.raises(gen.GenError, match=re.escape("Procedure claims FHIR 4.3.0")):
        gen.generate(gen.Source(defs), gen.Source(EXAMPLES.parent), tmp_path / "out-a", "fake")

    def backport(sds: dict[str, dict[str, Any]]) -> None:
        sds["SubscriptionStatus"] = {**sds["Basic"], "id": "SubscriptionStatus", "fhirVersion": "4.3.0"}

    defs = _fake_definitions(tmp_path / "b", backport)
    gen.generate(gen.Source(defs), gen.Source(EXAMPLES.parent), tmp_path / "out-b", "fake")
    index = orjson.loads((tmp_path / "out-b" / "index.json").read_bytes())
    assert "SubscriptionStatus" not in index["resourceTypes"]
    assert "SubscriptionStatus (declares FHIR 4.3.0" in (tmp_path / "out-b" / "README.md").read_text()

    defs = _fake_definitions(tmp_path / "c")
    (defs / "package" / "dist" / "fhir" / "r4" / "version.info").write_text("[FHIR]\nversion=4.3.0\n")
    with pytest.raises(gen.GenError, match=re.escape("says FHIR 4.3.0")):
        gen.generate(gen.Source(defs), gen.Source(EXAMPLES.parent), tmp_path / "out-c", "fake")


@pytest.mark.slow
def test_generator_reverts_local_edits(tmp_path: Path) -> None:
    gen = _generator()

    def add_meta_project(sds: dict[str, dict[str, Any]]) -> None:
        meta = copy.deepcopy(sds["Meta"])
        extra = {
            "id": "Meta.project",
            "path": "Meta.project",
            "min": 0,
            "max": "1",
            "type": [{"code": "uri"}],
        }
        meta["snapshot"]["element"].append(extra)
        sds["Meta"] = meta

    defs = _fake_definitions(tmp_path / "defs", add_meta_project)
    gen.generate(gen.Source(defs), gen.Source(EXAMPLES.parent), tmp_path / "out", "fake")
    datatypes = orjson.loads((tmp_path / "out" / "datatypes.json").read_bytes())
    assert "project" not in datatypes["tables"]["Meta"]["e"]
    assert "`Meta.project`" in (tmp_path / "out" / "README.md").read_text()
