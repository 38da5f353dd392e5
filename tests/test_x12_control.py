"""X12 control numbers and frequency codes: a locked state file gives every interchange its own
control number, even to runs at the same time, and remembers the claims sent, so a changed claim
goes out as a replacement (7) and a void as 8."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from builders import NOW, CaseBuilder
from conftest import REPO, run_cli
from x12 import add_billing_data, parse, validate, write_config

from adapter.pipeline import Options, Result, process
from adapter.writers import x12_837p_writer
from adapter.writers.x12_837p import X12Options
from adapter.writers.x12_837p.content import Frequency
from adapter.writers.x12_837p.control import Sent, frequency_for


def _case() -> CaseBuilder:
    case = CaseBuilder()
    case.block(["L4-L5", "L5-S1"], side="bilateral", intent="diagnostic")
    return case


def _input(tmp_path: Path) -> Path:
    path = tmp_path / "input.json"
    path.write_text(json.dumps(add_billing_data(_case().bundle())))
    return path


def _result(source: Path, **options: object) -> Result:
    return process(source.read_bytes(), Options(payer="medicare", now=NOW, **options))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("previous", "same", "void", "expected"),
    [
        (None, False, False, "1"),
        (Sent(1, "abc", "1"), True, False, "1"),
        (Sent(1, "abc", "1"), False, False, "7"),
        (Sent(2, "abc", "7"), True, False, "7"),
        (Sent(2, "abc", "7"), False, False, "7"),
        (Sent(3, "abc", "8"), True, False, "1"),
        (None, False, True, "8"),
        (Sent(1, "abc", "1"), True, True, "8"),
    ],
)
def test_frequency_codes(previous: Sent | None, same: bool, void: bool, expected: Frequency) -> None:
    assert frequency_for(previous, "abc" if same else "xyz", void=void) == expected


def test_control_numbers_count_up_and_the_state_holds_no_patient_data(tmp_path: Path) -> None:
    source, config = _input(tmp_path), write_config(tmp_path)
    writer = x12_837p_writer(X12Options(config=config))
    result = _result(source)
    numbers = [parse(writer.write(result.decision, result.index).decode()).control_number for _ in range(3)]
    assert numbers == ["000000001", "000000002", "000000003"]
    state_text = (tmp_path / "x12-state.json").read_text()
    state = json.loads(state_text)
    assert state["next_control_number"] == 4
    entry = state["claims"][result.decision.identifier]
    assert list(state["claims"]) == [result.decision.identifier]
    assert entry["control_number"] == 3 and entry["frequency"] == "1" and len(entry["digest"]) == 64
    for private in ("Test", "p1", "1960-01-01", "MEMBER0001", "Columbus"):
        assert private not in state_text


def test_a_fixed_control_number_leaves_the_counter_alone(tmp_path: Path) -> None:
    source, config = _input(tmp_path), write_config(tmp_path)
    result = _result(source)
    fixed = x12_837p_writer(X12Options(config=config, control_number=500))
    assert parse(fixed.write(result.decision, result.index).decode()).control_number == "000000500"
    counted = x12_837p_writer(X12Options(config=config))
    assert parse(counted.write(result.decision, result.index).decode()).control_number == "000000001"


_WORKER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from adapter.pipeline import Options, process
from adapter.writers import x12_837p_writer
from adapter.writers.x12_837p import X12Options
source, config, go, count = Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5])
result = process(source.read_bytes(), Options(payer="medicare"))
writer = x12_837p_writer(X12Options(config=config))
while not go.exists():
    time.sleep(0.005)
for _ in range(count):
    text = writer.write(result.decision, result.index).decode()
    print(text.split("*")[13])
"""


def test_two_processes_at_the_same_time_never_share_a_control_number(tmp_path: Path) -> None:
    source, config = _input(tmp_path), write_config(tmp_path)
    go = tmp_path / "go"
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    count = 15
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), str(REPO), str(source), str(config), str(go), str(count)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    time.sleep(1.0)  # both have imported and coded before they start writing together
    go.touch()
    outputs = [worker.communicate(timeout=120) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), [err.decode() for _, err in outputs]
    numbers = [int(line) for out, _ in outputs for line in out.decode().split()]
    assert len(numbers) == 2 * count
    assert sorted(numbers) == list(range(1, 2 * count + 1))  # each used once, none skipped
    assert json.loads((tmp_path / "x12-state.json").read_text())["next_control_number"] == 2 * count + 1


def test_two_concurrent_command_line_runs_take_different_numbers(tmp_path: Path) -> None:
    source, config = _input(tmp_path), write_config(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "adapter", "claim", str(source), "--payer", "medicare", "--format", "x12-837p"]
    runs = [
        subprocess.Popen([*argv, "--x12-config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err.decode() for _, err in outputs]
    numbers = {parse(out.decode()).control_number for out, _ in outputs}
    assert numbers == {"000000001", "000000002"}
    assert all(validate(out.decode()) == [] for out, _ in outputs)


def test_a_changed_claim_is_a_replacement_and_needs_the_payers_claim_number(tmp_path: Path) -> None:
    source, config = _input(tmp_path), write_config(tmp_path)
    args = ["claim", str(source), "--payer", "medicare", "--format", "x12-837p", "--x12-config", str(config)]
    first = run_cli(*args)
    assert first.code == 0 and parse(first.stdout.decode()).frequency == "1"
    again = run_cli(*args)  # the same content again: a retransmission with the same code
    assert again.code == 0 and parse(again.stdout.decode()).frequency == "1"
    changed = run_cli(*args, "--prior-auth", "PA-1")  # new content: REF*G1
    assert changed.code == 1 and changed.stdout == b""
    assert b"claim-data-missing: 2300 REF02 payer claim control number (REF*F8)" in changed.stderr
    replacement = run_cli(*args, "--prior-auth", "PA-1", "--payer-claim-number", "ICN-20261001-77")
    assert replacement.code == 0, replacement.stderr.decode()
    parsed = parse(replacement.stdout.decode())
    assert parsed.frequency == "7" and parsed.references == {"G1": "PA-1", "F8": "ICN-20261001-77"}
    assert validate(replacement.stdout.decode()) == []
    void = run_cli(*args, "--prior-auth", "PA-1", "--void", "--payer-claim-number", "ICN-20261001-77")
    assert void.code == 0 and parse(void.stdout.decode()).frequency == "8"
    assert validate(void.stdout.decode()) == []
    after_void = run_cli(*args)  # sent again after a void: a new original
    assert after_void.code == 0 and parse(after_void.stdout.decode()).frequency == "1"
    numbers = [parse(r.stdout.decode()).control_number for r in (first, again, replacement, void, after_void)]
    assert numbers == [f"{n:09d}" for n in range(1, 6)]  # the held run took none


def test_an_unusable_state_file_is_a_usage_error(tmp_path: Path) -> None:
    source, config = _input(tmp_path), write_config(tmp_path)
    (tmp_path / "x12-state.json").write_text("{not json")
    got = run_cli("claim", str(source), "--payer", "medicare", "--format", "x12-837p", "--x12-config", str(config))
    assert got.code == 2 and got.stdout == b"" and b"is not usable" in got.stderr
