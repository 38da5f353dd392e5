"""Each rule on both sides of its threshold (contract §4.2)."""

from __future__ import annotations

import pytest
from builders import CaseBuilder, lines, rule_ids, shift

DOS = "2026-10-15"


def two_good_blocks(case: CaseBuilder, level: str = "L4-L5", relief: tuple[float, float] = (90, 85)) -> None:
    case.block(level, date="2026-07-01", relief=relief[0])
    case.block(level, date="2026-07-22", relief=relief[1])


# --------------------------------------------------------------------------- levels and regions


def test_two_levels_are_allowed_three_are_not() -> None:
    two = CaseBuilder()
    two.block(["L4-L5", "L5-S1"])
    assert "levels-exceed-limit" not in rule_ids(two.run(payer="medicare"))
    three = CaseBuilder()
    three.block(["L3-L4", "L4-L5", "L5-S1"])
    result = three.run(payer="medicare")
    assert "levels-exceed-limit" in rule_ids(result)
    assert result.exit_code == 1
    assert ("64495", frozenset({"50", "KX"}), 1) in lines(result)  # the third-level line is still written


def test_fourth_level_is_still_one_further_line() -> None:
    case = CaseBuilder()
    case.block(["L2-L3", "L3-L4", "L4-L5", "L5-S1"], side="left")
    assert lines(case.run(payer="medicare")) == [
        ("64493", frozenset({"LT", "KX"}), 1),
        ("64494", frozenset({"LT", "KX"}), 1),
        ("64495", frozenset({"LT", "KX"}), 1),
    ]


def test_multiple_regions_but_not_the_thoraco_lumbar_junction() -> None:
    two_regions = CaseBuilder(dx=["M47.816", "M47.812"])
    two_regions.block("L4-L5")
    two_regions.block("C5-C6")
    assert "multiple-regions" in rule_ids(two_regions.run(payer="medicare"))
    junction = CaseBuilder(dx="M47.815")
    junction.block(["T12-L1", "L1-L2"])
    result = junction.run(payer="medicare")
    assert "multiple-regions" not in rule_ids(result)
    assert lines(result) == [("64490", frozenset({"50", "KX"}), 1), ("64494", frozenset({"50", "KX"}), 1)]


def test_t12_l1_alone_is_cervical_thoracic() -> None:
    case = CaseBuilder(dx="M47.815")
    case.block("T12-L1", side="right")
    assert lines(case.run(payer="medicare")) == [("64490", frozenset({"RT", "KX"}), 1)]


# --------------------------------------------------------------------------- frequency


def _diagnostic_sessions(case: CaseBuilder, dates: list[str]) -> None:
    for day in dates:
        case.block("L4-L5", date=day, relief=95)


def test_four_diagnostic_sessions_allowed_five_not() -> None:
    four = CaseBuilder()
    _diagnostic_sessions(four, ["2026-01-10", "2026-04-10", "2026-07-10"])
    four.block("L4-L5")
    assert "frequency-limit" not in rule_ids(four.run(payer="medicare"))
    five = CaseBuilder()
    _diagnostic_sessions(five, ["2025-12-10", "2026-02-10", "2026-05-10", "2026-08-10"])
    five.block("L4-L5")
    assert "frequency-limit" in rule_ids(five.run(payer="medicare"))


@pytest.mark.parametrize(("first", "counted"), [("2025-10-16", True), ("2025-10-15", False)])
def test_twelve_month_window_starts_the_day_after_a_year_before(first: str, counted: bool) -> None:
    # Date of service 2026-10-15: the 12 calendar months ending on it start 2025-10-16.
    case = CaseBuilder()
    _diagnostic_sessions(case, [first, "2026-02-10", "2026-05-10", "2026-08-10"])
    case.block("L4-L5")
    assert ("frequency-limit" in rule_ids(case.run(payer="medicare"))) is counted


