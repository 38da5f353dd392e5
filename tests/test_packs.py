"""Rule packs: versioned data, validated when loaded; site packs extend the shipped ones."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from adapter.rules.packs import available_packs, dx_regions
from adapter.rules.registry import RULE_IDS
from adapter.rules.selection import load_pack

EXAMPLE = REPO / "examples" / "medicare-lumbar-bilateral" / "input.json"
HEAD = 'name = "broken"\nversion = "1"\nextends = "medicare"\ntitle = "x"\n'


def test_shipped_packs() -> None:
    assert {"medicare", "medicare-noridian-jf", "commercial"} <= set(available_packs())
    for name in available_packs():
        pack = load_pack(name)
        assert set(pack.rules) == set(RULE_IDS)
        for rule_id in RULE_IDS:
            assert "{" not in pack.citation(rule_id)
    medicare, noridian = load_pack("medicare"), load_pack("medicare-noridian-jf")
    assert "L38773" in medicare.citation("frequency-limit") and "L38803" in noridian.citation("frequency-limit")
    assert "A58364" in medicare.citation("dx-not-covered") and "A58405" in noridian.citation("dx-not-covered")
    assert medicare.limits == noridian.limits
    commercial = load_pack("commercial")
    assert commercial.billing.bilateral == "rt-lt" and not commercial.billing.kx_on_diagnostic_injections
    assert commercial.rule("conservative-care").severity == "error"
    assert medicare.rule("conservative-care").severity == "warning"
    assert commercial.limits.min_conservative_care_days == 28
    assert not commercial.prior_authorization.codes


@pytest.mark.parametrize(
    ("code", "regions"),
    [
        ("M47.812", {"cervical-thoracic"}),
        ("M47.815", {"cervical-thoracic", "lumbar-sacral"}),
        ("M47.817", {"lumbar-sacral"}),
        ("M48.16", {"lumbar-sacral"}),
        ("M53.84", {"cervical-thoracic"}),
        ("M54.50", set()),
        ("M47.811", set()),
    ],
)
def test_diagnosis_regions(code: str, regions: set[str]) -> None:
    assert dx_regions(code) == regions


def _site(tmp_path: Path, name: str, text: str) -> dict[str, str]:
    (tmp_path / "packs").mkdir(exist_ok=True)
    (tmp_path / "packs" / f"{name}.toml").write_text(text)
    return {**os.environ, "FACET_ADAPTER_PACKS": str(tmp_path)}


def _run_with(env: dict[str, str], *args: str) -> tuple[int, str]:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "adapter", *args], capture_output=True, env={**env, "PYTHONPATH": str(REPO)}
    )
    return proc.returncode, (proc.stdout + proc.stderr).decode()


def test_site_pack_extends_a_shipped_pack(tmp_path: Path) -> None:
    env = _site(
        tmp_path,
        "acme-ma",
        'name = "acme-ma"\nversion = "1"\nextends = "medicare"\ntitle = "Acme Medicare Advantage"\n'
        "[limits]\nlevels_per_region = 1\n",
    )
    code, out = _run_with(env, "check", str(EXAMPLE), "--payer", "acme-ma", "--format", "json")
    assert code == 1, out
    outcome = json.loads(out)
    assert "levels-exceed-limit" in {
        i["details"]["coding"][0]["code"] for i in outcome["issue"] if "coding" in i["details"]
    }
    assert "acme-ma@1" in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            HEAD + '[rules.frequency-limit]\nseverity = "fatal"\n',
            "severity",
        ),
        (
            'name = "broken"\nversion = "1"\nextends = "medicare"\ntitle = "x"\n[rules.made-up-rule]\nversion = 1\n',
            "unknown rules",
        ),
        (
            HEAD + '[rules.radiculopathy]\ncitation = "{nope}"\n',
            "unknown document",
        ),
        ('name = "broken"\nversion = "1"\nextends = "broken"\ntitle = "x"\n', "circular"),
        ('name = "broken"\nversion = \n', "not valid toml"),
        (
            'name = "broken"\nversion = "1"\nextends = "medicare"\ntitle = "x"\n[limits]\nlevels_per_region = 0\n',
            "levels_per_region",
        ),
    ],
)
def test_a_broken_pack_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    env = _site(tmp_path, "broken", text)
    code, out = _run_with(env, "claim", str(EXAMPLE), "--payer", "broken")
    assert code == 2
    assert "Traceback" not in out
    assert message in out.lower() or message in out


def test_rules_command_lists_a_pack() -> None:
    run = run_cli("rules", "--payer", "medicare")
    assert run.code == 0
    text = run.stdout.decode()
    for rule_id in RULE_IDS:
        assert rule_id in text
    assert "L38773" in text
