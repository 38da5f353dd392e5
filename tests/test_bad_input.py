"""Bad input never crashes the adapter: exit 2, nothing on stdout, an OperationOutcome on stderr,
no traceback, in bounded time and memory (issue: facet coding core, item 7)."""

from __future__ import annotations

import copy
import json
import resource
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import CliRun, run_cli

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "medicare-lumbar-bilateral" / "input.json"
FACET_IDS = ("mbb-l4l5", "mbb-l5s1")


def _base_bundle() -> dict[str, Any]:
    return json.loads(EXAMPLE.read_text())


def _facet_procedure(bundle: dict[str, Any]) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["resource"].get("id") == FACET_IDS[0])


def assert_input_error(run: CliRun, *, mentions: str | None = None) -> dict[str, Any]:
    assert run.code == 2, run.stderr.decode(errors="replace")[:2000]
    assert run.stdout == b"", "nothing may be written to stdout on an input error"
    assert b"Traceback" not in run.stderr
    outcome = json.loads(run.stderr)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] in ("fatal", "error")
    if mentions:
        text = json.dumps(outcome).lower()
        assert mentions.lower() in text, text[:1000]
    return outcome


def _write(tmp_path: Path, name: str, content: bytes | str) -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


@pytest.mark.parametrize("command", ["claim", "check"])
@pytest.mark.parametrize(
    ("name", "content", "mentions"),
    [
        ("empty.json", b"", "empty"),
        ("blank.json", b"   \n\n  ", "empty"),
        ("text.json", b"hello, this is not json", "neither json nor ndjson"),
        ("utf8.json", b'{"resourceType": "Patient", "id": "\xff\xfe"}', "json"),
        ("array.json", b"[1, 2, 3]", "not a fhir resource"),
        ("string.json", b'"Procedure"', "not a fhir resource"),
        ("no-type.json", b'{"id": "x", "status": "completed"}', "no resourcetype"),
        ("r5.json", b'{"resourceType": "SubscriptionTopic", "url": "http://x", "status": "active"}', "not a fhir r4"),
        ("r5b.json", b'{"resourceType": "ArtifactAssessment", "id": "a"}', "not a fhir r4"),
        ("unknown.json", b'{"resourceType": "Banana"}', "not a fhir r4"),
        ("bad.ndjson", b'{"resourceType": "Patient", "id": "p"}\n{not json}\n', "line 2"),
        ("patient.json", b'{"resourceType": "Patient", "id": "p"}', "no facet procedure"),
    ],
)
def test_unusable_input(tmp_path: Path, command: str, name: str, content: bytes, mentions: str) -> None:
    assert_input_error(run_cli(command, _write(tmp_path, name, content)), mentions=mentions)


@pytest.mark.parametrize(
    ("mutate", "mentions"),
    [
        (lambda p: p.__setitem__("performedDateTime", "2026-13-45"), "performeddatetime"),
        (lambda p: p.__setitem__("performedDateTime", "2026-10-15T09:30:00"), "performeddatetime"),
        (lambda p: p.__setitem__("status", 5), "status"),
        (lambda p: p.__setitem__("bodySite", {"text": "L4-L5"}), "bodysite"),
        (lambda p: p.__setitem__("colour", "blue"), "colour"),
        (lambda p: p["code"].__setitem__("coding", []), "coding"),
        (lambda p: p.pop("subject"), "subject"),
    ],
    ids=[
        "bad-date",
        "time-without-zone",
        "wrong-type",
        "single-for-array",
        "unknown-element",
        "empty-array",
        "missing",
    ],
)
def test_invalid_r4_facet_procedure(tmp_path: Path, mutate: Any, mentions: str) -> None:
    bundle = copy.deepcopy(_base_bundle())
    mutate(_facet_procedure(bundle))
    outcome = assert_input_error(
        run_cli("claim", _write(tmp_path, "in.json", json.dumps(bundle))), mentions="not valid"
    )
    expressions = [e for issue in outcome["issue"] for e in issue.get("expression", [])]
    assert any(mentions in e.lower() for e in expressions), expressions
    assert all(e.startswith("Bundle.entry[") for e in expressions)


def test_invalid_condition_of_the_patient(tmp_path: Path) -> None:
    bundle = copy.deepcopy(_base_bundle())
    condition = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Condition")
    condition["onsetDateTime"] = "2025-02-30"
    assert_input_error(run_cli("check", _write(tmp_path, "in.json", json.dumps(bundle))), mentions="onsetdatetime")


def test_unused_invalid_resource_is_passed_over(tmp_path: Path) -> None:
    bundle = copy.deepcopy(_base_bundle())
    # A resource type the adapter does not use, broken, and an R4-only type R4B/R5 removed.
    bundle["entry"].append({"resource": {"resourceType": "Basic", "code": "not-a-codeable-concept"}})
    bundle["entry"].append({"resource": {"resourceType": "MedicinalProduct", "id": "mp1"}})
    run = run_cli("claim", _write(tmp_path, "in.json", json.dumps(bundle)), "--payer", "medicare")
    assert run.code == 0, run.stderr.decode()


def test_deeply_nested_json(tmp_path: Path) -> None:
    depth = 10_000
    for content in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
        started = time.monotonic()
        assert_input_error(run_cli("claim", _write(tmp_path, "deep.json", content)))
        assert time.monotonic() - started < 30


