"""Errors as a person reads them on a terminal, and as a program reads them elsewhere."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from conftest import REPO, run_cli

from adapter.cli import error_line

EXAMPLE = REPO / "examples" / "medicare-lumbar-bilateral" / "input.json"


def _run_on_terminal(*args: str, env: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    """Run the command line with standard error on a pseudo-terminal."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "adapter", *args],
            stdout=subprocess.PIPE,
            stderr=follower,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
            timeout=120,
            check=False,
        )
    finally:
        os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.returncode, proc.stdout, b"".join(chunks).decode().replace("\r\n", "\n")


def test_a_missing_file_on_a_terminal_is_one_line_and_exit_2() -> None:
    code, stdout, stderr = _run_on_terminal("check", "no-such-file.json")
    assert code == 2 and stdout == b""
    assert stderr == "error: Input file no-such-file.json does not exist.\n"


def test_error_format_json_on_a_terminal_writes_the_operation_outcome() -> None:
    code, _, stderr = _run_on_terminal("--error-format", "json", "check", "no-such-file.json")
    assert code == 2
    outcome = json.loads(stderr)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["details"]["text"] == "Input file no-such-file.json does not exist."


def test_off_a_terminal_the_default_stays_the_operation_outcome() -> None:
    run = run_cli("check", "no-such-file.json")
    assert run.code == 2 and run.stdout == b""
    assert json.loads(run.stderr)["issue"][0]["severity"] == "fatal"


def test_error_format_text_off_a_terminal() -> None:
    run = run_cli("--error-format", "text", "check", "no-such-file.json")
    assert run.code == 2
    assert run.stderr.decode() == "error: Input file no-such-file.json does not exist.\n"


def test_a_located_problem_is_named_on_the_one_line() -> None:
    bad = {
        "resourceType": "Procedure",
        "id": "x",
        "status": "completed",
        "subject": {"reference": "Patient/p"},
        "performedDateTime": "2026-10-01",
        "bodySite": "L4-L5",
        "note": 5,
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "64493"}]},
    }
    run = run_cli("--error-format", "text", "check", "-", stdin=json.dumps(bad).encode())
    assert run.code == 2
    text = run.stderr.decode()
    assert text.count("\n") == 1 and text.startswith("error: Procedure/x is not valid FHIR R4 (2 problem(s)).")
    assert "First: " in text and "(at Procedure.bodySite)" in text and "--error-format json" in text


def test_an_unknown_option_on_a_terminal_is_one_line() -> None:
    code, _, stderr = _run_on_terminal("check", str(EXAMPLE), "--pos", "7")
    assert code == 2
    assert stderr.startswith("error: --pos must be a two-digit CMS place-of-service code") and stderr.count("\n") == 1


def test_a_packs_folder_that_does_not_exist_is_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    run = subprocess.run(
        [sys.executable, "-m", "adapter", "--error-format", "text", "check", str(EXAMPLE), "--format", "json"],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "FACET_ADAPTER_PACKS": str(missing)},
        timeout=120,
        check=False,
    )
    assert run.returncode == 2 and run.stdout == b""
    expected = f"error: FACET_ADAPTER_PACKS names {missing}, which is not a folder"
    expected += " (site packs go in its packs/ and dx/).\n"
    assert run.stderr.decode() == expected
    (missing / "packs").mkdir(parents=True)
    again = subprocess.run(
        [sys.executable, "-m", "adapter", "check", str(EXAMPLE), "--format", "json"],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "FACET_ADAPTER_PACKS": str(missing)},
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stderr


def test_error_line_of_an_outcome_without_text() -> None:
    assert error_line({"resourceType": "OperationOutcome", "issue": []}) == "error: unknown error"
