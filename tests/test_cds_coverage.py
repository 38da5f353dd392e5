"""From the claim decision to CRD coverage information: what each kind of finding makes of the
answer, the extension's invariants (q1-q9, STU2's q1-q5) on every answer the service can give,
the extension's structure against the CRD definition in the corpus, the policy links and the
coverage-assertion-id."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import pytest
from builders import NOW, CaseBuilder
from crdspec import CORPUS, SUMMARIES, conform, summary
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.cds.assessment import (
    RULE_KINDS,
    Assessment,
    assess,
    check_rule_kinds,
    error_assessment,
    policy_links,
    timeframe_assessment,
)
from adapter.cds.extension import URL, coverage_information, updated, violations
from adapter.decision import ClaimDecision
from adapter.pipeline import Result
from adapter.rules.findings import Finding
from adapter.rules.packs import Pack
from adapter.rules.registry import RULE_IDS
from adapter.rules.selection import load_pack

SPECS = json.loads(SUMMARIES.read_text())
ORDER = "ServiceRequest/proc1"


def planned(pos: str | None = "11", **options: Any) -> Result:
    case = CaseBuilder(dos="2026-12-15", pos=pos, **options)
    case.procedure("L4-L5", resource_type="ServiceRequest", status="draft")
    return case.run(use="preauthorization", now=NOW)


BASE = planned()
HOPD = planned(pos="22")


def finding(pack: Pack, rule_id: str, severity: str) -> Finding:
    spec = pack.rule(rule_id)
    return Finding(
        rule_id, spec.version, pack.name, pack.version, severity, spec.issue, spec.title,  # type: ignore[arg-type]
        f"{rule_id} hit", pack.citation(rule_id), spec.carc, spec.hint, (),
    )  # fmt: skip


def with_findings(decision: ClaimDecision, pack: Pack, *found: tuple[str, str], **changes: Any) -> ClaimDecision:
    return dataclasses.replace(decision, findings=tuple(finding(pack, r, s) for r, s in found), **changes)


def codes(extension: dict[str, Any], name: str) -> list[str]:
    return [p["valueCode"] for p in extension["extension"] if p["url"] == name]


# --------------------------------------------------------------------------- findings → coverage information


def test_every_rule_of_the_registry_has_a_meaning_for_a_planned_service() -> None:
    assert check_rule_kinds() == []
    assert set(RULE_KINDS) == set(RULE_IDS)


def test_no_findings_is_covered_without_prior_authorization() -> None:
    a = assess(BASE.decision, ORDER, BASE.pack)
    assert (a.covered, a.pa_needed, a.doc_needed, a.info_needed) == ("covered", "no-auth", (), ())
    assert [b.code for b in a.billing] == ["64493:50:KX"]
    assert not a.acts


@pytest.mark.parametrize(
    ("found", "covered", "docs", "info"),
    [
        ([("dx-not-covered", "error")], "not-covered", (), ()),
        ([("frequency-limit", "error")], "not-covered", (), ()),
        ([("radiculopathy", "warning")], "covered", ("clinical",), ()),
        ([("pain-score-missing", "warning")], "covered", ("clinical",), ()),
        ([("conservative-care", "error")], "conditional", ("clinical",), ("OTH",)),
        ([("levels-unknown", "error")], "conditional", (), ("detail-code",)),
        ([("dx-invalid", "error")], "conditional", (), ("OTH",)),
        ([("claim-data-missing", "error")], "conditional", (), ("performer",)),
        ([("rule-not-applied", "error")], "indeterminate", (), ()),
        ([("rule-not-applied", "error"), ("dx-not-covered", "error")], "not-covered", (), ()),
        ([("input-corrected", "warning"), ("levels-inferred", "information")], "covered", (), ()),
        ([("guidance-unknown", "warning")], "covered", (), ()),
    ],
)
def test_what_each_kind_of_finding_makes_of_the_answer(
    found: list[tuple[str, str]], covered: str, docs: tuple[str, ...], info: tuple[str, ...]
) -> None:
    decision = with_findings(BASE.decision, BASE.pack, *found)
    a = assess(decision, ORDER, BASE.pack)
    assert (a.covered, a.doc_needed, a.info_needed) == (covered, docs, info)
    shaping = [
        r
        for r, s in found
        if s != "information" and RULE_KINDS[r] != "billing" and not (s == "warning" and RULE_KINDS[r] == "detail")
    ]
    assert {f.rule_id for f in a.findings} == set(shaping)
    for rule_id in shaping:
        assert any(r.rule_id == rule_id for r in a.reasons)
        assert any(d.qualification and d.qualification.startswith(rule_id) for d in a.details)
    coverage_information(a, "2.2")
    coverage_information(a, "2.0")


def test_prior_authorization_from_the_pack_list_and_the_place_of_service() -> None:
    assert assess(HOPD.decision, ORDER, HOPD.pack).pa_needed == "auth-needed"
    satisfied = assess(
        dataclasses.replace(HOPD.decision, prior_auth="UTN1", prior_auth_source="ClaimResponse/pa"), ORDER, HOPD.pack
    )
    assert (satisfied.pa_needed, satisfied.satisfied_pa_id) == ("satisfied", "UTN1")
    defaulted = planned(pos=None)
    unknown = assess(defaulted.decision, ORDER, defaulted.pack)
    assert (unknown.pa_needed, unknown.info_needed) == ("conditional", ("location",))
    commercial = load_pack("commercial")
    assert assess(HOPD.decision, ORDER, commercial).pa_needed == "no-auth"  # no prior-authorization list
    documented = with_findings(HOPD.decision, HOPD.pack, ("pain-score-missing", "warning"))
    a = assess(documented, ORDER, HOPD.pack)
    assert a.doc_purpose == ("withpa",)  # the documentation goes with the prior authorization request
    assert assess(documented, ORDER, HOPD.pack, hook="order-select").doc_needed == ()


def test_a_coverage_not_in_force_is_not_covered() -> None:
    a = assess(BASE.decision, ORDER, BASE.pack, coverage_active=False)
    assert a.covered == "not-covered" and a.pa_needed is None
    assert a.reasons[0].code == "no-active-coverage"


def test_the_assertion_id_is_stable_for_the_same_answer_and_changes_with_it() -> None:
    first = assess(BASE.decision, ORDER, BASE.pack)
    again = assess(dataclasses.replace(BASE.decision, created=dt.datetime(2027, 1, 1, tzinfo=dt.UTC)), ORDER, BASE.pack)
    assert first.assertion_id == again.assertion_id  # the date of the assertion is not part of it
    other = assess(with_findings(BASE.decision, BASE.pack, ("dx-not-covered", "error")), ORDER, BASE.pack)
    assert other.assertion_id != first.assertion_id
    assert assess(BASE.decision, ORDER, BASE.pack, hook="order-select").assertion_id == first.assertion_id


def test_policy_links_of_the_shipped_packs() -> None:
    medicare = load_pack("medicare")
    links = {url: label for label, url in policy_links(medicare.citation(r) for r in RULE_IDS)}
    assert links["https://www.cms.gov/medicare-coverage-database/view/lcd.aspx?lcdid=38773"] == "LCD L38773"
    assert links["https://www.cms.gov/medicare-coverage-database/view/article.aspx?articleid=58364"].endswith("A58364")
    assert links["https://www.ecfr.gov/current/title-42/section-419.83"] == "42 CFR 419.83"


# --------------------------------------------------------------------------- invariants on every answer

RULE = st.sampled_from(RULE_IDS)
SEVERITY = st.sampled_from(["error", "warning", "information"])


@settings(max_examples=300, deadline=None)
@given(
    found=st.lists(st.tuples(RULE, SEVERITY), max_size=6),
    pos=st.sampled_from([("11", "location"), ("22", "location"), ("11", "default"), ("19", "location")]),
    prior_auth=st.sampled_from([None, "UTN-1"]),
    active=st.booleans(),
    hook=st.sampled_from(["order-sign", "order-select"]),
    pack=st.sampled_from(["medicare", "commercial", "medicare-noridian-jf"]),
)
def test_every_answer_keeps_the_invariants_and_the_definition(
    found: list[tuple[str, str]],
    pos: tuple[str, str],
    prior_auth: str | None,
    active: bool,
    hook: str,
    pack: str,
) -> None:
    chosen = load_pack(pack)
    decision = with_findings(
        BASE.decision,
        chosen,
        *found,
        place_of_service=pos[0],
        place_of_service_source=pos[1],
        prior_auth=prior_auth,
    )
    a = assess(decision, ORDER, chosen, hook=hook, coverage_active=active)  # type: ignore[arg-type]
    for version in ("2.2", "2.0"):
        extension = coverage_information(a, version)  # raises when an invariant breaks
        assert conform(extension, SPECS[version]) == []


@pytest.mark.parametrize(
    "a",
    [
        error_assessment(ORDER, "Coverage/cov", dt.date(2026, 12, 3), "server down"),
        error_assessment(ORDER, "Coverage/cov", dt.date(2026, 12, 3), "ended", code="no-active-coverage"),
        timeframe_assessment(ORDER, "Coverage/cov", dt.date(2026, 12, 3), "no date"),
    ],
    ids=["technical", "no-active-coverage", "timeframe"],
)
def test_error_answers_keep_the_invariants(a: Assessment) -> None:
    for version in ("2.2", "2.0"):
        assert conform(coverage_information(a, version), SPECS[version]) == []


def _broken(*parts: dict[str, Any]) -> dict[str, Any]:
    base = [
        {"url": "coverage", "valueReference": {"reference": "Coverage/c"}},
        {"url": "date", "valueDate": "2026-12-03"},
        {"url": "coverage-assertion-id", "valueString": "x"},
    ]
    return {"url": URL, "extension": [*base, *parts]}


def code(name: str, value: str) -> dict[str, Any]:
    return {"url": name, "valueCode": value}


REASON = {"url": "reason", "valueCodeableConcept": {"text": "why"}}


@pytest.mark.parametrize(
    ("extension", "invariant"),
    [
        (
            _broken(
                code("covered", "covered"),
                code("pa-needed", "no-auth"),
                {"url": "questionnaire", "valueCanonical": "http://q"},
            ),
            "crd-ci-q1",
        ),
        (_broken(code("covered", "not-covered"), code("pa-needed", "no-auth")), "crd-ci-q2"),
        (_broken(code("covered", "conditional")), "crd-ci-q3"),
        (_broken(code("covered", "covered"), code("info-needed", "location")), "crd-ci-q3"),
        (
            _broken(
                code("covered", "covered"),
                code("pa-needed", "no-auth"),
                code("doc-needed", "clinical"),
                code("doc-purpose", "withpa"),
                REASON,
            ),
            "crd-ci-q4",
        ),
        (
            _broken(
                code("covered", "not-covered"), code("doc-needed", "clinical"), code("doc-purpose", "withpa"), REASON
            ),
            "crd-ci-q4",
        ),
        (_broken(code("covered", "covered"), code("pa-needed", "satisfied")), "crd-ci-q5"),
        (
            _broken(
                code("covered", "covered"), code("pa-needed", "no-auth"), {"url": "satisfied-pa-id", "valueString": "1"}
            ),
            "crd-ci-q5",
        ),
        (_broken(code("covered", "conditional"), code("info-needed", "OTH")), "crd-ci-q6"),
        (
            _broken(
                code("covered", "covered"),
                {"url": "reason", "valueCodeableConcept": {"coding": [{"system": "urn:x", "code": "y"}]}},
            ),
            "crd-ci-q7",
        ),
        (
            _broken(code("covered", "covered"), code("doc-needed", "clinical"), code("doc-purpose", "withclaim")),
            "crd-ci-q8",
        ),
        (_broken(code("covered", "indeterminate")), "crd-ci-q9"),
    ],
)
def test_each_invariant_is_checked(extension: dict[str, Any], invariant: str) -> None:
    assert any(p.startswith(invariant) for p in violations(extension, "2.2")), violations(extension, "2.2")


def test_stu2_checks_its_own_codes_and_one_direction_of_q3() -> None:
    assert violations(_broken(code("covered", "conditional"), code("pa-needed", "no-auth")), "2.0") == []
    # STU2's q2 expression: pa-needed whenever the service is not not-covered (checked as well)
    assert any("STU2 expression" in p for p in violations(_broken(code("covered", "conditional")), "2.0"))
    assert any("value set" in p for p in violations(_broken(code("covered", "indeterminate")), "2.0"))
    two_docs = _broken(
        code("covered", "covered"),
        code("pa-needed", "no-auth"),
        code("doc-needed", "clinical"),
        code("doc-needed", "admin"),
    )
    assert any("doc-needed repeats" in p for p in violations(two_docs, "2.0"))


def test_an_update_replaces_only_this_coverages_information() -> None:
    a = assess(BASE.decision, ORDER, BASE.pack)
    extension = coverage_information(a)
    other_payer = {"url": URL, "extension": [{"url": "coverage", "valueReference": {"reference": "Coverage/other"}}]}
    stale = {"url": URL, "extension": [{"url": "coverage", "valueReference": {"reference": "Coverage/cov"}}]}
    unrelated = {"url": "http://example.org/x", "valueString": "kept"}
    order = {"resourceType": "ServiceRequest", "id": "proc1", "extension": [unrelated, other_payer, stale]}
    assert updated(order, extension)["extension"] == [unrelated, other_payer, extension]


# --------------------------------------------------------------------------- the CRD definition


@pytest.mark.skipif(not CORPUS.is_dir(), reason="the shared CRD corpus is not on this machine")
def test_the_committed_summaries_match_the_crd_definitions() -> None:
    assert SPECS == {version: summary(CORPUS, version) for version in ("2.2", "2.0")}


def test_the_summaries_name_the_parts_and_invariants_this_service_relies_on() -> None:
    current = SPECS["2.2"]
    assert current["invariants"] == [f"crd-ci-q{n}" for n in range(1, 10)]
    assert SPECS["2.0"]["invariants"] == [f"crd-ci-q{n}" for n in range(1, 6)]
    assert current["elements"]["covered"]["codes"] == ["conditional", "covered", "indeterminate", "not-covered"]
    assert set(current["detail"]) == {"category", "code", "value", "qualification"}
    assert "category" not in SPECS["2.0"]["detail"]
