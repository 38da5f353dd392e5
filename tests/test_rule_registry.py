"""One ordered rule registry: every pack defines exactly the registered rules, and the engine runs
every registered function."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from builders import CaseBuilder, rule_ids
from conftest import REPO

from adapter.errors import RulePackError
from adapter.rules import engine
from adapter.rules.context import Context, Hit
from adapter.rules.packs import available_packs, read_pack
from adapter.rules.registry import RULE_IDS, RULE_NOT_APPLIED, RULES
from adapter.rules.selection import load_pack
from adapter.tables import load_toml

SitePack = Callable[[str, str], Path]


@pytest.fixture
def site_pack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SitePack]:
    """Write packs into a FACET_ADAPTER_PACKS folder; the pack and table caches start and end empty."""
    (tmp_path / "packs").mkdir()
    monkeypatch.setenv("FACET_ADAPTER_PACKS", str(tmp_path))
    load_pack.cache_clear()
    load_toml.cache_clear()

    def write(name: str, text: str) -> Path:
        path = tmp_path / "packs" / f"{name}.toml"
        path.write_text(text)
        return path

    yield write
    load_pack.cache_clear()
    load_toml.cache_clear()


def test_the_registry_lists_each_rule_once_with_a_function() -> None:
    ids = [rule_id for rule_id, _ in RULES]
    assert len(ids) == len(set(ids))
    assert all(callable(function) for _, function in RULES)
    assert len({function for _, function in RULES}) == len(RULES)
    # The engine raises rule-not-applied itself; it is the one pack rule without a function.
    assert RULE_IDS == (*ids, RULE_NOT_APPLIED)
    assert RULE_NOT_APPLIED not in ids


def test_the_shared_base_pack_defines_every_registered_rule() -> None:
    assert set(load_toml("packs/base.toml")["rules"]) == set(RULE_IDS)


def _check_against_the_registry(name: str, path_hint: str) -> None:
    pack = load_pack(name)
    assert set(pack.rules) == set(RULE_IDS)
    # A function without a pack entry: a registry with one more rule than the pack defines.
    with pytest.raises(RulePackError, match=r"rules missing: \['new-rule'\]") as missing:
        read_pack(name, (*RULE_IDS, "new-rule"))
    assert path_hint in str(missing.value)
    # A pack entry without a function: a registry that lacks one of the pack's rules.
    without = tuple(rule_id for rule_id in RULE_IDS if rule_id != "radiculopathy")
    with pytest.raises(RulePackError, match="unknown rules: radiculopathy") as unknown:
        read_pack(name, without)
    assert path_hint in str(unknown.value)


@pytest.mark.parametrize("name", available_packs())
def test_every_shipped_pack_defines_exactly_the_registered_rules(name: str) -> None:
    _check_against_the_registry(name, f"{name}.toml")


def test_a_site_pack_defines_exactly_the_registered_rules(site_pack: SitePack) -> None:
    path = site_pack("acme-ma", 'name = "acme-ma"\nversion = "1"\nextends = "medicare"\ntitle = "Acme MA"\n')
    assert "acme-ma" in available_packs()
    _check_against_the_registry("acme-ma", str(path))


def test_a_site_pack_naming_a_rule_without_a_function_is_an_error_naming_the_file(site_pack: SitePack) -> None:
    head = 'name = "acme"\nversion = "1"\nextends = "commercial"\ntitle = "Acme"\n'
    path = site_pack("acme", head + "[rules.made-up-rule]\nversion = 1\n")
    with pytest.raises(RulePackError, match="unknown rules: made-up-rule") as error:
        load_pack("acme")
    assert str(path) in str(error.value)
    assert error.value.exit_code == 2


def test_a_site_pack_missing_a_registered_rule_is_an_error_naming_the_file(site_pack: SitePack) -> None:
    # A pack that extends nothing must define every rule itself.
    base = (REPO / "mappings" / "packs" / "base.toml").read_text().replace("abstract = true\n", "")
    text = base.replace('name = "base"', 'name = "standalone"')
    start = text.index("[rules.radiculopathy]")
    text = text[:start] + text[text.index("\n[", start) + 1 :]
    path = site_pack("standalone", text)
    with pytest.raises(RulePackError, match=r"rules missing: \['radiculopathy'\]") as error:
        load_pack("standalone")
    assert str(path) in str(error.value)
    site_pack("standalone-whole", base.replace('name = "base"', 'name = "standalone-whole"'))
    assert set(load_pack("standalone-whole").rules) == set(RULE_IDS)


def test_the_engine_runs_every_registered_rule_and_holds_the_claim_when_one_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran: list[str] = []

    def recording(rule_id: str) -> Callable[[Context], Iterator[Hit]]:
        def function(ctx: Context) -> Iterator[Hit]:
            ran.append(rule_id)
            if rule_id == "radiculopathy":
                raise ZeroDivisionError
            if rule_id == "pos-defaulted":
                yield Hit("recorded", ())

        return function

    monkeypatch.setattr(engine, "RULES", tuple((rule_id, recording(rule_id)) for rule_id, _ in RULES))
    case = CaseBuilder()
    case.block("L4-L5")
    result = case.run(payer="medicare")
    assert ran == [rule_id for rule_id, _ in RULES]
    assert rule_ids(result) == {RULE_NOT_APPLIED, "pos-defaulted"}
    failed = next(f for f in result.findings if f.rule_id == RULE_NOT_APPLIED)
    assert failed.message == "Rule radiculopathy could not be applied (ZeroDivisionError)."
    assert result.held
