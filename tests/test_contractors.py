"""Medicare contractors (issue 14): a pack per A/B MAC, chosen from the Coverage or the state of the
place of service; rules applied as in force on the date of service; the jurisdiction table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from builders import CaseBuilder, rule_ids

from adapter.errors import RulePackError
from adapter.model import CoverageFacts
from adapter.pipeline import Result
from adapter.rules.jurisdictions import jurisdiction_of, jurisdiction_table
from adapter.rules.packs import available_packs
from adapter.rules.selection import load_pack, pack_choice
from adapter.tables import load_toml

STATES = (
    "AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND OH OK OR "
    "PA RI SC SD TN TX UT VT VA WA WV WI WY"
).split()
TERRITORIES = ("DC", "PR", "VI", "GU", "AS", "MP")
# The contractor packs, one state of each, and the jurisdictions the issue's table gives them.
CONTRACTORS = {
    "medicare": ("KY", {"J15"}),
    "medicare-noridian-jf": ("WA", {"JF"}),
    "medicare-noridian-je": ("CA", {"JE"}),
    "medicare-ngs": ("NY", {"J6", "JK"}),
    "medicare-palmetto": ("GA", {"JJ", "JM"}),
    "medicare-wps": ("MO", {"J5", "J8"}),
    "medicare-novitas": ("TX", {"JH", "JL"}),
    "medicare-first-coast": ("FL", {"JN"}),
}
MEDICARE = ("Medicare Part B",)


# --------------------------------------------------------------------------- the jurisdiction table


def test_the_jurisdiction_table_covers_every_state_dc_and_the_territories_once() -> None:
    table = jurisdiction_table()
    listed = [state for j in table.jurisdictions.values() for state in j.states]
    assert sorted(listed) == sorted([*STATES, *TERRITORIES])
    assert len(listed) == len(set(listed)) == 56
    assert table.source and "CMS" in table.source


def test_every_jurisdiction_names_a_contractor_pack_that_names_it_back() -> None:
    table = jurisdiction_table()
    for code, jurisdiction in table.jurisdictions.items():
        pack = load_pack(jurisdiction.pack)
        assert pack.contractor is not None and code in pack.contractor.jurisdictions, code
    packs_with_a_contractor = {n for n in available_packs() if load_pack(n).contractor is not None}
    assert packs_with_a_contractor == set(CONTRACTORS) == {j.pack for j in table.jurisdictions.values()}
    for name, (_, jurisdictions) in CONTRACTORS.items():
        contractor = load_pack(name).contractor
        assert contractor is not None and set(contractor.jurisdictions) == jurisdictions


@pytest.mark.parametrize("name", sorted(CONTRACTORS))
def test_each_contractor_pack_names_its_lcd_and_article_with_version_and_date(name: str) -> None:
    pack = load_pack(name)
    lcd, article = pack.sources["lcd"], pack.sources["article"]
    assert lcd.id.startswith("L") and article.id.startswith("A")
    assert lcd.version and lcd.effective and article.version and article.effective
    assert lcd.id in pack.title and article.id in pack.title
    assert lcd.id in pack.documents["lcd"].title and article.id in pack.documents["article"].title
    assert pack.documents["lcd"].url and lcd.id[1:] in pack.documents["lcd"].url
    for doc in (lcd, article):
        assert doc.confirmed or doc.note  # what is not confirmed says so
    # Sharing the harmonized base, differing only where the documents differ.
    assert pack.limits == load_pack("medicare").limits
    assert pack.billing == load_pack("medicare").billing
    assert pack.prior_authorization == load_pack("medicare").prior_authorization


@pytest.mark.parametrize(
    ("written", "country", "code"),
    [
        ("OH", None, "OH"),
        ("oh", "US", "OH"),
        ("Ohio", None, "OH"),
        ("new york", "USA", "NY"),
        ("District of Columbia", None, "DC"),
        ("Puerto Rico", None, "PR"),
        (None, "GU", "GU"),  # a territory written as the country
        ("Ontario", "CA", None),  # Canada
        ("ON", "Canada", None),
        ("XX", None, None),
        (None, None, None),
    ],
)
def test_states_are_read_as_codes_or_names(written: str | None, country: str | None, code: str | None) -> None:
    assert jurisdiction_of(written, country)[0] == code


# --------------------------------------------------------------------------- choosing the contractor


@pytest.mark.parametrize("state", [*STATES, *TERRITORIES])
def test_a_medicare_session_in_any_state_gets_its_contractors_pack(state: str) -> None:
    expected = next(j.pack for j in jurisdiction_table().jurisdictions.values() if state in j.states)
    choice = pack_choice(None, CoverageFacts(payor_names=MEDICARE, place_state=state, place_from="Location/loc"))
    assert (choice.pack.name, choice.source, choice.defaulted) == (expected, "place", False)
    assert "Location/loc" in choice.reason and state in choice.reason


def _located(
    state: str | None, *, where: str = "Location", payer_name: str = "Medicare Part B", **kw: Any
) -> CaseBuilder:
    case = CaseBuilder(payer_name=payer_name, **kw)
    for resource in case.resources:
        if resource["resourceType"] == where and state is not None:
            address = {"city": "Somewhere", "state": state}
            resource["address"] = [address] if where == "Organization" else address
    return case


@pytest.mark.parametrize("name", sorted(CONTRACTORS))
def test_a_session_in_one_of_its_states_gets_the_contractors_pack(name: str) -> None:
    case = _located(CONTRACTORS[name][0])
    case.block("L4-L5")
    result = case.run()
    assert (result.pack.name, result.profile_source) == (name, "place")
    assert "payer-defaulted" not in rule_ids(result)
    assert result.decision.pack == name and name in result.decision.pack_reason


def test_the_billing_organizations_state_when_the_location_has_none() -> None:
    case = _located("Washington", where="Organization")
    case.block("L4-L5")
    result = case.run()
    assert (result.pack.name, result.profile_source) == ("medicare-noridian-jf", "place")
    assert "Organization/clinic" in result.decision.pack_reason


def test_no_state_means_the_cgs_pack_with_payer_defaulted_saying_why() -> None:
    case = _located(None)
    case.block("L4-L5")
    result = case.run()
    assert (result.pack.name, result.profile_source) == ("medicare", "coverage")
    message = next(f.message for f in result.findings if f.rule_id == "payer-defaulted")
    assert "names no contractor" in message and "'medicare'" in message and "CGS J15" in message
    foreign = _located("Ontario")
    foreign.resources[-2]["address"]["country"] = "CA"
    foreign.block("L4-L5")
    message = next(f.message for f in foreign.run().findings if f.rule_id == "payer-defaulted")
    assert "is not a Medicare jurisdiction's" in message


@pytest.mark.parametrize(
    ("payor", "pack"),
    [
        ("CGS Administrators, LLC", "medicare"),
        ("Noridian Healthcare Solutions (medicare JF)", "medicare-noridian-jf"),
        ("Noridian JE Part B", "medicare-noridian-je"),
        ("National Government Services", "medicare-ngs"),
        ("NGS Medicare", "medicare-ngs"),
        ("Palmetto GBA", "medicare-palmetto"),
        ("Medicare JM", "medicare-palmetto"),
        ("Wisconsin Physicians Service Insurance Corporation", "medicare-wps"),
        ("Novitas Solutions, Inc.", "medicare-novitas"),
        ("First Coast Service Options", "medicare-first-coast"),
    ],
)
def test_a_payor_naming_a_contractor_chooses_it_whatever_the_state(payor: str, pack: str) -> None:
    choice = pack_choice(None, CoverageFacts(payor_names=(payor,), place_state="AZ"))
    assert (choice.pack.name, choice.source, choice.defaulted) == (pack, "coverage", False)


def test_noridian_alone_does_not_say_which_jurisdiction() -> None:
    choice = pack_choice(None, CoverageFacts(payor_names=("Noridian Medicare",), place_state="HI"))
    assert (choice.pack.name, choice.source) == ("medicare-noridian-je", "place")


def test_the_payer_option_is_the_pack_as_written() -> None:
    choice = pack_choice("medicare", CoverageFacts(payor_names=MEDICARE, place_state="WA"))
    assert (choice.pack.name, choice.source) == ("medicare", "option")


@pytest.mark.parametrize(
    "facts",
    [
        CoverageFacts(payor_names=("Acme Medicare Advantage",), place_state="TX"),
        CoverageFacts(payor_names=("Acme Health",), plan_names=("Acme Medicare Advantage PPO",), place_state="TX"),
        CoverageFacts(payor_names=("Acme Health",), plan_names=("Medicare Part C HMO",), place_state="TX"),
    ],
)
def test_a_medicare_advantage_plan_gets_the_contractors_pack(facts: CoverageFacts) -> None:
    choice = pack_choice(None, facts)
    assert (choice.pack.name, choice.source) == ("medicare-novitas", "place")
    assert "Medicare Advantage" in choice.reason


# --------------------------------------------------------------------------- Medicare Advantage site packs

SitePack = Callable[[str, str], Path]
MA_SITE = '[selection]\npriority = 10\nmedicare_advantage = true\nmatch = [{ payor_contains = "acme" }]\n'
PA_EVERYWHERE = (
    '[prior_authorization]\nuses = ["claim"]\nplaces_of_service = ["11", "19", "22", "24"]\n'
    'codes = ["64490", "64491", "64493", "64494", "64633", "64634", "64635", "64636"]\n'
)


@pytest.fixture
def site_pack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SitePack]:
    (tmp_path / "packs").mkdir()
    monkeypatch.setenv("FACET_ADAPTER_PACKS", str(tmp_path))
    load_pack.cache_clear()
    load_toml.cache_clear()

    def write(name: str, text: str) -> Path:
        path = tmp_path / "packs" / f"{name}.toml"
        path.write_text(f'name = "{name}"\nversion = "1"\nextends = "medicare"\ntitle = "{name}"\n' + text)
        return path

    yield write
    load_pack.cache_clear()
    load_toml.cache_clear()


def test_a_medicare_advantage_site_pack_sets_prior_authorization_over_the_contractors_pack(
    site_pack: SitePack,
) -> None:
    site_pack("acme-ma", MA_SITE + PA_EVERYWHERE)
    case = _located("WA", payer_name="Acme Health Plan")
    case.block("L4-L5")
    result = case.run()
    assert (result.pack.name, result.profile_source) == ("acme-ma", "place")
    assert result.pack.chain[:2] == ("acme-ma", "medicare-noridian-jf")
    assert "L38803" in result.pack.citation("frequency-limit")  # the contractor's documents
    assert result.case.place_of_service == "11"
    assert "prior-auth-required" in rule_ids(result)  # the plan's setting, in an office too
    with_auth = case.run(prior_auth="MA-123")
    assert "prior-auth-required" not in rule_ids(with_auth)


def test_without_the_setting_the_contractors_opd_list_applies(site_pack: SitePack) -> None:
    site_pack("acme-ma", MA_SITE)
    office = _located("WA", payer_name="Acme Health Plan")
    office.block("L4-L5")
    assert "prior-auth-required" not in rule_ids(office.run())
    hospital = _located("WA", payer_name="Acme Health Plan", pos="22")
    hospital.block("L4-L5")
    result = hospital.run()
    assert result.pack.name == "acme-ma" and "prior-auth-required" in rule_ids(result)


def test_a_medicare_advantage_site_pack_without_a_state_is_used_as_written(site_pack: SitePack) -> None:
    site_pack("acme-ma", MA_SITE + PA_EVERYWHERE)
    case = _located(None, payer_name="Acme Health Plan")
    case.block("L4-L5")
    result = case.run()
    assert result.pack.chain == ("acme-ma", "medicare", "medicare-harmonized", "base")
    assert "payer-defaulted" in rule_ids(result) and "prior-auth-required" in rule_ids(result)


# --------------------------------------------------------------------------- versions in force


def _labels(pack_name: str, day: str) -> dict[str, tuple[str, bool, bool]]:
    pack = load_pack(pack_name).on(dt.date.fromisoformat(day))
    return {u.section: (u.version.version, u.on_file, u.confirmed) for u in pack.in_force}


@pytest.mark.parametrize(
    ("name", "before", "after", "old", "new"),
    [
        (
            "medicare-palmetto",
            "2024-07-06",
            "2024-07-07",
            "L38765 (harmonized LCD, 2021)",
            "L38765 revision of 2024-07-07",
        ),
        ("medicare-wps", "2024-07-13", "2024-07-14", "L38841 (harmonized LCD, 2021)", "L38841 revision of 2024-07-14"),
        (
            "medicare-novitas",
            "2024-08-10",
            "2024-08-11",
            "L34892 (harmonized LCD, 2021)",
            "L34892 revision of 2024-08-11",
        ),
    ],
)
def test_the_limits_version_in_force_on_each_side_of_a_revision(
    name: str, before: str, after: str, old: str, new: str
) -> None:
    assert _labels(name, before)["limits"] == (old, True, True)
    assert _labels(name, after)["limits"] == (new, True, True)


def test_cgs_thoraco_lumbar_rule_from_2025_01_01() -> None:
    before = load_pack("medicare").on(dt.date(2024, 12, 31))
    after = load_pack("medicare").on(dt.date(2025, 1, 1))
    assert not before.coding.thoraco_lumbar and after.coding.thoraco_lumbar
    assert _labels("medicare", "2024-12-31")["coding"] == ("A58364 before its 2025-01-01 revision", True, False)
    assert _labels("medicare", "2025-01-01")["coding"] == ("A58364 revision of 2025-01-01 (thoraco-lumbar)", True, True)


@pytest.mark.parametrize("name", sorted(CONTRACTORS))
def test_before_the_oldest_version_and_after_it(name: str) -> None:
    early = _labels(name, "2019-06-01")
    assert early and all(not on_file and not confirmed for _, on_file, confirmed in early.values())
    late = _labels(name, "2026-10-15")
    assert set(late) == {"limits", "coding", "diagnoses"} and all(on_file for _, on_file, _ in late.values())
    assert load_pack(name).in_force == ()  # only `on(date)` says what is in force


def _thoraco_lumbar(dos: str, state: str) -> Result:
    case = _located(state, dos=dos, dx="M47.815")
    case.block(["T12-L1", "L1-L2"])
    return case.run()


def test_a_finding_names_the_version_it_was_judged_by_and_says_unconfirmed() -> None:
    before = _thoraco_lumbar("2024-12-31", "OH")
    finding = next(f for f in before.findings if f.rule_id == "multiple-regions")
    assert any("A58364 before its 2025-01-01 revision" in label for label in finding.in_force)
    assert "Unconfirmed for this contractor" in finding.message
    outcome = before.outcome()
    issue = next(i for i in outcome["issue"] if i["details"]["coding"][0]["code"] == "multiple-regions")
    assert "in force on the date of service: limits per L38773" in issue["diagnostics"]
    assert (
        "coding per A58364 before its 2025-01-01 revision (in force from 2021-05-02), unconfirmed"
        in issue["diagnostics"]
    )
    after = _thoraco_lumbar("2025-01-01", "OH")
    assert "multiple-regions" not in rule_ids(after)
    assert [line.code for line in after.coding.lines] == ["64490", "64494"]


def test_a_rule_that_reads_no_dated_section_names_none() -> None:
    case = _located("OH", pos="22")
    case.block("L4-L5")
    result = case.run()
    finding = next(f for f in result.findings if f.rule_id == "prior-auth-required")
    assert finding.in_force == ()
    assert "in force" not in result.outcome()["issue"][0]["diagnostics"]


def test_dx_not_covered_says_the_covered_list_is_unconfirmed() -> None:
    case = _located("FL", dx="M54.50")
    case.block("L4-L5")
    result = case.run()
    finding = next(f for f in result.findings if f.rule_id == "dx-not-covered")
    assert finding.in_force == ("diagnoses per A57787 Group 1 (in force from 2021-04-25), unconfirmed",)
    assert "Unconfirmed for this contractor: the covered list" in finding.message


def test_the_review_lists_the_profile_and_the_versions_in_force() -> None:
    from adapter.writers.review import review_text

    text = review_text(_thoraco_lumbar("2024-12-31", "IL").decision)
    assert "Profile: Medicare Coverage naming no contractor;" in text
    assert "Rules in force on 2024-12-31:" in text and "A57826 (thoraco-lumbar rule)" in text


# --------------------------------------------------------------------------- the dated format is checked


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[dated.limits]]\nversion = "v1 2021"\neffective = 2021-01-01\nuntil = 2022-06-30\nconfirmed = true\n'
            '[[dated.limits]]\nversion = "v2 2022"\neffective = 2022-06-01\nconfirmed = true\n',
            "overlaps",
        ),
        (
            '[[dated.limits]]\nversion = "v1 2021"\neffective = 2021-01-01\nuntil = 2022-01-31\nconfirmed = true\n'
            '[[dated.limits]]\nversion = "v2 2022"\neffective = 2022-03-01\nconfirmed = true\n',
            "gap between",
        ),
        (
            '[[dated.coding]]\nversion = "v2 2022"\neffective = 2022-01-01\nconfirmed = true\nthoraco_lumbar = true\n'
            '[[dated.coding]]\nversion = "v1 2021"\neffective = 2021-01-01\nconfirmed = true\n',
            "oldest first",
        ),
        (
            '[[dated.limits]]\nversion = "v1 2021"\neffective = 2021-01-01\nuntil = 2030-01-01\nconfirmed = true\n',
            "must not have an until",
        ),
        ('[[dated.limits]]\nversion = "v1 2021"\neffective = 2021-01-01\nconfirmed = false\n', "needs a note"),
        (
            '[[dated.limits]]\nversion = "v1 2021"\neffective = 2021-01-01\nconfirmed = true\nlevels = 3\n',
            "levels",
        ),
        (
            '[[dated.coding]]\nversion = "v1 2021"\neffective = 2021-01-01\nconfirmed = true\nthoraco_lumbar = "yes"\n',
            "thoraco_lumbar",
        ),
        ('[[dated.fees]]\nversion = "v1 2021"\neffective = 2021-01-01\nconfirmed = true\n', "fees"),
        ('[sources.policy]\nid = "L12345"\ntitle = "x y z"\nconfirmed = false\n', "needs a note"),
    ],
)
def test_a_broken_dated_section_is_an_error_naming_the_file(site_pack: SitePack, text: str, message: str) -> None:
    path = site_pack("broken", text)
    with pytest.raises(RulePackError, match=message) as error:
        load_pack("broken")
    assert str(path) in str(error.value)


def test_a_site_pack_may_date_its_own_limits(site_pack: SitePack) -> None:
    site_pack(
        "acme",
        '[[dated.limits]]\nversion = "Acme policy 2025"\neffective = 2025-01-01\nuntil = 2025-12-31\n'
        "confirmed = true\nlevels_per_region = 1\n"
        '[[dated.limits]]\nversion = "Acme policy 2026"\neffective = 2026-01-01\nconfirmed = true\n',
    )
    assert load_pack("acme").on(dt.date(2025, 6, 1)).limits.levels_per_region == 1
    assert load_pack("acme").on(dt.date(2026, 6, 1)).limits.levels_per_region == 2


@pytest.mark.parametrize(("state", "counted_cervical"), [("OH", True), ("IL", False)])
def test_an_earlier_session_counts_in_the_regions_of_its_own_dates_rules(state: str, counted_cervical: bool) -> None:
    case = _located(state, dos="2025-02-03", dx=["M47.815", "M47.812"])
    for day in ("2024-09-02", "2024-09-23", "2024-10-14", "2024-11-04"):
        case.block(["T12-L1", "L1-L2"], date=day)
    case.block("C5-C6")
    result = case.run()
    # Before 2025-01-01 CGS (OH) counted T12-L1 as cervical-thoracic: four earlier sessions there.
    assert ("frequency-limit" in rule_ids(result)) is counted_cervical
