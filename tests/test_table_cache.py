"""Validated packs kept between runs (adapter.tablecache): used while their files are unchanged,
never in place of a changed or broken pack, and no error when the cache cannot be used."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from conftest import REPO

from adapter import cachefiles, tablecache, tables
from adapter.errors import RulePackError
from adapter.model import CoverageFacts
from adapter.rules import jurisdictions, packs, table_schemas
from adapter.rules.registry import RULE_IDS
from adapter.rules.selection import choose_pack, load_pack
from adapter.tablecache import cache_folder
from adapter.tables import load_toml

EXAMPLE = REPO / "examples" / "medicare-lumbar-bilateral" / "input.json"
ACME = 'name = "acme"\nversion = "1"\nextends = "medicare"\ntitle = "Acme"\n'


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site pack folder and a cache folder of the test's own; the in-process caches start and end empty."""
    (tmp_path / "site" / "packs").mkdir(parents=True)
    monkeypatch.setenv("FACET_ADAPTER_PACKS", str(tmp_path / "site"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    load_pack.cache_clear()
    load_toml.cache_clear()
    yield tmp_path / "site" / "packs"
    load_pack.cache_clear()
    load_toml.cache_clear()


def _fresh() -> None:
    """What a new process starts with: nothing read yet (the cache folder stays)."""
    load_pack.cache_clear()
    load_toml.cache_clear()


def _entries() -> list[Path]:
    return sorted(cache_folder().glob("*.pickle"))


def _not_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("validated again although its files did not change")

    monkeypatch.setattr(packs, "_validated", refuse)
    monkeypatch.setattr(packs, "_selectable", refuse)


def test_an_unchanged_pack_is_read_from_the_cache_as_it_was_validated(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    validated = {name: load_pack(name) for name in packs.available_packs()}
    chosen = choose_pack(None, CoverageFacts(payor_names=("Noridian JF Medicare",)))
    assert _entries()
    _fresh()
    _not_validated(monkeypatch)
    assert {name: load_pack(name) for name in validated} == validated
    assert choose_pack(None, CoverageFacts(payor_names=("Noridian JF Medicare",))) == chosen
    day = dt.date(2024, 6, 1)
    assert load_pack("medicare").on(day) == validated["medicare"].on(day)
    assert load_pack("medicare").on(day).in_force


def test_a_changed_site_pack_is_validated_again(site: Path) -> None:
    (site / "acme.toml").write_text(ACME + "[limits]\nlevels_per_region = 1\n")
    assert load_pack("acme").limits.levels_per_region == 1
    _fresh()
    (site / "acme.toml").write_text(ACME + "[limits]\nlevels_per_region = 3\n")
    assert load_pack("acme").limits.levels_per_region == 3


def test_a_site_pack_that_replaces_a_pack_of_the_chain_is_used(site: Path) -> None:
    (site / "acme.toml").write_text(ACME)
    shipped = load_pack("acme")
    assert shipped.limits.levels_per_region == 2
    _fresh()
    medicare = (REPO / "mappings" / "packs" / "medicare.toml").read_text()
    (site / "medicare.toml").write_text(medicare + "\n[limits]\nlevels_per_region = 1\n")
    assert load_pack("acme").limits.levels_per_region == 1
    _fresh()
    (site / "medicare.toml").unlink()
    assert load_pack("acme") == shipped


def test_a_new_selectable_site_pack_is_seen(site: Path) -> None:
    acme = CoverageFacts(payor_names=("Acme Health",))
    assert choose_pack(None, acme)[0].name == "commercial"
    _fresh()
    (site / "acme.toml").write_text(ACME + '[selection]\nmatch = [{ payor_contains = "acme" }]\n')
    assert choose_pack(None, acme)[0].name == "acme"


def test_a_pack_broken_after_it_was_cached_is_an_error_naming_the_file(site: Path) -> None:
    path = site / "acme.toml"
    path.write_text(ACME)
    load_pack("acme")
    _fresh()
    path.write_text(ACME + '[rules.frequency-limit]\nseverity = "fatal"\n')
    with pytest.raises(RulePackError, match="severity") as error:
        load_pack("acme")
    assert str(path) in str(error.value)
    _fresh()
    with pytest.raises(RulePackError, match="severity"):  # never kept: the error again
        load_pack("acme")


def test_on_the_command_line_a_broken_pack_is_exit_2_after_a_good_run(tmp_path: Path) -> None:
    (tmp_path / "packs").mkdir()
    path = tmp_path / "packs" / "acme.toml"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "FACET_ADAPTER_PACKS": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }

    def claim() -> subprocess.CompletedProcess[bytes]:
        command = [sys.executable, "-m", "adapter", "--error-format", "text", "claim", str(EXAMPLE), "--payer", "acme"]
        return subprocess.run(command, capture_output=True, env=env, timeout=120, check=False)

    path.write_text(ACME)
    assert claim().returncode == 0
    path.write_text(ACME + "[limits]\nlevels_per_region = 0\n")
    broken = claim()
    assert broken.returncode == 2 and broken.stdout == b""
    assert str(path) in broken.stderr.decode() and "levels_per_region" in broken.stderr.decode()
    assert b"Traceback" not in broken.stderr


def test_a_cache_that_cannot_be_written_or_read_is_no_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    _fresh()
    assert load_pack("medicare").name == "medicare"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _fresh()
    expected = load_pack("medicare")
    (entry,) = _entries()
    entry.write_bytes(b"not a pickle")
    _fresh()
    assert load_pack("medicare") == expected
    assert entry.read_bytes() != b"not a pickle"  # written again
    _fresh()


def test_the_jurisdiction_table_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    jurisdictions.jurisdiction_table.cache_clear()
    try:
        table = jurisdictions.jurisdiction_table()
        assert table.by_state["WA"].pack == "medicare-noridian-jf"
        jurisdictions.jurisdiction_table.cache_clear()
        monkeypatch.setattr(jurisdictions, "_validated", lambda: pytest.fail("validated again"))
        assert jurisdictions.jurisdiction_table() == table
    finally:
        jurisdictions.jurisdiction_table.cache_clear()


def test_every_validating_model_has_a_runtime_class_with_the_same_fields() -> None:
    runtime = {**packs._RUNTIME, "Jurisdiction": jurisdictions.Jurisdiction}
    runtime["JurisdictionTable"] = jurisdictions.JurisdictionTable
    models = {
        name: model
        for name, model in vars(table_schemas).items()
        if isinstance(model, type)
        and issubclass(model, table_schemas.BaseModel)
        and model.__module__ == table_schemas.__name__
        and not name.startswith("_")
        and name != "SectionVersion"
    }
    assert set(models) == set(runtime)
    for name, model in models.items():
        cls = runtime[name]
        names = list(cls._fields) if hasattr(cls, "_fields") else [f.name for f in dataclasses.fields(cls)]
        names = [n for n in names if n not in ("in_force_on", "in_force", "by_state")]
        assert names == list(model.model_fields), name


def test_a_claim_starts_without_pydantic_the_x12_writer_or_the_toml_parser(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    # The first run validates the packs it chooses from and parses its tables, and keeps them; the
    # second only reads them.
    first = subprocess.run(
        [sys.executable, "-m", "adapter", "claim", str(EXAMPLE)], capture_output=True, env=env, timeout=120
    )
    assert first.returncode == 0, first.stderr
    script = (
        "import sys\n"
        "from adapter.cli import main\n"
        "try:\n"
        f"    main(['claim', {str(EXAMPLE)!r}])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "heavy = ('pydantic', 'x12sdk', 'adapter.writers.x12_837p', 'adapter.rules.table_schemas', 'tomllib')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    second = subprocess.run([sys.executable, "-c", script], capture_output=True, env=env, timeout=120, check=False)
    assert second.returncode == 0, second.stderr
    assert second.stdout.decode().strip().splitlines()[-1] == "[]"


def test_an_entry_others_may_write_is_not_used(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = load_pack("medicare")
    (entry,) = _entries()
    entry.chmod(0o666)
    _fresh()
    validated: list[str] = []
    original = packs._validated

    def counting(name: str, rule_ids: Sequence[str], over: str | None) -> tuple[packs.Pack, list[str]]:
        validated.append(name)
        return original(name, rule_ids, over)

    monkeypatch.setattr(packs, "_validated", counting)
    assert load_pack("medicare") == expected
    assert validated == ["medicare"]
    (entry,) = _entries()
    assert entry.stat().st_mode & 0o077 == 0  # written again, the user's alone


def test_a_file_changed_while_its_pack_was_validated_is_validated_again(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = site / "acme.toml"
    path.write_text(ACME + "[limits]\nlevels_per_region = 1\n")
    original = packs._validated

    def changed_meanwhile(name: str, rule_ids: Sequence[str], over: str | None) -> tuple[packs.Pack, list[str]]:
        built = original(name, rule_ids, over)
        path.write_text(ACME + "[limits]\nlevels_per_region = 3\n")
        return built

    monkeypatch.setattr(packs, "_validated", changed_meanwhile)
    assert load_pack("acme").limits.levels_per_region == 1
    monkeypatch.setattr(packs, "_validated", original)
    _fresh()
    assert load_pack("acme").limits.levels_per_region == 3


def test_no_cache_folder_and_no_pickling_are_no_error(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(tablecache, "cache_folder", no_home)
    assert load_pack("medicare").name == "medicare"
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(site.parent.parent / "cache"))
    monkeypatch.setenv("FACET_ADAPTER_PACKS", str(site.parent))

    def unpicklable(*args: object, **kwargs: object) -> None:
        raise TypeError("cannot pickle")

    _fresh()
    monkeypatch.setattr(cachefiles.pickle, "dump", unpicklable)
    assert load_pack("medicare").name == "medicare"
    assert not _entries()
    assert not list(cache_folder().glob(".*"))  # no partial file left


def test_an_entry_built_by_other_code_is_replaced_not_kept(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_pack("medicare")
    (before,) = _entries()
    _fresh()
    monkeypatch.setattr(tablecache, "__version__", "0.0.0-other")
    load_pack("medicare")
    (after,) = _entries()
    assert after != before
    assert tablecache._pydantic_version()  # pydantic's version is part of what built an entry


def test_runs_filling_the_cache_at_the_same_time_agree(site: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    script = "from adapter.rules.selection import load_pack\nprint(load_pack('medicare').limits)\n"
    runs = [
        subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    outputs = {run.communicate(timeout=120)[0] for run in runs}
    assert all(run.returncode == 0 for run in runs)
    assert len(outputs) == 1
    assert not list(cache_folder().glob(".*"))
    _fresh()
    assert load_pack("medicare").limits == packs._validated("medicare", RULE_IDS, None)[0].limits
    assert len(_entries()) == 1


def _toml_entries() -> list[Path]:
    return sorted((cachefiles.cache_root() / "toml").glob("*.pickle"))


def test_an_unchanged_toml_table_is_not_parsed_again(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tomllib

    (site / "acme.toml").write_text(ACME + "[limits]\nlevels_per_region = 1\n")
    parsed = load_toml("packs/acme.toml")
    _fresh()

    def refuse(text: str) -> None:
        raise AssertionError("parsed again although its bytes did not change")

    monkeypatch.setattr(tomllib, "loads", refuse)
    assert load_toml("packs/acme.toml") == parsed


def test_a_changed_or_broken_toml_table_is_parsed_again(site: Path) -> None:
    path = site / "acme.toml"
    path.write_text(ACME + "[limits]\nlevels_per_region = 1\n")
    assert load_toml("packs/acme.toml")["limits"] == {"levels_per_region": 1}
    _fresh()
    path.write_text(ACME + "[limits]\nlevels_per_region = 3\n")
    assert load_toml("packs/acme.toml")["limits"] == {"levels_per_region": 3}
    entry = tables._parsed_entry(path, "any bytes")
    assert entry is not None
    where = entry.name.rsplit("-", 1)[0]
    assert len([kept for kept in _toml_entries() if kept.name.startswith(where)]) == 1  # the older parse replaced
    _fresh()
    path.write_text(ACME + "[limits\n")
    with pytest.raises(RulePackError, match="not valid TOML"):
        load_toml("packs/acme.toml")