def test_rfa_two_sessions_allowed_three_not() -> None:
    def rfa_case(previous_rfas: list[str]) -> set[str]:
        case = CaseBuilder()
        two_good_blocks(case)
        for day in previous_rfas:
            case.procedure("L4-L5", intent="therapeutic", rfa=True, date=day)
        case.procedure("L4-L5", intent="therapeutic", rfa=True)
        return rule_ids(case.run(payer="medicare"))

    assert "frequency-limit" not in rfa_case(["2026-08-01"])
    assert "frequency-limit" in rfa_case(["2026-08-01", "2026-09-01"])


def test_frequency_counts_per_region() -> None:
    case = CaseBuilder(dx=["M47.816", "M47.812"])
    for day in ["2025-12-10", "2026-02-10", "2026-05-10", "2026-08-10"]:
        case.block("C5-C6", date=day, relief=95)
    case.block("L4-L5")
    assert "frequency-limit" not in rule_ids(case.run(payer="medicare"))


def test_not_completed_sessions_are_not_counted() -> None:
    case = CaseBuilder()
    _diagnostic_sessions(case, ["2025-12-10", "2026-02-10", "2026-05-10"])
    case.procedure("L4-L5", date="2026-08-10", status="not-done")
    case.procedure("L4-L5", date="2026-08-11", status="entered-in-error")
    case.procedure("L4-L5", date="2026-08-12", status="in-progress")
    case.block("L4-L5")
    assert "frequency-limit" not in rule_ids(case.run(payer="medicare"))


# --------------------------------------------------------------------------- diagnostic blocks


@pytest.mark.parametrize(("relief", "held"), [((90, 80), False), ((90, 79), True)])
def test_therapeutic_needs_two_blocks_with_80_percent(relief: tuple[float, float], held: bool) -> None:
    case = CaseBuilder()
    two_good_blocks(case, relief=relief)
    case.block("L4-L5", intent="therapeutic")
    result = case.run(payer="medicare")
    assert ("diagnostic-block-prerequisite" in rule_ids(result)) is held
    assert lines(result) == [("64493", frozenset({"50"}), 1)]  # therapeutic: no KX


def test_therapeutic_with_one_block_or_other_levels_is_held() -> None:
    one = CaseBuilder()
    one.block("L4-L5", date="2026-07-01", relief=95)
    one.block("L4-L5", intent="therapeutic")
    assert "diagnostic-block-prerequisite" in rule_ids(one.run(payer="medicare"))
    elsewhere = CaseBuilder()
    two_good_blocks(elsewhere, level="L2-L3")
    elsewhere.block("L4-L5", intent="therapeutic")
    assert "diagnostic-block-prerequisite" in rule_ids(elsewhere.run(payer="medicare"))


def test_relief_from_a_before_after_pain_pair() -> None:
    def relief_case(after: float) -> set[str]:
        case = CaseBuilder()
        first = case.block("L4-L5", date="2026-07-01", relief=95)
        second = case.block("L4-L5", date="2026-07-22")
        case.add(case.pain_observation("before", "2026-07-22T08:00:00-05:00", 10, part_of=second))
        case.add(case.pain_observation("after", "2026-07-22T13:00:00-05:00", after, part_of=second))
        del first
        case.block("L4-L5", intent="therapeutic")
        return rule_ids(case.run(payer="medicare"))

    assert "diagnostic-block-prerequisite" not in relief_case(2)  # (10 - 2) / 10 = 80%
    assert "diagnostic-block-prerequisite" in relief_case(2.1)  # 79%


def test_rfa_needs_two_blocks_too() -> None:
    held = CaseBuilder()
    held.procedure("L4-L5", intent="therapeutic", rfa=True)
    assert "diagnostic-block-prerequisite" in rule_ids(held.run(payer="medicare"))
    ready = CaseBuilder()
    two_good_blocks(ready)
    ready.procedure(["L4-L5", "L5-S1"], intent="therapeutic", rfa=True)
    result = ready.run(payer="medicare")
    assert "diagnostic-block-prerequisite" not in rule_ids(result)
    assert lines(result) == [("64635", frozenset({"50"}), 1), ("64636", frozenset({"50"}), 1)]


def test_second_diagnostic_block_needs_relief_after_the_first() -> None:
    for relief, held in ((80, False), (79, True), (None, True)):
        case = CaseBuilder()
        case.block("L4-L5", date="2026-09-01", relief=relief)
        case.block("L4-L5")
        assert ("diagnostic-block-prerequisite" in rule_ids(case.run(payer="medicare"))) is held, relief


