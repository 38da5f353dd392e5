"""Findings: why a claim is held or what a coder should look at, each citing its rule."""

from __future__ import annotations

from dataclasses import dataclass

from ..read.locations import Location
from .terms import IssueType, Severity

SEVERITY_ORDER: dict[str, int] = {"error": 0, "warning": 1, "information": 2}


@dataclass(frozen=True, slots=True)
class Finding:
    rule_id: str
    rule_version: int
    pack: str
    pack_version: str
    severity: Severity
    issue: IssueType
    title: str
    message: str
    citation: str
    carc: str | None
    hint: str
    expressions: tuple[str, ...]
    # The adapter already changed the claim so that the CARC's denial does not happen (a corrected
    # code, a dropped imaging line): the review says the denial is avoided, not expected.
    avoids_denial: bool = False
    # For display, added by the claim decision (adapter/decision.py): the cited documents that have
    # a public address as (title, address), the CARC in words, and each expression as a coder
    # reads it.
    links: tuple[tuple[str, str], ...] = ()
    carc_text: str | None = None
    locations: tuple[Location, ...] = ()
    # The dated pack sections the rule was judged by, as in force on the date of service
    # ("limits per L38765 revision of 2024-07-07 (in force from 2024-07-07)").
    in_force: tuple[str, ...] = ()

    @property
    def holds(self) -> bool:
        return self.severity == "error"


def holds_claim(findings: list[Finding]) -> bool:
    return any(finding.holds for finding in findings)
