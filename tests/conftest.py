"""Shared test helpers.

`run_cli` runs the real command line in a subprocess: use it when a test is about what a user
or an integration engine sees (exit status, stdout, stderr). `process_bundle` calls the library
directly: use it for rule and coding tests that need the model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fhirserver import make_fhir_server_fixture  # noqa: E402

# One local FHIR test server for the whole test session (started on first use).
fhir_server = make_fhir_server_fixture()


@pytest.fixture(autouse=True, scope="session")
def _table_cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Validated packs are cached in a folder of the test session (adapter.tablecache), not the
    user's, also for the command lines the tests run."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@dataclass
class CliRun:
    code: int
    stdout: bytes
    stderr: bytes

    def json(self) -> Any:
        return json.loads(self.stdout)

    def error_outcome(self) -> Any:
        return json.loads(self.stderr)


def run_cli(*args: str, stdin: bytes | None = None, timeout: float = 120, cwd: Path | None = None) -> CliRun:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "adapter", *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=timeout,
        cwd=cwd,
    )
    return CliRun(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli() -> Any:
    return run_cli
