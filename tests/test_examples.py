"""The bundled examples produce exactly their committed expected output (golden pairs), through
the library with a fixed clock and through the real command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_cli

sys.path.insert(0, str(REPO / "tools"))
from regen_examples import EXAMPLE_CONTROL_NUMBER, X12_CONFIG, example_837p, example_outputs
from x12 import parse, validate

EXAMPLES = sorted(p for p in (REPO / "examples").iterdir() if p.is_dir())
X12_EXAMPLES = [p for p in EXAMPLES if (p / X12_CONFIG).is_file()]


def test_there_are_at_least_five_examples() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("folder", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_matches_expected_output(folder: Path) -> None:
    bundle, outcome, code = example_outputs(folder)
    assert code == int((folder / "expected-exit").read_text())
    assert outcome == json.loads((folder / "expected-outcome.json").read_text())
    if bundle is not None:
        expected = json.loads((folder / "expected-bundle.json").read_text())
        assert bundle == expected, "run tools/regen_examples.py and review `git diff examples/`"


@pytest.mark.parametrize("folder", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_through_the_command_line(folder: Path) -> None:
    source = next(folder.glob("input.*"))
    args = json.loads((folder / "args.json").read_text())
    argv = [f"--{key.replace('_', '-')}={value}" for key, value in args.items()]
    claim = run_cli("claim", str(source), *argv)
    check = run_cli("check", str(source), *argv, "--format", "json")
    expected_code = int((folder / "expected-exit").read_text())
    assert claim.code == check.code == expected_code, claim.stderr.decode()
    expected = json.loads((folder / "expected-bundle.json").read_text())
    got = claim.json()
    # Only the clock differs from the committed output.
    for bundle in (got, expected):
        bundle.pop("timestamp")
        bundle["entry"][0]["resource"].pop("created")
    assert got == expected
    assert check.json() == json.loads((folder / "expected-outcome.json").read_text())


def test_there_is_an_837p_example() -> None:
    assert X12_EXAMPLES


@pytest.mark.parametrize("folder", X12_EXAMPLES, ids=[p.name for p in X12_EXAMPLES])
def test_example_837p_matches_expected_output(folder: Path) -> None:
    expected = (folder / "expected-837p.x12").read_text()
    assert example_837p(folder) == expected, "run tools/regen_examples.py and review `git diff examples/`"
    assert validate(expected) == []


@pytest.mark.parametrize("folder", X12_EXAMPLES, ids=[p.name for p in X12_EXAMPLES])
def test_example_837p_through_the_command_line(folder: Path) -> None:
    source = next(folder.glob("input.*"))
    args = json.loads((folder / "args.json").read_text())
    argv = [f"--{key.replace('_', '-')}={value}" for key, value in args.items()]
    got = run_cli(
        "claim", str(source), *argv, "--format", "x12-837p", "--x12-config", str(folder / X12_CONFIG),
        "--control-number", str(EXAMPLE_CONTROL_NUMBER),
    )  # fmt: skip
    assert got.code == int((folder / "expected-exit").read_text()), got.stderr.decode()
    expected = (folder / "expected-837p.x12").read_text()
    # Only the clock differs from the committed output: ISA09/10, GS04/05, BHT04/05.
    assert _without_times(got.stdout.decode()) == _without_times(expected)
    assert parse(got.stdout.decode()).lines == parse(expected).lines


def _without_times(text: str) -> list[list[str]]:
    fields = {"ISA": (9, 10), "GS": (4, 5), "BHT": (4, 5)}
    segments = []
    for line in text.splitlines():
        elements = line.split("*")
        for position in fields.get(elements[0], ()):
            elements[position] = ""
        segments.append(elements)
    return segments
