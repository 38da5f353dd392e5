"""Findings → a FHIR R4 OperationOutcome (docs/output.md, findings)."""

from __future__ import annotations

from typing import Any

from ..decision import ClaimDecision
from ..rules.findings import Finding

RULE_SYSTEM = "urn:facet-adapter:rule"
CARC_SYSTEM = "https://x12.org/codes/claim-adjustment-reason-codes"


def decision_outcome(decision: ClaimDecision) -> dict[str, Any]:
    """The claim decision's findings, about the session's first facet procedure."""
    return findings_outcome(list(decision.findings), subject=decision.procedures[0] if decision.procedures else None)


def findings_outcome(findings: list[Finding], *, subject: str | None = None) -> dict[str, Any]:
    if not findings:
        text = "No findings: the claim can be submitted."
        if subject:
            text = f"{subject}: {text}"
        return {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "information", "code": "informational", "details": {"text": text}}],
        }
    return {"resourceType": "OperationOutcome", "issue": [finding_issue(f) for f in findings]}


def finding_issue(finding: Finding) -> dict[str, Any]:
    codings: list[dict[str, str]] = [{"system": RULE_SYSTEM, "code": finding.rule_id}]
    if finding.carc:
        codings.append({"system": CARC_SYSTEM, "code": finding.carc})
    issue: dict[str, Any] = {
        "severity": finding.severity,
        "code": finding.issue,
        "details": {"coding": codings, "text": finding.message},
        "diagnostics": (
            f"{finding.citation}. Rule {finding.rule_id} v{finding.rule_version}, pack "
            f"{finding.pack}@{finding.pack_version}"
            + (f"; in force on the date of service: {'; '.join(finding.in_force)}" if finding.in_force else "")
            + f". To fix: {finding.hint}"
        ),
    }
    if finding.expressions:
        issue["expression"] = list(dict.fromkeys(finding.expressions))
    return issue
