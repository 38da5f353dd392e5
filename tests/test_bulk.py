"""The bulk runner (docs/bulk.md): every session of every patient of an export, every line
accounted for, the same output for any number of jobs, and the same Claim as a one-file run."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import REPO, run_cli
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter.bulk.patient import Settings
from adapter.bulk.routing import NO_PATIENT, route
from adapter.bulk.runner import BulkJob, run_local
from adapter.fhir import r4schema
from adapter.fhir.ingest import parse_bytes
from adapter.pipeline import Options, list_sessions, process

sys.path.insert(0, str(REPO / "benchmarks"))
from population import write_population

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
EXAMPLE_NDJSON = REPO / "examples" / "commercial-cervical-ndjson" / "input.ndjson"


def run(inputs: list[Path], outdir: Path, jobs: int = 1, **options: Any) -> Any:
    job = BulkJob(tuple(map(str, inputs)), outdir, Settings(Options(now=NOW, **options)), jobs=jobs)
    return run_local(job)


def ndjson(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A population in Bulk Data layout, with a second file for one type, a gzipped file, and a
    file of trouble: bad JSON, a non-R4 type, a Bundle, a blank line, an unattributed Organization."""
    folder = tmp_path_factory.mktemp("export")
    write_population(folder, 60, seed=11)
    observations = folder / "Observation.ndjson"
    lines = observations.read_bytes().splitlines(keepends=True)
    observations.write_bytes(b"".join(lines[: len(lines) // 2]))
    (folder / "Observation.002.ndjson").write_bytes(b"".join(lines[len(lines) // 2 :]))
    encounters = folder / "Encounter.ndjson"
    (folder / "Encounter.ndjson.gz").write_bytes(gzip.compress(encounters.read_bytes()))
    encounters.unlink()
    (folder / "manifest.json").write_text("{}")
    (folder / "Mixed.ndjson").write_text(
        "{not json\n"
        '{"resourceType": "Foo", "id": "x"}\n'
        "\n"
        '{"resourceType": "Bundle", "type": "collection"}\n'
        '{"resourceType": "Organization", "id": "never-referenced", "name": "Unused"}\n'
    )
    return folder


@pytest.fixture(scope="module")
def coded(export: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    outdir = tmp_path_factory.mktemp("out")
    return outdir, run([export], outdir, jobs=2)


def test_every_line_is_used_counted_irrelevant_or_reported(export: Path, coded: tuple[Path, Any]) -> None:
    outdir, tally = coded
    summary = json.loads((outdir / "summary.json").read_text())
    lines = summary["lines"]
    total = 0
    for path in export.iterdir():
        if path.name.endswith(".gz"):
            total += len(gzip.decompress(path.read_bytes()).splitlines())
        elif path.name.endswith(".ndjson"):
            total += len(path.read_bytes().splitlines())
    assert lines["read"] == total
    assert lines["read"] == lines["used"] + lines["irrelevant"] + lines["bad"]
    assert lines["bad"] == 3
    reasons = lines["irrelevant_by_reason"]
    assert reasons["blank line"] == 1
    assert reasons["reference data no session referenced"] >= 1
    assert reasons["resource type the adapter does not read"] > 0  # allergies, immunizations, reports
    errors = ndjson(outdir / "errors.ndjson")
    bad = [(e["file"].rsplit("/", 1)[-1], e["line"]) for e in errors if e["kind"] == "line"]
    assert bad == [("Mixed.ndjson", 1), ("Mixed.ndjson", 2), ("Mixed.ndjson", 4)]
    assert all("reason" in e and "{" not in e["reason"] for e in errors)
    assert summary["files_passed_over"][0].endswith("manifest.json")
    assert tally.exit_code == (1 if summary["held"] or summary["not_coded"] else 0)


def test_every_session_of_every_patient_is_coded_in_order(export: Path, coded: tuple[Path, Any]) -> None:
    outdir, _ = coded
    summary = json.loads((outdir / "summary.json").read_text())
    claims = ndjson(outdir / "claims.ndjson")
    outcomes = ndjson(outdir / "outcomes.ndjson")
    assert summary["sessions"] == 60 == len(claims) == len(outcomes)
    assert summary["ready"] + summary["held"] + summary["not_coded"] == 60
    assert sum(summary["by_pack"].values()) == 60
    keys = [
        (c["entry"][0]["resource"]["patient"]["reference"], c["entry"][0]["resource"]["billablePeriod"]["start"])
        for c in claims
    ]
    patients = [
        next(e["resource"]["id"] for e in c["entry"] if e["resource"]["resourceType"] == "Patient") for c in claims
    ]
    assert [(p, d) for p, (_, d) in zip(patients, keys, strict=True)] == sorted(
        (p, d) for p, (_, d) in zip(patients, keys, strict=True)
    )
    # Each outcome is keyed to its Claim's identifier.
    identifiers = [c["entry"][0]["resource"]["id"] for c in claims]
    assert [o["id"] for o in outcomes] == identifiers


def test_output_is_the_same_bytes_for_any_number_of_jobs(export: Path, coded: tuple[Path, Any], tmp_path: Path) -> None:
    outdir, _ = coded
    run([export], tmp_path, jobs=1)
    for name in ("claims.ndjson", "outcomes.ndjson", "errors.ndjson", "summary.json"):
        assert (tmp_path / name).read_bytes() == (outdir / name).read_bytes(), name


def test_a_sample_of_bulk_output_is_valid_r4(coded: tuple[Path, Any]) -> None:
    outdir, _ = coded
    for line in (outdir / "claims.ndjson").read_text().splitlines()[::7]:
        bundle = json.loads(line)
        for resource in [bundle, *(e["resource"] for e in bundle["entry"])]:
            assert not r4schema.validate(resource)
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    for line in (outdir / "outcomes.ndjson").read_text().splitlines()[::7]:
        get_fhir_model_class("OperationOutcome").model_validate(json.loads(line))


def _bulk_and_alone(raw: bytes, tmp: Path) -> None:
    source = tmp / "export.ndjson"
    source.write_bytes(raw)
    outdir = tmp / "out"
    run([source], outdir, jobs=1)
    bulk = {c["entry"][0]["resource"]["id"]: c for c in ndjson(outdir / "claims.ndjson")}
    index = parse_bytes(raw, name="export.ndjson")
    sessions = list_sessions(index)
    assert len(bulk) == len(sessions)
    for ref in sessions:
        alone = process(raw, Options(now=NOW, focus=ref.procedures[0]), name="export.ndjson").bundle
        claim = alone["entry"][0]["resource"]
        assert bulk[claim["id"]] == alone


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), sessions=st.integers(1, 9), shuffle=st.randoms(use_true_random=False))
def test_a_session_coded_in_bulk_is_the_claim_coded_alone(
    seed: int, sessions: int, shuffle: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("population")
    write_population(folder, sessions, seed=seed)
    lines = [line for path in sorted(folder.glob("*.ndjson")) for line in path.read_bytes().splitlines()]
    shuffle.shuffle(lines)  # mixed NDJSON in any order: references may point forward or back
    _bulk_and_alone(b"\n".join(lines) + b"\n", tmp_path_factory.mktemp("run"))


def test_bulk_of_a_three_patient_case_matches_the_one_file_run(tmp_path: Path) -> None:
    case = json.loads(
        (REPO / "tests" / "cases" / "124-ndjson-bulk-three-patients-latest-session-patient-c.json").read_text()
    )
    raw = b"\n".join(orjson.dumps(e["resource"]) for e in case["input"]["entry"]) + b"\n"
    _bulk_and_alone(raw, tmp_path)


def test_routing_names_the_patient_as_the_reader_does() -> None:
    assert route(b'{"resourceType":"Patient","id":"a"}').patient == "Patient/a"
    ref = b'{"resourceType":"Coverage","id":"c","beneficiary":{"reference":"http://x/fhir/Patient/a/_history/2"}}'
    assert route(ref).patient == "Patient/a"
    assert route(b'{"resourceType":"Organization","id":"o"}').kind == "shared"
    assert route(b'{"resourceType":"Procedure","id":"p","status":"completed"}').patient == NO_PATIENT
    about = route(b'{"resourceType":"Observation","id":"o","status":"final","partOf":[{"reference":"Procedure/p"}]}')
    assert about.kind == "shared" and about.about == ("Procedure/p",)
    assert route(b"   ").kind == "blank"
    assert route(b'{"resourceType":"Procedure","contained":[{"id":"x"}]}').kind == "bad"


def test_since_codes_later_sessions_with_their_history(tmp_path: Path) -> None:
    run([EXAMPLE_NDJSON], tmp_path / "all")
    job = BulkJob((str(EXAMPLE_NDJSON),), tmp_path / "late", Settings(Options(now=NOW), since=dt.date(2026, 10, 1)))
    run_local(job)
    everything = ndjson(tmp_path / "all" / "claims.ndjson")
    late = ndjson(tmp_path / "late" / "claims.ndjson")
    summary = json.loads((tmp_path / "late" / "summary.json").read_text())
    assert len(everything) == 3 and len(late) == 1 and summary["sessions_before_since"] == 2
    assert late[0] == everything[-1]  # the ablation still sees the two blocks before it


def test_cli_exit_statuses_and_summary_line(tmp_path: Path) -> None:
    ready = run_cli("bulk", str(EXAMPLE_NDJSON), "-o", str(tmp_path / "a"), "--jobs", "2")
    assert ready.code == 0, ready.stderr
    assert ready.stderr.decode().startswith("bulk: 3 session(s) of 1 patient(s): 3 ready, 0 held")
    held = run_cli("bulk", str(REPO / "tests" / "cases"), "-o", str(tmp_path / "b"))
    assert held.code == 2  # a folder of JSON cases holds no NDJSON file: a usage error
    mixed = tmp_path / "three.ndjson"
    case = json.loads(
        (REPO / "tests" / "cases" / "124-ndjson-bulk-three-patients-latest-session-patient-c.json").read_text()
    )
    mixed.write_bytes(b"\n".join(orjson.dumps(e["resource"]) for e in case["input"]["entry"]) + b"\n{oops\n")
    some_held = run_cli("bulk", str(mixed), "-o", str(tmp_path / "c"))
    assert some_held.code == 1
    assert "1 bad" in some_held.stderr.decode()
    for args in (
        ["bulk", "-o", str(tmp_path / "d")],
        ["bulk", str(tmp_path / "missing.ndjson"), "-o", str(tmp_path / "d")],
        ["bulk", str(mixed), "-o", str(tmp_path / "d"), "--payer", "nobody"],
        ["bulk", str(mixed), "-o", str(tmp_path / "d"), "--master", "local[2]"],
        ["bulk", str(mixed), "-o", str(tmp_path / "d"), "--since", "yesterday"],
        ["bulk", str(mixed), "-o", str(tmp_path / "d"), "--group", "g"],
    ):
        failed = run_cli(*args)
        assert failed.code == 2, args
        assert failed.error_outcome()["resourceType"] == "OperationOutcome"
    assert not (tmp_path / "a" / ".bulk-work").exists()


def test_a_truncated_gzip_file_is_reported_not_fatal(tmp_path: Path) -> None:
    data = gzip.compress(EXAMPLE_NDJSON.read_bytes())
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "All.ndjson.gz").write_bytes(data[: len(data) // 2])
    tally = run([tmp_path / "in"], tmp_path / "out")
    errors = ndjson(tmp_path / "out" / "errors.ndjson")
    assert errors[-1]["kind"] == "file" and errors[-1]["file"].endswith("All.ndjson.gz")
    assert tally.bad_lines == 1


def test_spark_engine_writes_the_same_claims_as_the_local_engine(export: Path, tmp_path: Path) -> None:
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java")
    from adapter.bulk.spark import run_spark

    # Two files (one mixed, one gzipped): few Spark partitions keep the JVM's work short.
    compact = tmp_path / "in"
    compact.mkdir()
    plain = sorted(export.glob("*.ndjson"))
    (compact / "Mixed.ndjson").write_bytes(b"".join(path.read_bytes() for path in plain))
    shutil.copy(export / "Encounter.ndjson.gz", compact)
    local = run([compact], tmp_path / "local", jobs=2)
    job = BulkJob((str(compact),), tmp_path / "spark", Settings(Options(now=NOW)), jobs=2)
    tally = run_spark(job, "local[2]")
    spark_claims = (tmp_path / "spark" / "claims.ndjson").read_bytes()
    local_claims = (tmp_path / "local" / "claims.ndjson").read_bytes()
    assert set(spark_claims.splitlines()) == set(local_claims.splitlines())
    assert spark_claims == local_claims  # and in the same order
    for name in ("outcomes.ndjson", "errors.ndjson", "summary.json"):
        assert (tmp_path / "spark" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    assert tally.exit_code == local.exit_code and tally.sessions == 60


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values() if isinstance(v, (dict, list))), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value if isinstance(v, (dict, list))), default=0)
    return 0


def test_the_schema_walk_measures_the_depth_of_every_valid_resource(export: Path) -> None:
    """The depth check rides on the validation walk; on valid resources it is the JSON depth."""
    checked = 0
    for path in [*sorted(export.glob("*.ndjson")), EXAMPLE_NDJSON]:
        for line in path.read_text().splitlines():
            try:
                resource = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(resource, dict) or r4schema.validate(resource):
                continue
            issues, depth = r4schema.validate_with_depth(resource)
            assert not issues and depth == _depth(resource), resource.get("id")
            checked += 1
    deep: dict[str, Any] = {"resourceType": "Basic", "code": {"text": "x"}, "extension": []}
    level = deep
    for _ in range(30):
        inner: dict[str, Any] = {"url": "http://x", "extension": []}
        level["extension"] = [inner]
        level = inner
    level.pop("extension")
    level["valueString"] = "leaf"
    assert r4schema.validate_with_depth(deep) == ([], _depth(deep))
    assert checked > 500


def test_one_copying_walk_finds_the_references_reference_holders_finds() -> None:
    from adapter.fhir.values import copy_with_references, reference_holders

    source = json.loads((REPO / "examples" / "medicare-lumbar-rfa-transaction" / "input.json").read_text())
    for entry in source["entry"]:
        resource = entry["resource"]
        copy, holders = copy_with_references(resource)
        assert copy == resource and copy is not resource
        assert [h["reference"] for h in holders] == [h["reference"] for h in reference_holders(resource)]
        for holder in holders:
            holder["reference"] = "changed"
        assert "changed" not in json.dumps(resource)


def test_icd10_search_and_table_agree() -> None:
    from adapter.icd10 import code_set

    codes = code_set()
    sample = ["M47816", "M545", "M5450", "M4781", "S32000A", "Z9989", "M47", "Q999", "A0", "M4726"]
    searched = [codes._search(code) for code in sample]
    table = codes._build()
    built = [("billable" if table[c] else "not-billable") if c in table else "unknown" for c in sample]
    assert searched == built


def test_an_output_folder_inside_the_input_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "export").mkdir()
    shutil.copy(EXAMPLE_NDJSON, tmp_path / "export" / "All.ndjson")
    first = run([tmp_path / "export"], tmp_path / "export" / "out")
    second = run([tmp_path / "export"], tmp_path / "export" / "out")
    assert first.lines_read == second.lines_read == 15 and second.bad_lines == 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(max_size=12), min_size=1, max_size=4))
def test_reference_scan_reads_every_reference_string(values: list[str]) -> None:
    """The byte scan a partition follows references with finds each `reference` string as JSON
    reads it, whatever it escapes (quotes, backslashes, control and non-ASCII characters)."""
    from adapter.bulk.patient import _REFERENCE

    line = orjson.dumps({"resourceType": "Observation", "focus": [{"reference": value} for value in values]})
    found = [orjson.loads(b'"' + raw + b'"') for raw in _REFERENCE.findall(line)]
    assert found == values
