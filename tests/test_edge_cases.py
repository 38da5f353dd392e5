"""Edge cases a review of the core found (contract §2-§5), with the behaviour each fix gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from builders import ICD, SCT, CaseBuilder, lines, rule_ids
from conftest import run_cli

from adapter.pipeline import Options, process
from adapter.read.levels import read_text
from adapter.read.wording import guidance_of, technique_of

KX50 = frozenset({"50", "KX"})


def _procedure(case: CaseBuilder, key: str) -> dict[str, Any]:
    return next(r for r in case.resources if f"{r['resourceType']}/{r['id']}" == key)


def test_a_known_side_from_another_procedure_beats_none() -> None:
    case = CaseBuilder()
    case.block("L4-L5", side="left", codes=["64493"])
    case.block("L4-L5", side=None, codes=["64493"])
    result = case.run(payer="medicare")
    assert lines(result) == [("64493", frozenset({"LT", "KX"}), 1)]
    assert "laterality-unknown" not in rule_ids(result)
    assert result.exit_code == 0


def test_unwritable_resources_the_claim_does_not_need_are_left_out_and_both_commands_agree(tmp_path: Path) -> None:
    case = CaseBuilder()
    key = case.block("L4-L5")
    _procedure(case, key)["focalDevice"] = [{"manipulated": {"reference": "Device/d1"}}]
    case.add({"resourceType": "Device", "id": "d1", "bogus": True})  # not valid R4, not used
    patient = next(r for r in case.resources if r["resourceType"] == "Patient")
    patient["link"] = [{"other": {"reference": "Patient/p2"}, "type": "seealso"}]
    case.add({"resourceType": "Patient", "id": "p2", "birthDate": "1970-01-01"})
    path = tmp_path / "in.json"
    path.write_bytes(case.raw())
    claim = run_cli("claim", str(path), "--payer", "medicare")
    check = run_cli("check", str(path), "--payer", "medicare", "--format", "json")
    assert claim.code == check.code == 0, claim.stderr.decode()
    kept = {(e["resource"]["resourceType"], e["resource"].get("id")) for e in claim.json()["entry"]}
    assert ("Device", "d1") not in kept  # invalid: left out, its reference kept as written
    assert ("Patient", "p2") not in kept  # another patient's data is never copied into a claim


def test_other_patients_and_void_procedures_are_not_checked_as_r4() -> None:
    case = CaseBuilder()
    case.block("L4-L5")
    other = case.procedure("C5-C6", date="2026-10-01")
    _procedure(case, other)["subject"] = {"reference": "Patient/p2"}
    _procedure(case, other)["bogusElement"] = 1
    void = case.procedure("L4-L5", date="2026-09-01", status="entered-in-error")
    _procedure(case, void)["bogusElement"] = 1
    assert case.run(payer="medicare").exit_code == 0


@pytest.mark.parametrize(
    ("text", "side"),
    [
        ("Bilateral (left and right) L4-5 facet injections", "bilateral"),
        ("left and right L4-L5 facet", "bilateral"),
        ("right and left L3 and L4 medial branch blocks", "bilateral"),
        ("Right facet injection at both L4-5 and L5-S1", "right"),  # "both" levels, not both sides
    ],
)
def test_side_words_with_no_level_between_them_are_one_side(text: str, side: str) -> None:
    assert {m.side for m in read_text(text).levels} == {side}


def test_nerve_wording_is_preferred_to_level_wording() -> None:
    case = CaseBuilder()
    case.block(
        None,
        codes=[],
        side=None,
        text="Left L5-S1 facet injection, diagnostic, fluoroscopy",
        note="Left L3 and L4 medial branches blocked",
    )
    result = case.run(payer="medicare")
    assert [f.level.joint for f in result.case.session.procedures[0].levels] == ["L4-L5"]


def _pair_case(before: str, after: str, later: str | None = None) -> set[str]:
    case = CaseBuilder()
    first = case.block("L4-L5", date="2026-07-01", relief=95)
    second = case.block("L4-L5", date="2026-07-22")
    case.add(case.pain_observation("before", before, 8, part_of=second))
    case.add(case.pain_observation("after", after, 1, part_of=second))
    if later:
        case.add(case.pain_observation("later", later, 8, part_of=second))
    del first
    case.block("L4-L5", intent="therapeutic")
    return rule_ids(case.run(payer="medicare"))


def test_relief_pairs_order_by_date_then_time_and_take_the_nearest_after_score() -> None:
    # The procedure is at 09:00-05:00; a date-only after-score on a later day is after it.
    assert "diagnostic-block-prerequisite" not in _pair_case("2026-07-22T08:00:00-05:00", "2026-07-23")
    # A follow-up weeks later does not erase the block's effect: the first score after counts.
    assert "diagnostic-block-prerequisite" not in _pair_case(
        "2026-07-22T08:00:00-05:00", "2026-07-22T11:00:00-05:00", later="2026-08-15T10:00:00-05:00"
    )


def test_stopped_conservative_care_was_tried() -> None:
    case = CaseBuilder(therapy=("2026-03-01", "2026-05-01"))
    next(r for r in case.resources if r["id"] == "pt")["status"] = "stopped"
    case.block("L4-L5")
    assert "conservative-care" not in rule_ids(case.run(payer="commercial"))


def test_resolved_condition_without_an_abatement_date_does_not_count() -> None:
    case = CaseBuilder(dx=["M47.816", "M54.16"])
    radiculopathy = next(r for r in case.resources if r.get("id") == "cond2")
    radiculopathy["clinicalStatus"] = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "resolved"}]
    }
    radiculopathy["abatementString"] = "years ago"
    case.block("L4-L5")
    assert "radiculopathy" not in rule_ids(case.run(payer="medicare"))


def test_pain_duration_uses_the_reason_condition_whatever_its_coding() -> None:
    case = CaseBuilder(onset="2026-09-01")  # the ICD-coded problem is recent
    case.add(
        {
            "resourceType": "Condition",
            "id": "snomed-only",
            "code": {"coding": [{"system": SCT, "code": "202708005"}], "text": "Lumbar facet syndrome"},
            "subject": {"reference": "Patient/p1"},
            "onsetDateTime": "2024-01-01",
        }
    )
    key = case.block("L4-L5")
    _procedure(case, key)["reasonReference"] = [{"reference": "Condition/snomed-only"}]
    result = case.run(payer="medicare")
    assert "pain-duration" not in rule_ids(result)
    onset = next(s for s in result.bundle["entry"][0]["resource"]["supportingInfo"] if s["timingDate"] == "2024-01-01")
    assert onset["category"]["coding"][0]["code"] == "onset"


def test_encounter_diagnoses_follow_their_rank() -> None:
    case = CaseBuilder(dx=["M47.816", "M47.817"])
    encounter = next(r for r in case.resources if r["resourceType"] == "Encounter")
    encounter["diagnosis"] = [
        {"condition": {"reference": "Condition/cond1"}, "rank": 2},
        {"condition": {"reference": "Condition/cond2"}, "rank": 1},
    ]
    case.block("L4-L5")
    claim = case.run(payer="medicare").bundle["entry"][0]["resource"]
    assert [d["diagnosisCodeableConcept"]["coding"][0]["code"] for d in claim["diagnosis"]] == ["M47.817", "M47.816"]


def test_intent_is_not_read_from_coding_displays() -> None:
    case = CaseBuilder()
    key = case.block("L4-L5", intent=None)
    _procedure(case, key)["code"]["coding"][0]["display"] = "Therapeutic facet injection"
    assert "intent-unknown" in rule_ids(case.run(payer="medicare"))


def test_an_unlisted_code_with_facet_words_is_a_facet_procedure_but_guidance_is_not() -> None:
    case = CaseBuilder()
    case.block("L4-L5", codes=["64999"], text="Lumbar facet joint cyst aspiration L4-L5, fluoroscopy")
    assert [line.code for line in case.run(payer="medicare").coding.lines] == ["64493"]
    guided = CaseBuilder()
    guided.block(None, codes=["77003"], side=None, text="Fluoroscopic guidance for facet injection")
    with pytest.raises(Exception, match="no facet procedure"):
        guided.run(payer="medicare")


@pytest.mark.parametrize(
    ("text", "technique"),
    [
        ("Following positive MBBs, RF ablation L4-L5 bilateral", "radiofrequency-ablation"),
        ("Following positive MBBs RF ablation L4-L5 bilateral", "radiofrequency-ablation"),
        ("status post RFA, now medial branch block", "medial-branch-block"),
        ("s/p RFA in 2024; medial branch block today", "medial-branch-block"),
    ],
)
def test_time_words_do_not_negate_technique(text: str, technique: str) -> None:
    assert technique_of(text) == technique


def test_mri_findings_are_not_guidance() -> None:
    assert guidance_of("Facet injection for arthropathy seen on MRI") is None
    assert guidance_of("MRI-guided facet injection") == "mri"


def test_history_sessions_without_levels_still_count_for_frequency() -> None:
    case = CaseBuilder()
    for day in ["2025-12-10", "2026-02-10", "2026-05-10", "2026-08-10"]:
        case.procedure(None, codes=[], side=None, date=day, text="Lumbar facet injection under fluoroscopy")
    case.block("L4-L5")
    assert "frequency-limit" in rule_ids(case.run(payer="medicare"))


def test_pain_scores_with_an_instant_count_and_without_a_value_do_not() -> None:
    with_instant = CaseBuilder(pain_score=None)
    obs = with_instant.pain_observation("p", "2026-10-01T08:00:00-05:00", 6)
    obs["effectiveInstant"] = obs.pop("effectiveDateTime")
    with_instant.add(obs)
    with_instant.block("L4-L5")
    assert "pain-score-missing" not in rule_ids(with_instant.run(payer="medicare"))
    without_value = CaseBuilder(pain_score=None)
    empty = without_value.pain_observation("p", "2026-10-01T08:00:00-05:00", 6)
    empty.pop("valueQuantity")
    empty["dataAbsentReason"] = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "asked-declined"}]
    }
    without_value.add(empty)
    without_value.block("L4-L5")
    assert "pain-score-missing" in rule_ids(without_value.run(payer="medicare"))


def test_service_request_dated_by_occurrence_timing() -> None:
    case = CaseBuilder()
    key = case.procedure("L4-L5", resource_type="ServiceRequest", status="active")
    request = _procedure(case, key)
    request["occurrenceTiming"] = {"event": [request.pop("occurrenceDateTime")]}
    result = case.run(payer="medicare", use="preauthorization")
    assert result.case.session.date.isoformat() == case.dos


def test_one_rfa_procedure_with_its_add_on_code_is_not_a_correction() -> None:
    case = CaseBuilder()
    for day in ("2026-07-01", "2026-07-22"):
        case.block(["L3-L4", "L4-L5", "L5-S1"], date=day, relief=90)
    case.procedure(["L3-L4", "L4-L5", "L5-S1"], intent="therapeutic", rfa=True, codes=["64635", "64636"])
    result = case.run(payer="medicare")
    assert lines(result) == [("64635", frozenset({"50"}), 1), ("64636", frozenset({"50"}), 2)]
    assert "input-corrected" not in rule_ids(result)


def test_history_bundle_compares_last_updated_as_instants() -> None:
    case = CaseBuilder()
    key = case.block("L4-L5", side="left")
    older = _procedure(case, key)
    newer = json.loads(json.dumps(older))
    newer["bodySite"][0]["coding"][0]["code"] = "24028007"  # right
    older["meta"] = {"lastUpdated": "2026-10-15T10:00:00+05:00"}  # 05:00Z
    newer["meta"] = {"lastUpdated": "2026-10-15T06:00:00Z"}  # later, though it sorts first as text
    entries = [
        {"fullUrl": f"urn:uuid:{i}", "resource": r, "request": {"method": "PUT", "url": "x"}}
        for i, r in enumerate(case.resources)
    ]
    entries.append({"resource": newer, "request": {"method": "PUT", "url": key}})
    history = {"resourceType": "Bundle", "type": "history", "entry": entries}
    result = process(json.dumps(history).encode(), Options(payer="medicare"))
    assert lines(result) == [("64493", frozenset({"RT", "KX"}), 1)]


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_max_input_mb_must_be_a_positive_number(tmp_path: Path, value: str) -> None:
    path = tmp_path / "in.json"
    path.write_text("{}")
    run = run_cli("claim", str(path), "--max-input-mb", value)
    assert run.code == 2, run.stderr.decode()
    assert b"Traceback" not in run.stderr


def test_id_less_ndjson_procedures_are_told_apart() -> None:
    case = CaseBuilder()
    case.block("L4-L5", codes=["64493"])
    case.block("L5-S1", codes=["64494"])
    for resource in case.resources:
        if resource["resourceType"] == "Procedure" and resource.get("id", "").startswith("proc"):
            resource.pop("id")
    ndjson = "\n".join(json.dumps(r) for r in case.resources).encode()
    result = process(ndjson, Options(payer="medicare"), name="export.ndjson")
    assert len(result.case.session.procedures) == 2
    assert len(result.bundle["entry"][0]["resource"]["procedure"]) == 2
    assert lines(result) == [("64493", KX50, 1), ("64494", KX50, 1)]


def test_reason_code_only_diagnosis_has_no_onset() -> None:
    case = CaseBuilder(dx=[])
    key = case.block("L4-L5")
    _procedure(case, key)["reasonCode"] = [{"coding": [{"system": ICD, "code": "M47.816"}]}]
    result = case.run(payer="medicare")
    assert "pain-duration" in rule_ids(result)
    assert [d.code for d in result.diagnoses.valid] == ["M47.816"]
