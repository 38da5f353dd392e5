"""One claim decision, many writers: the decision holds every choice, and every writer reads it."""

from __future__ import annotations

import json

import orjson
from builders import CaseBuilder
from conftest import REPO

from adapter.pipeline import Options, process
from adapter.writers import WRITERS
from adapter.writers.fhir_claim import claim_bundle
from adapter.writers.server_claim import server_claim

EXAMPLE = REPO / "examples" / "medicare-lumbar-bilateral" / "input.json"


def _example() -> object:
    return process(EXAMPLE.read_bytes(), Options(payer="medicare"))


def test_the_decision_names_the_parties_of_the_record() -> None:
    decision = _example().decision  # type: ignore[attr-defined]
    parties = decision.parties
    assert parties.patient.key == "Patient/pt-ana" and parties.patient.family == "Rivera"
    assert parties.member_id == "1EG4TE5MK73" and parties.relationship == "self"
    assert parties.subscriber == parties.patient  # relationship self: the patient subscribes
    assert parties.payer is not None and parties.payer.name == "Medicare Part B (CGS J15)"
    assert ("urn:oid:2.16.840.1.113883.6.300", "15999") in parties.payer.identifiers
    assert parties.provider is not None and parties.provider.npi == "1234567893"
    assert parties.rendering == parties.provider  # a Practitioner performed it
    assert decision.insurer == "Organization/medicare-b"
    assert decision.place_of_service == "11" or decision.place_of_service_source in ("location", "default")


def test_the_decision_holds_lines_pointers_status_and_evidence() -> None:
    decision = _example().decision  # type: ignore[attr-defined]
    assert decision.status == "ready" and decision.claim_status == "active" and decision.exit_code == 0
    assert decision.line_texts == ["64493-50-KX", "64494-50-KX"]
    assert [d.code for d in decision.diagnoses] == ["M47.816"]
    assert all(line.pointers == (1,) for line in decision.lines)
    assert {entry.kind for entry in decision.evidence} >= {"onset", "pain-score", "guidance"}
    assert all(line.information == tuple(e.sequence for e in decision.evidence) for line in decision.lines)


def test_at_most_twelve_diagnoses_and_four_pointers() -> None:
    codes = [f"M47.81{i}" for i in range(2, 9)] + ["M54.50", "M54.2", "M54.6", "M25.50", "M79.10", "M62.830", "G89.29"]
    case = CaseBuilder(dx=codes)
    case.block(["L4-L5", "L5-S1"], side="bilateral", intent="diagnostic")
    decision = case.run(payer="medicare").decision
    assert len(decision.diagnoses) == 12
    assert [d.sequence for d in decision.diagnoses] == list(range(1, 13))
    for line in decision.lines:
        assert 1 <= len(line.pointers) <= 4
        # The covered codes of the line's region (M47.815 thoracolumbar counts for both) come first.
        assert line.pointers == (4, 5, 6, 7)


def test_a_held_decision_is_a_draft_claim_and_an_active_request() -> None:
    case = CaseBuilder(dx="M54.16")
    case.block("L4-L5", side="bilateral", intent="diagnostic")
    held = case.run(payer="medicare").decision
    assert held.held and held.claim_status == "draft" and held.exit_code == 1
    request = CaseBuilder(dx="M54.16")
    request.block("L4-L5", side="bilateral", intent="diagnostic", resource_type="ServiceRequest", status="active")
    planned = request.run(payer="medicare", use="preauthorization").decision
    assert planned.held and planned.claim_status == "active"


def test_every_registered_writer_writes_from_the_decision_alone() -> None:
    result = _example()
    decision, index = result.decision, result.index  # type: ignore[attr-defined]
    assert set(WRITERS) >= {"fhir", "outcome", "text"}
    bundle = json.loads(WRITERS["fhir"].write(decision, index))
    assert bundle["entry"][0]["resource"]["identifier"][0]["value"] == f"urn:uuid:{decision.identifier}"
    outcome = json.loads(WRITERS["outcome"].write(decision, index))
    assert outcome["resourceType"] == "OperationOutcome"
    text = WRITERS["text"].write(decision, index).decode()
    assert "64493" in text and "READY" in text


def test_the_server_claim_is_the_bundle_claim_with_server_references() -> None:
    result = _example()
    decision, index = result.decision, result.index  # type: ignore[attr-defined]
    in_bundle = claim_bundle(decision, index)["entry"][0]["resource"]
    on_server = server_claim(decision, index, "http://fhir.example/r4")
    assert "id" not in on_server
    assert on_server["patient"] == {"reference": "Patient/pt-ana"}
    assert on_server["insurance"][0]["coverage"] == {"reference": "Coverage/cov-ana"}
    strip = {"id", "patient", "insurer", "provider", "careTeam", "supportingInfo", "procedure", "insurance"}
    assert orjson.dumps({k: v for k, v in in_bundle.items() if k not in strip}) == orjson.dumps(
        {k: v for k, v in on_server.items() if k not in strip}
    )


def test_the_decision_holds_what_a_prior_authorization_request_names() -> None:
    request = CaseBuilder("2026-12-15")
    order = request.block(
        "L4-L5", side="bilateral", intent="diagnostic", resource_type="ServiceRequest", status="active"
    )
    for resource in request.resources:
        if f"{resource['resourceType']}/{resource.get('id')}" == order:
            resource["priority"] = "stat"
            resource["performer"] = [{"reference": "Organization/clinic"}]
    decision = request.run(payer="medicare", use="preauthorization").decision
    assert decision.level_of_service == "emergency"
    assert decision.parties.requester is not None and decision.parties.requester.key == "Organization/clinic"
    assert decision.parties.coverage_status == "active"
    traces = [line.trace_number for line in decision.lines]
    assert all(traces) and len(set(traces)) == len(traces)
    assert (
        decision.lines
        and request.run(payer="medicare", use="preauthorization").decision.lines[0].trace_number == traces[0]
    )
    assert [entry.document for entry in decision.evidence] == [
        "medical-history",
        "symptoms",
        "treatment-history",
        "procedure-report",
    ]
    assert _example().decision.level_of_service == "elective"  # type: ignore[attr-defined]
