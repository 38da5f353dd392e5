"""ICD-10-CM existence and billability match the simple-icd-10-cm package for every code."""

from __future__ import annotations

import pytest

from adapter import icd10


def test_every_code_agrees_with_the_package() -> None:
    simple = pytest.importorskip("simple_icd_10_cm")
    disagreements = []
    for code in simple.get_all_codes(False):
        if "-" in code or code.isdigit():  # chapters and blocks are not codes
            continue
        expected = "billable" if simple.is_leaf(code) else "not-billable"
        if icd10.status(code) != expected:
            disagreements.append(code)
    assert not disagreements, disagreements[:20]


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("M47.816", "billable"),
        ("m47816", "billable"),
        ("M54.5", "not-billable"),
        ("M54.50", "billable"),
        ("M47.81", "not-billable"),
        ("S32.000A", "billable"),
        ("B20", "billable"),
        ("Q99.99", "unknown"),
        ("A00-A09", "unknown"),
        ("", "unknown"),
        ("12345", "unknown"),
    ],
)
def test_status(code: str, status: str) -> None:
    assert icd10.status(code) == status


def test_normalize() -> None:
    assert icd10.normalize("m47816") == "M47.816"
    assert icd10.normalize("M47.816 ") == "M47.816"
    assert icd10.normalize("B20") == "B20"
    assert icd10.code_set().release == "April-2026"