@pytest.mark.parametrize(("days", "warned"), [(13, True), (14, False)])
def test_block_interval(days: int, warned: bool) -> None:
    case = CaseBuilder()
    case.block("L4-L5", date=shift(DOS, -days), relief=90)
    case.block("L4-L5")
    result = case.run(payer="medicare")
    assert ("block-interval" in rule_ids(result)) is warned
    assert result.exit_code == 0  # a warning does not hold the claim


# --------------------------------------------------------------------------- documentation


@pytest.mark.parametrize(("onset", "held"), [("2026-07-15", False), ("2026-07-16", True), (None, True)])
def test_pain_duration(onset: str | None, held: bool) -> None:
    case = CaseBuilder(onset=onset)
    case.block("L4-L5")
    assert ("pain-duration" in rule_ids(case.run(payer="medicare"))) is held


def test_pain_score() -> None:
    missing = CaseBuilder(pain_score=None)
    missing.block("L4-L5")
    result = missing.run(payer="medicare")
    assert "pain-score-missing" in rule_ids(result)
    assert result.exit_code == 0
    stale = CaseBuilder(pain_score="2025-10-14")
    stale.block("L4-L5")
    assert "pain-score-missing" in rule_ids(stale.run(payer="medicare"))
    fresh = CaseBuilder(pain_score="2025-10-15")
    fresh.block("L4-L5")
    assert "pain-score-missing" not in rule_ids(fresh.run(payer="medicare"))


def test_conservative_care_medicare_warns() -> None:
    case = CaseBuilder(therapy=None)
    case.block("L4-L5")
    result = case.run(payer="medicare")
    finding = next(f for f in result.findings if f.rule_id == "conservative-care")
    assert finding.severity == "warning"
    assert result.exit_code == 0


@pytest.mark.parametrize(("end", "held"), [("2026-03-28", True), ("2026-03-29", False)])
def test_conservative_care_commercial_needs_four_weeks(end: str, held: bool) -> None:
    case = CaseBuilder(therapy=("2026-03-01", end), payer_name="Acme Health")
    case.block("L4-L5")
    result = case.run(payer="commercial")
    assert ("conservative-care" in rule_ids(result)) is held
    assert lines(result) == [("64493", frozenset({"LT"}), 1), ("64493", frozenset({"RT"}), 1)]


def test_radiculopathy_warns() -> None:
    case = CaseBuilder(dx=["M47.816", "M54.16"])
    case.block("L4-L5")
    result = case.run(payer="medicare")
    assert "radiculopathy" in rule_ids(result)
    assert result.exit_code == 0


# --------------------------------------------------------------------------- diagnoses


def test_dx_not_covered_for_the_region() -> None:
    case = CaseBuilder(dx="M47.816")
    case.block("C5-C6")
    assert "dx-not-covered" in rule_ids(case.run(payer="medicare"))
    thoracolumbar = CaseBuilder(dx="M47.815")
    thoracolumbar.block("L4-L5")
    assert "dx-not-covered" not in rule_ids(thoracolumbar.run(payer="medicare"))


def test_m53_8_covers_injections_not_rfa() -> None:
    injection = CaseBuilder(dx="M53.86")
    injection.block("L4-L5")
    assert "dx-not-covered" not in rule_ids(injection.run(payer="medicare"))
    rfa = CaseBuilder(dx="M53.86")
    two_good_blocks(rfa)
    rfa.procedure("L4-L5", intent="therapeutic", rfa=True)
    assert "dx-not-covered" in rule_ids(rfa.run(payer="medicare"))


def test_invalid_codes_are_flagged_and_left_off_the_claim() -> None:
    case = CaseBuilder(dx=["M54.5", "M47.816", "Q99.99"])
    case.block("L4-L5")
    result = case.run(payer="medicare")
    invalid = [f for f in result.findings if f.rule_id == "dx-invalid"]
    assert len(invalid) == 2
    codes = [
        d["diagnosisCodeableConcept"]["coding"][0]["code"] for d in result.bundle["entry"][0]["resource"]["diagnosis"]
    ]
    assert codes == ["M47.816"]


