"""Findings: why a claim is held or what a coder should look at, each citing its rule."""

from __future__ import annotations

from dataclasses import dataclass

from .packs import IssueType, Severity

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
    # The dated pack sections the rule was judged by, as in force on the date of service
    # ("limits per L38765 revision of 2024-07-07 (in force from 2024-07-07)").
    in_force: tuple[str, ...] = ()

    @property
    def holds(self) -> bool:
        return self.severity == "error"


def holds_claim(findings: list[Finding]) -> bool:
    return any(finding.holds for finding in findings)