def _nested_extension(depth: int) -> str:
    inner = '{"url": "http://e.org", "valueString": "y"}'
    return '{"url": "http://example.org/x", "extension": [' * depth + inner + "]}" * depth


@pytest.mark.parametrize(("depth", "code"), [(100, 0), (480, 2)])
def test_deep_nesting_inside_a_resource(tmp_path: Path, depth: int, code: int) -> None:
    # 960 JSON levels still parse (orjson's limit is 1,024) but cannot be written back (255):
    # the adapter's own walkers must not recurse, and the writer must say why it stops.
    bundle = copy.deepcopy(_base_bundle())
    _facet_procedure(bundle)["extension"] = ["NESTED"]
    content = json.dumps(bundle).replace('"NESTED"', _nested_extension(depth))
    run = run_cli("claim", _write(tmp_path, "in.json", content), "--payer", "medicare")
    assert b"Traceback" not in run.stderr
    if code == 2:
        assert_input_error(run, mentions="nested more than")
    else:
        assert run.code == 0, run.stderr.decode()[:2000]


def _child_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


@pytest.mark.slow
def test_fifty_megabyte_inputs(tmp_path: Path) -> None:
    size = 50 * 1024 * 1024
    patients = []
    total = 0
    index = 0
    while total < size:
        line = json.dumps({"resourceType": "Patient", "id": f"p{index}", "name": [{"family": "X" * 200}]})
        patients.append(line)
        total += len(line) + 1
        index += 1
    inputs = {
        "many.ndjson": "\n".join(patients).encode(),
        "junk.json": b"x" * size,
        "string.json": b'"' + b"a" * size + b'"',
    }
    for name, content in inputs.items():
        started = time.monotonic()
        assert_input_error(run_cli("claim", _write(tmp_path, name, content), timeout=120))
        assert time.monotonic() - started < 60, name
    assert _child_peak_rss_mb() < 1500


def test_input_over_the_limit(tmp_path: Path) -> None:
    path = _write(tmp_path, "big.json", b" " * (2 * 1024 * 1024) + b"{}")
    assert_input_error(run_cli("claim", path, "--max-input-mb", "1"), mentions="over the limit")


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["--payer", "acme"], "unknown payer profile"),
        (["--payer", "base"], "not a payer profile"),
        (["--pos", "1"], "--pos"),
        (["--pos", "ab"], "--pos"),
        (["--use", "predetermination"], "predetermination"),
        (["--bogus"], "bogus"),
    ],
)
def test_usage_errors(tmp_path: Path, args: list[str], mentions: str) -> None:
    path = _write(tmp_path, "in.json", json.dumps(_base_bundle()))
    assert_input_error(run_cli("claim", path, *args), mentions=mentions)


def test_missing_file() -> None:
    assert_input_error(run_cli("claim", "/nonexistent/input.json"), mentions="does not exist")


def test_directory_as_input(tmp_path: Path) -> None:
    assert_input_error(run_cli("check", str(tmp_path)), mentions="directory")


def test_stdin_input() -> None:
    run = run_cli("claim", "-", "--payer", "medicare", stdin=json.dumps(_base_bundle()).encode())
    assert run.code == 0, run.stderr.decode()
    assert run.json()["entry"][0]["resource"]["resourceType"] == "Claim"
    assert_input_error(run_cli("claim", "-", stdin=b""), mentions="empty")


def test_use_claim_with_only_service_requests(tmp_path: Path) -> None:
    bundle = copy.deepcopy(_base_bundle())
    for entry in bundle["entry"]:
        r = entry["resource"]
        if r["resourceType"] == "Procedure" and r["id"] in FACET_IDS:
            entry["resource"] = {
                "resourceType": "ServiceRequest",
                "id": r["id"],
                "status": "active",
                "intent": "order",
                "subject": r["subject"],
                "code": r["code"],
                "occurrenceDateTime": "2026-11-20",
            }
    path = _write(tmp_path, "in.json", json.dumps(bundle))
    assert_input_error(run_cli("claim", path), mentions="--use claim")
    run = run_cli("claim", path, "--use", "preauthorization")
    assert run.code in (0, 1), run.stderr.decode()


def test_use_preauthorization_without_service_request(tmp_path: Path) -> None:
    path = _write(tmp_path, "in.json", json.dumps(_base_bundle()))
    assert_input_error(run_cli("claim", path, "--use", "preauthorization"), mentions="servicerequest")


def test_no_date_of_service(tmp_path: Path) -> None:
    bundle = copy.deepcopy(_base_bundle())
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Procedure" and entry["resource"]["id"] in FACET_IDS:
            entry["resource"].pop("performedDateTime")
    assert_input_error(run_cli("claim", _write(tmp_path, "in.json", json.dumps(bundle))), mentions="no date of service")


def test_procedures_not_completed_are_not_claimed(tmp_path: Path) -> None:
    bundle = copy.deepcopy(_base_bundle())
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Procedure" and entry["resource"]["id"] in FACET_IDS:
            entry["resource"]["status"] = "in-progress"
    assert_input_error(run_cli("claim", _write(tmp_path, "in.json", json.dumps(bundle))), mentions="completed")
