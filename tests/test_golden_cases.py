"""Every golden case (contract §7) through the real command line: the public cases in
../shared/cases/public and our own in tests/cases."""

from __future__ import annotations

from pathlib import Path

import pytest
from golden import CASES_DIR, case_files, run_case

OWN_CASES = Path(__file__).resolve().parent / "cases"
ALL_CASES = [*case_files(CASES_DIR), *case_files(OWN_CASES)]


@pytest.mark.skipif(not CASES_DIR.is_dir(), reason="../shared/cases/public is not present")
def test_public_cases_are_found() -> None:
    assert case_files(CASES_DIR), "the public case folder exists but holds no case"


@pytest.mark.parametrize("case_path", ALL_CASES, ids=[p.name for p in ALL_CASES])
def test_golden_case(case_path: Path) -> None:
    problems = run_case(case_path)
    assert not problems, "\n".join(problems)
