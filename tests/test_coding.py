"""The coding table, orders, formats and corrections (contract §3)."""

from __future__ import annotations

from builders import CaseBuilder, lines, rule_ids

KX50 = frozenset({"50", "KX"})


def test_bilateral_levels_come_first_then_caudal_to_cranial() -> None:
    case = CaseBuilder()
    case.block("L5-S1", side="right", codes=["64493"])
    case.block("L4-L5", side="bilateral", codes=["64494"])
    result = case.run(payer="medicare")
    assert [(line.code, line.levels[0].level.joint) for line in result.coding.lines] == [
        ("64493", "L4-L5"),
        ("64494", "L5-S1"),
    ]
    assert lines(result) == [("64493", KX50, 1), ("64494", frozenset({"RT", "KX"}), 1)]
    assert "input-corrected" not in rule_ids(result)  # which level carries the primary code does not matter


def test_left_and_right_procedures_make_one_bilateral_level() -> None:
    for payer, expected in (
        ("medicare", [("64493", KX50, 1)]),
        ("commercial", [("64493", frozenset({"LT"}), 1), ("64493", frozenset({"RT"}), 1)]),
    ):
        case = CaseBuilder(therapy=("2026-01-01", "2026-06-01"))
        case.block("L4-L5", side="left", codes=["64493"])
        case.block("L4-L5", side="right", codes=["64493"])
        result = case.run(payer=payer)
        assert lines(result) == expected, payer
        assert "input-corrected" not in rule_ids(result)


def test_primary_code_on_every_level_is_corrected() -> None:
    case = CaseBuilder()
    case.block("L4-L5", codes=["64493"])
    case.block("L5-S1", codes=["64493"])
    result = case.run(payer="medicare")
    assert lines(result) == [("64493", KX50, 1), ("64494", KX50, 1)]
    finding = next(f for f in result.findings if f.rule_id == "input-corrected")
    assert "removed 64493" in finding.message and "added 64494" in finding.message


def test_wrong_region_code_is_corrected() -> None:
    case = CaseBuilder()
    case.block("L4-L5", codes=["64490"])
    result = case.run(payer="medicare")
    assert lines(result) == [("64493", KX50, 1)]
    assert "input-corrected" in rule_ids(result)


def test_commercial_third_level_bilateral_is_two_lines() -> None:
    case = CaseBuilder(therapy=("2026-01-01", "2026-06-01"))
    case.block(["L3-L4", "L4-L5", "L5-S1"])
    assert lines(case.run(payer="commercial")) == [
        ("64493", frozenset({"LT"}), 1),
        ("64493", frozenset({"RT"}), 1),
        ("64494", frozenset({"LT"}), 1),
        ("64494", frozenset({"RT"}), 1),
        ("64495", frozenset({"LT"}), 1),
        ("64495", frozenset({"RT"}), 1),
    ]


def test_rfa_add_on_quantity_counts_further_joints_per_side() -> None:
    case = CaseBuilder()
    case.block(["L5-S1", "L4-L5"], date="2026-07-01", relief=90)
    case.block(["L5-S1", "L4-L5"], date="2026-07-22", relief=90)
    case.procedure(["L3-L4", "L4-L5", "L5-S1"], intent="therapeutic", rfa=True, side="left")
    assert lines(case.run(payer="medicare")) == [("64635", frozenset({"LT"}), 1), ("64636", frozenset({"LT"}), 2)]
    commercial = CaseBuilder(therapy=("2026-01-01", "2026-06-01"))
    commercial.procedure(["L4-L5", "L5-S1"], intent="therapeutic", rfa=True, side="bilateral")
    assert lines(commercial.run(payer="commercial")) == [
        ("64635", frozenset({"LT"}), 1),
        ("64635", frozenset({"RT"}), 1),
        ("64636", frozenset({"LT"}), 1),
        ("64636", frozenset({"RT"}), 1),
    ]


def test_thoraco_lumbar_rfa() -> None:
    case = CaseBuilder(dx="M47.815")
    case.procedure(["T12-L1", "L1-L2"], intent="therapeutic", rfa=True, side="right")
    assert lines(case.run(payer="medicare")) == [("64633", frozenset({"RT"}), 1), ("64636", frozenset({"RT"}), 1)]


def test_ultrasound_guided_injections_use_category_iii_codes() -> None:
    case = CaseBuilder()
    case.block(["L4-L5", "L5-S1"], codes=[], text="Ultrasound-guided bilateral L4-5 and L5-S1 facet injections")
    result = case.run(payer="medicare")
    assert lines(result) == [("0216T", KX50, 1), ("0217T", KX50, 1)]
    assert "guidance-not-covered" in rule_ids(result)


def test_unguided_and_mri_are_coded_as_fluoroscopy_and_flagged() -> None:
    for text in ("L4-L5 facet injection without image guidance", "MRI-guided L4-L5 facet injection"):
        case = CaseBuilder()
        case.block("L4-L5", codes=[], text=text)
        result = case.run(payer="medicare")
        assert lines(result) == [("64493", KX50, 1)], text
        assert "guidance-not-covered" in rule_ids(result)


def test_no_cpt_and_no_guidance_words_is_unknown_not_uncovered() -> None:
    case = CaseBuilder()
    case.block("L4-L5", codes=[], text="L4-L5 facet joint injection")
    result = case.run(payer="medicare")
    assert "guidance-unknown" in rule_ids(result)
    assert "guidance-not-covered" not in rule_ids(result)


def test_levels_from_cpt_counts_are_unnamed_and_inferred() -> None:
    case = CaseBuilder()
    case.block(None, codes=["64493", "64494"], side=None)
    result = case.run(payer="medicare")
    assert {"levels-inferred", "laterality-unknown"} <= rule_ids(result)
    assert lines(result) == [("64493", frozenset({"KX"}), 1), ("64494", frozenset({"KX"}), 1)]


def test_imaging_codes_are_dropped() -> None:
    case = CaseBuilder()
    key = case.block("L4-L5")
    case.add(
        {
            "resourceType": "Procedure",
            "id": "fluoro",
            "status": "completed",
            "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "77003"}]},
            "subject": {"reference": "Patient/p1"},
            "partOf": [{"reference": key}],
            "performedDateTime": "2026-10-15T09:05:00-05:00",
        }
    )
    result = case.run(payer="medicare")
    assert "imaging-line-bundled" in rule_ids(result)
    assert [line.code for line in result.coding.lines] == ["64493"]
    assert result.case.session.procedures[0].guidance == "fluoroscopy"


def test_therapeutic_and_unknown_intent_get_no_kx() -> None:
    case = CaseBuilder()
    case.block("L4-L5", date="2026-07-01", relief=90)
    case.block("L4-L5", date="2026-07-22", relief=90)
    case.block("L4-L5", intent=None)
    result = case.run(payer="medicare")
    assert lines(result) == [("64493", frozenset({"50"}), 1)]
    assert "intent-unknown" in rule_ids(result)


def test_left_in_text_and_right_in_body_site_for_one_level_is_bilateral() -> None:
    case = CaseBuilder()
    case.block("L4-L5", side="right", text="Left L4-L5 facet joint injection")
    assert lines(case.run(payer="medicare")) == [("64493", KX50, 1)]
    whole = CaseBuilder()
    whole.block("L4-L5", side="right", text="Bilateral lumbar facet joint injection")  # no level: fills only gaps
    assert lines(whole.run(payer="medicare")) == [("64493", frozenset({"RT", "KX"}), 1)]
