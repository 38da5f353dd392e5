"""Run a golden case file (contract §7) through the real command line and compare."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

CASES_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "cases" / "public"


def case_files(directory: Path = CASES_DIR) -> list[Path]:
    return sorted(directory.glob("*.json")) if directory.is_dir() else []


def _command(case: dict[str, Any], command: str, path: Path) -> list[str]:
    argv = [sys.executable, "-m", "adapter", command, str(path), "--use", case["use"]]
    if case["payer"] is not None:  # our own cases may leave the profile to the data (payer null)
        argv += ["--payer", case["payer"]]
    if case.get("pos") is not None:
        argv += ["--pos", str(case["pos"])]
    if command == "check":
        argv += ["--format", "json"]
    return argv


def write_input(case: dict[str, Any], directory: Path) -> Path:
    if case.get("format") == "ndjson":
        entries = (
            case["input"].get("entry", [])
            if case["input"].get("resourceType") == "Bundle"
            else [{"resource": case["input"]}]
        )
        path = directory / "input.ndjson"
        path.write_text("".join(json.dumps(e["resource"]) + "\n" for e in entries))
    else:
        path = directory / "input.json"
        path.write_text(json.dumps(case["input"]))
    return path


def run_case(case_path: Path) -> list[str]:
    """Problems found (empty when the case passes)."""
    case = json.loads(case_path.read_text())
    expect = case["expect"]
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = write_input(case, Path(tmp))
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        claim = subprocess.run(_command(case, "claim", path), capture_output=True, env=env, timeout=120)
        check = subprocess.run(_command(case, "check", path), capture_output=True, env=env, timeout=120)
    for name, proc in (("claim", claim), ("check", check)):
        if proc.returncode != expect["exit"]:
            problems.append(f"{name} exit {proc.returncode} != {expect['exit']}: {proc.stderr.decode()[:800]}")
        if b"Traceback" in proc.stderr:
            problems.append(f"{name} printed a traceback")
    if expect["exit"] == 2:
        if claim.stdout.strip():
            problems.append("claim wrote to stdout on exit 2")
        return problems
    try:
        bundle = json.loads(claim.stdout)
        outcome = json.loads(check.stdout)
    except ValueError:
        return [*problems, "output is not JSON"]
    claim_res = bundle["entry"][0]["resource"]
    got_lines = Counter(
        (
            item["productOrService"]["coding"][0]["code"],
            frozenset(m["coding"][0]["code"] for m in item.get("modifier", [])),
            item.get("quantity", {}).get("value", 1),
        )
        for item in claim_res.get("item", [])
    )
    want_lines = Counter((x["code"], frozenset(x["modifiers"]), x["quantity"]) for x in expect.get("lines", []))
    if "lines" in expect and got_lines != want_lines:
        problems.append(f"lines {sorted(got_lines.items())} != {sorted(want_lines.items())}")
    codes = {c["code"] for d in claim_res.get("diagnosis", []) for c in d["diagnosisCodeableConcept"]["coding"]}
    for dx in expect.get("diagnoses", []):
        if dx not in codes:
            problems.append(f"diagnosis {dx} missing (have {sorted(codes)})")
    raised = {
        c["code"]
        for issue in outcome.get("issue", [])
        for c in issue.get("details", {}).get("coding", [])
        if c.get("system") == "urn:facet-adapter:rule"
    }
    for rule_id in expect.get("findings_present", []):
        if rule_id not in raised:
            problems.append(f"finding {rule_id} not raised (raised: {sorted(raised)})")
    for rule_id in expect.get("findings_absent", []):
        if rule_id in raised:
            problems.append(f"finding {rule_id} raised but must be absent")
    if case["use"] == "claim" and expect["exit"] in (0, 1):
        want_status = "active" if expect["exit"] == 0 else "draft"
        if claim_res.get("status") != want_status:
            problems.append(f"Claim status {claim_res.get('status')} != {want_status}")
    return problems


if __name__ == "__main__":
    paths = [Path(p) for p in sys.argv[1:]] or case_files()
    failed = 0
    for path in paths:
        problems = run_case(path)
        failed += bool(problems)
        print(("FAIL " if problems else "ok   ") + path.name)
        for problem in problems:
            print("     " + problem)
    sys.exit(1 if failed else 0)