# --------------------------------------------------------------------------- prior authorization


@pytest.mark.parametrize(("pos", "held"), [("22", True), ("19", True), ("11", False), ("24", False)])
def test_medicare_hospital_outpatient_needs_prior_auth(pos: str, held: bool) -> None:
    case = CaseBuilder(pos=pos)
    case.block("L4-L5")
    assert ("prior-auth-required" in rule_ids(case.run(payer="medicare"))) is held


def test_prior_auth_on_record() -> None:
    case = CaseBuilder(pos="22")
    case.block("L4-L5")
    result = case.run(payer="medicare", prior_auth="UTN123456789012")
    assert "prior-auth-required" not in rule_ids(result)
    assert result.bundle["entry"][0]["resource"]["insurance"][0]["preAuthRef"] == ["UTN123456789012"]
    from_response = CaseBuilder(pos="22")
    from_response.block("L4-L5")
    from_response.add(
        {
            "resourceType": "ClaimResponse",
            "id": "pa",
            "status": "active",
            "type": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]
            },
            "use": "preauthorization",
            "patient": {"reference": "Patient/p1"},
            "created": "2026-09-30",
            "insurer": {"reference": "Organization/payer"},
            "outcome": "complete",
            "preAuthRef": "UTN-FROM-RESPONSE",
        }
    )
    assert "prior-auth-required" not in rule_ids(from_response.run(payer="medicare"))


def test_commercial_has_no_prior_auth_rule() -> None:
    case = CaseBuilder(pos="22")
    case.block("L4-L5")
    assert "prior-auth-required" not in rule_ids(case.run(payer="commercial"))


# --------------------------------------------------------------------------- claim data and defaults


def test_claim_data_missing_still_writes_a_claim() -> None:
    case = CaseBuilder(coverage=False, pos=None)
    case.block("L4-L5", performer=False)
    result = case.run(payer="medicare")
    missing = [f for f in result.findings if f.rule_id == "claim-data-missing"]
    assert len(missing) == 2
    claim = result.bundle["entry"][0]["resource"]
    assert claim["status"] == "draft"
    assert "display" in claim["provider"] and "display" in claim["insurance"][0]["coverage"]
    assert {"pos-defaulted"} <= rule_ids(result)


def test_payer_from_coverage_or_default() -> None:
    medicare = CaseBuilder(payer_name="MEDICARE PART B")
    medicare.block("L4-L5")
    result = medicare.run()
    # Without a state for the place of service the Medicare contractor is assumed (issue 14).
    assert result.pack.name == "medicare" and "payer-defaulted" in rule_ids(result)
    assert "names no contractor" in next(f.message for f in result.findings if f.rule_id == "payer-defaulted")
    other = CaseBuilder(payer_name="Acme Health Plan")
    other.block("L4-L5")
    result = other.run()
    assert result.pack.name == "commercial" and "payer-defaulted" in rule_ids(result)


def test_every_finding_carries_its_rule_metadata() -> None:
    case = CaseBuilder(dx="M54.5", onset=None, pain_score=None, therapy=None, pos="22")
    case.block(["L3-L4", "L4-L5", "L5-S1"], intent=None, side=None)
    result = case.run(payer="medicare")
    assert {
        "dx-invalid",
        "pain-duration",
        "pain-score-missing",
        "conservative-care",
        "levels-exceed-limit",
        "laterality-unknown",
        "intent-unknown",
        "prior-auth-required",
        "dx-not-covered",
    } <= rule_ids(result)
    for finding in result.findings:
        assert finding.pack == "medicare" and finding.pack_version
        assert finding.citation and finding.message and finding.hint
        assert finding.severity in ("error", "warning", "information")
    issues = result.outcome()["issue"]
    assert all(issue["details"]["coding"][0]["system"] == "urn:facet-adapter:rule" for issue in issues)
    carc = [issue for issue in issues if len(issue["details"]["coding"]) > 1]
    assert carc and all(
        i["details"]["coding"][1]["system"] == "https://x12.org/codes/claim-adjustment-reason-codes" for i in carc
    )
