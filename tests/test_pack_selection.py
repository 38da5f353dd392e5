"""Pack choice (contract §4.1): --payer; else the pack whose [selection] matches the Coverage;
else the commercial pack with payer-defaulted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from builders import CaseBuilder, rule_ids
from conftest import REPO

from adapter.errors import RulePackError
from adapter.model import CoverageFacts
from adapter.rules.selection import choose_pack, load_pack
from adapter.tables import load_toml

SitePack = Callable[[str, str], Path]
ACME_ID = "http://acme.example/payer-id"


@pytest.fixture
def site_pack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SitePack]:
    """Write packs into a FACET_ADAPTER_PACKS folder; the pack and table caches start and end empty."""
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


def _chosen(facts: CoverageFacts, payer: str | None = None) -> tuple[str, str]:
    pack, source = choose_pack(payer, facts)
    return pack.name, source


# --------------------------------------------------------------------------- shipped behaviour


@pytest.mark.parametrize(
    "names",
    [
        ("Medicare Part B",),
        ("CGS Administrators", "MEDICARE"),
        ("Acme", "https://medicare.example/payers"),  # an identifier system, as the reader collects it
    ],
)
def test_a_payor_naming_medicare_in_any_case_chooses_medicare(names: tuple[str, ...]) -> None:
    assert _chosen(CoverageFacts(payor_names=names)) == ("medicare", "coverage")


@pytest.mark.parametrize("names", [(), ("Acme Health",), ("Medi-Cal",)])
def test_otherwise_the_commercial_pack_is_the_default(names: tuple[str, ...]) -> None:
    assert _chosen(CoverageFacts(payor_names=names)) == ("commercial", "default")


def test_the_payer_option_wins() -> None:
    medicare = CoverageFacts(payor_names=("Medicare Part B",))
    assert _chosen(medicare, "commercial") == ("commercial", "option")
    assert _chosen(medicare, "medicare-noridian-jf") == ("medicare-noridian-jf", "option")
    assert _chosen(CoverageFacts(), "medicare") == ("medicare", "option")


def test_a_pack_that_extends_medicare_is_not_chosen_by_its_words(site_pack: SitePack) -> None:
    site_pack("acme", "")
    assert load_pack("acme").selection is None
    assert load_pack("medicare").selection is not None
    assert _chosen(CoverageFacts(payor_names=("Acme Medicare",))) == ("medicare", "coverage")
    # A contractor's pack has a selection of its own, not medicare's words (issue 14).
    noridian = load_pack("medicare-noridian-jf").selection
    assert noridian is not None and all(entry.payor_contains != "medicare" for entry in noridian.match)
    assert _chosen(CoverageFacts(payor_names=("Noridian Healthcare Solutions (medicare JF)",)))[0] == (
        "medicare-noridian-jf"
    )


def test_the_pipeline_chooses_from_the_coverage() -> None:
    medicare = CaseBuilder(payer_name="Medicare Part B")
    medicare.block("L4-L5")
    result = medicare.run()
    assert (result.pack.name, result.profile_source) == ("medicare", "coverage")
    # No state for the place of service: the contractor was assumed, and payer-defaulted says so (issue 14).
    assert [f.message for f in result.findings if f.rule_id == "payer-defaulted"] == [
        "The Coverage is Medicare and names no contractor, and neither the session's Location nor the billing "
        "Organization has an address with a state: the 'medicare' profile (Medicare Part B (CGS J15): LCD L38773, "
        "article A58364) was used."
    ]
    other = CaseBuilder(payer_name="Acme Health")
    other.block("L4-L5")
    result = other.run()
    assert (result.pack.name, result.profile_source) == ("commercial", "default")
    assert "payer-defaulted" in rule_ids(result)


# --------------------------------------------------------------------------- the facts


def _coverage_case(**coverage: Any) -> CaseBuilder:
    case = CaseBuilder(payer_name="Acme Medicare Advantage")
    case.block("L4-L5")
    for resource in case.resources:
        if resource["resourceType"] == "Coverage":
            resource.update(coverage)
    return case


def _payer(case: CaseBuilder) -> dict[str, Any]:
    return next(r for r in case.resources if r["resourceType"] == "Organization" and r["id"] == "payer")


def test_coverage_facts_read_payor_identifiers_type_and_classes() -> None:
    case = _coverage_case(
        payor=[{"reference": "Organization/payer", "identifier": {"system": "urn:x", "value": "P-1"}}],
        type={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "MCPOL"}]},
        **{"class": [{"type": {"coding": [{"code": "plan"}]}, "value": "MA-PPO"}]},
    )
    _payer(case)["identifier"] = [{"system": ACME_ID, "value": "ACME-MA"}, {"value": "no-system"}]
    facts = case.run().case.coverage_facts
    assert "Acme Medicare Advantage" in facts.payor_names
    assert facts.payor_identifiers == (("urn:x", "P-1"), (ACME_ID, "ACME-MA"), (None, "no-system"))
    assert facts.coverage_types == (("http://terminology.hl7.org/CodeSystem/v3-ActCode", "MCPOL"),)
    assert facts.coverage_classes == (("plan", "MA-PPO"),)
    uncovered = CaseBuilder(coverage=False)
    uncovered.block("L4-L5")
    assert uncovered.run().case.coverage_facts == CoverageFacts()


# --------------------------------------------------------------------------- site packs


def test_a_site_pack_is_chosen_by_a_payor_identifier(site_pack: SitePack) -> None:
    site_pack(
        "acme-ma",
        "[selection]\npriority = 10\n"
        f'match = [{{ payor_identifier = {{ system = "{ACME_ID}", value = "ACME-MA" }} }}]\n',
    )
    case = _coverage_case()
    _payer(case)["identifier"] = [{"system": ACME_ID, "value": "ACME-MA"}]
    result = case.run()
    # The payor's name says Medicare too: the higher priority wins.
    assert (result.pack.name, result.profile_source) == ("acme-ma", "coverage")
    _payer(case)["identifier"] = [{"system": "http://other.example", "value": "ACME-MA"}]
    result = case.run()
    assert (result.pack.name, result.profile_source) == ("medicare", "coverage")


def test_a_site_pack_without_selection_is_chosen_only_by_name(site_pack: SitePack) -> None:
    site_pack("acme-ma", "[limits]\nmin_conservative_care_days = 42\n")  # the README's example
    assert _chosen(CoverageFacts(payor_names=("Acme Medicare Advantage",))) == ("medicare", "coverage")
    assert _chosen(CoverageFacts(), "acme-ma") == ("acme-ma", "option")


def test_ties_go_to_the_higher_priority_then_to_the_name(site_pack: SitePack) -> None:
    acme = CoverageFacts(payor_names=("Acme Health",))
    site_pack("zeta", '[selection]\npriority = 5\nmatch = [{ payor_contains = "acme" }]\n')
    site_pack("alpha", '[selection]\npriority = 5\nmatch = [{ payor_contains = "ACME" }]\n')
    assert [_chosen(acme) for _ in range(3)] == [("alpha", "coverage")] * 3
    site_pack("zeta", '[selection]\npriority = 6\nmatch = [{ payor_contains = "acme" }]\n')
    load_pack.cache_clear()
    load_toml.cache_clear()
    assert _chosen(acme) == ("zeta", "coverage")
    # Below the shipped medicare pack's priority 0, medicare wins when both match.
    site_pack("zeta", '[selection]\npriority = -1\nmatch = [{ payor_contains = "acme" }]\n')
    site_pack("alpha", '[selection]\npriority = -1\nmatch = [{ payor_contains = "acme" }]\n')
    load_pack.cache_clear()
    load_toml.cache_clear()
    assert _chosen(CoverageFacts(payor_names=("Acme Medicare",))) == ("medicare", "coverage")
    assert _chosen(acme) == ("alpha", "coverage")


def test_every_condition_of_an_entry_must_hold_and_any_entry_chooses(site_pack: SitePack) -> None:
    site_pack(
        "acme-ppo",
        "[selection]\npriority = 1\nmatch = [\n"
        '  { payor_contains = "acme", coverage_class = { type = "plan", value = "PPO" } },\n'
        '  { coverage_type = { system = "urn:types", code = "ACME-PPO" } },\n'
        "]\n",
    )
    acme = ("Acme Health",)
    assert _chosen(CoverageFacts(payor_names=acme, coverage_classes=(("plan", "PPO"),)))[0] == "acme-ppo"
    assert _chosen(CoverageFacts(payor_names=acme, coverage_classes=(("group", "PPO"),)))[0] == "commercial"
    assert _chosen(CoverageFacts(payor_names=acme, coverage_classes=(("plan", "HMO"),)))[0] == "commercial"
    assert _chosen(CoverageFacts(coverage_classes=(("plan", "PPO"),)))[0] == "commercial"
    assert _chosen(CoverageFacts(coverage_types=(("urn:types", "ACME-PPO"),)))[0] == "acme-ppo"
    assert _chosen(CoverageFacts(coverage_types=(("urn:other", "ACME-PPO"),)))[0] == "commercial"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[selection]\nmatch = [{}]\n", "a match entry needs"),
        ('[selection]\nmatch = [{ payor_name = "acme" }]\n', "payor_name"),
        ("[selection]\npriority = 1\n", "selection.match"),
        ('[selection]\nmatch = [{ payor_identifier = { system = "urn:x" } }]\n', "value"),
    ],
)
def test_a_broken_selection_is_an_error_naming_the_file(site_pack: SitePack, text: str, message: str) -> None:
    path = site_pack("acme", text)
    with pytest.raises(RulePackError, match=message) as error:
        choose_pack(None, CoverageFacts(payor_names=("Acme",)))
    assert str(path) in str(error.value)


def test_a_shared_base_pack_cannot_have_a_selection(site_pack: SitePack, tmp_path: Path) -> None:
    path = tmp_path / "packs" / "shared.toml"
    path.write_text('name = "shared"\nabstract = true\n[selection]\nmatch = [{ payor_contains = "acme" }]\n')
    with pytest.raises(RulePackError, match="shared base pack") as error:
        choose_pack(None, CoverageFacts())
    assert str(path) in str(error.value)


def test_a_site_pack_chosen_from_a_coverage_on_the_command_line(site_pack: SitePack, tmp_path: Path) -> None:
    selection = '[selection]\nmatch = [{ payor_identifier = { value = "ACME-MA" } }]\n'
    site_pack("acme-ma", selection + "[limits]\nlevels_per_region = 1\n")
    case = _coverage_case()
    case.block("L3-L4")
    _payer(case)["identifier"] = [{"system": ACME_ID, "value": "ACME-MA"}]
    source = tmp_path / "input.json"
    source.write_text(json.dumps(case.bundle()))
    proc = subprocess.run(
        [sys.executable, "-m", "adapter", "check", str(source), "--format", "json"],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 1, proc.stderr.decode()
    outcome = json.loads(proc.stdout)
    exceeded = [i for i in outcome["issue"] if "levels-exceed-limit" in json.dumps(i)]
    assert exceeded and "acme-ma@1" in json.dumps(exceeded)
