"""The local FHIR test server's search index (tools/fhir-test-server/search-index.mjs) answers every
search as Medplum's full scan does.

search-index-check.mjs loads data into a repository and runs searches built from it (reference and
token filters in their spellings, sorting and paging, `_include`, `_revinclude`, conditional
create, update and delete, before and after updates and deletes) once narrowed and once as a
full scan, and compares the answers. Here it runs over the data the tests and the benchmark load
into the server, in the form the server holds it (each file as `sandbox` loads it: a transaction
with relative references, its ids prefixed so files do not overwrite each other).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fhirserver import SERVER_DIR, FhirTestServer, node_command

from adapter.server.loader import as_transaction

pytestmark = [pytest.mark.server, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
PUBLIC_CASES = REPO.parent / "shared" / "cases" / "public"
EXAMPLE = REPO / "examples" / "medicare-lumbar-bilateral" / "input.json"


def _input_of(path: Path) -> bytes:
    """A golden case's input (the file itself for an example)."""
    data = json.loads(path.read_bytes())
    if isinstance(data, dict) and "resourceType" not in data and "input" in data:
        value: Any = data["input"]
        return value.encode() if isinstance(value, str) else json.dumps(value).encode()
    return path.read_bytes()


def _write_as_loaded(folder: Path, files: list[Path], prefix: str) -> None:
    folder.mkdir(parents=True)
    for number, path in enumerate(files):
        bundle = as_transaction(_input_of(path), id_prefix=f"{prefix}{number}-", name=path.name)
        (folder / f"{number:03d}.json").write_text(json.dumps(bundle))


def _run_check(*targets: Path, folder: Path = SERVER_DIR) -> dict[str, Any]:
    run = subprocess.run(
        [*node_command(), "search-index-check.mjs", *map(str, targets)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode in (0, 1), run.stderr[-2000:]
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    assert run.returncode == 0 or result["differences"], run.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def installed(fhir_server: FhirTestServer) -> None:
    """The server's packages are installed once it has started here (not with FHIR_BASE_URL)."""
    if not (SERVER_DIR / "node_modules" / "@medplum" / "fhir-router").is_dir():
        pytest.skip("the test server's packages are not installed (FHIR_BASE_URL given)")


def test_narrowed_searches_answer_as_a_full_scan(installed: None, tmp_path: Path) -> None:
    cases = sorted(PUBLIC_CASES.glob("*.json")) + sorted(REPO.glob("examples/*/input.json"))
    assert len(cases) >= 12
    _write_as_loaded(tmp_path / "cases", cases, "c")
    # The benchmark's population (benchmarks/webhook_load.py): the example once per patient.
    _write_as_loaded(tmp_path / "population", [EXAMPLE] * 8, "w")
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from population import write_population
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    write_population(tmp_path / "bulk", 12)  # the bulk benchmark's NDJSON population

    result = _run_check(tmp_path / "cases", tmp_path / "population", tmp_path / "bulk")

    assert result["differences"] == 0, result["first"]
    assert result["repositories"] == 3
    assert result["resources"] > 500
    assert result["narrowed"] > 1000
    assert result["compared"] > result["narrowed"]  # the rest: includes narrowed inside


# Wrong indexes: one that loses candidates, one whose token lookup ignores the system (it then
# decides `identifier=|value` and `code=other-system|code` filters wrongly), one that takes the
# answer kept for a filter with another value.
WRONG_INDEXES = {
    "drops every second candidate": (
        "      matches.set(id, resource);",
        "      dropped = !dropped;\n      if (!dropped) matches.set(id, resource);\n",
        "  const matches = new Map();",
        "  const matches = new Map();\n  let dropped = true;",
    ),
    "keeps an answer for another date": (
        "  const key = `${filter.code}\\0${filter.operator}\\0${filter.value}`;",
        "  const key = `${filter.code}\\0${filter.operator}`;",
        "const MAX_ANSWERS = 64;",
        "const MAX_ANSWERS = 64;",
    ),
    "ignores token systems": (
        "      keys.add(`s${system}|${code}`);",
        "      keys.add(`c${code}`);",
        "      keys.add(`s${system ? system.toLowerCase() : ''}|${code}`);",
        "",
    ),
}


@pytest.mark.parametrize("wrong", sorted(WRONG_INDEXES))
def test_the_check_sees_a_wrong_index(installed: None, tmp_path: Path, wrong: str) -> None:
    """The check is not blind: a wrong index fails it."""
    source = (SERVER_DIR / "search-index.mjs").read_text()
    old_a, new_a, old_b, new_b = WRONG_INDEXES[wrong]
    assert source.count(old_a) == 1 and source.count(old_b) == 1
    copy = tmp_path / "server"
    copy.mkdir()
    (copy / "node_modules").symlink_to(SERVER_DIR / "node_modules")
    (copy / "search-index.mjs").write_text(source.replace(old_a, new_a).replace(old_b, new_b))
    (copy / "search-index-check.mjs").write_text((SERVER_DIR / "search-index-check.mjs").read_text())
    _write_as_loaded(tmp_path / "population", [EXAMPLE] * 3, "w")

    result = _run_check(tmp_path / "population", folder=copy)

    assert result["differences"] > 0
