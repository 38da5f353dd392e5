"""Check: model + lines + payer pack → findings (docs/output.md, rule ids); each pack's settings are
listed in docs/rules.md.

Entry point: `check_case(case, coding, pack, profile_source)`. It runs every rule of the
registry (`adapter.rules.registry`) in order; the pack supplies each rule's version, severity,
citation and CARC, and the limits. A rule that fails to run holds the claim with
`rule-not-applied` instead of being skipped.
"""

from __future__ import annotations

import datetime as dt
import logging

from .. import icd10
from ..coding import Coding
from ..model import Case, ConditionOnset, Diagnosis
from .context import Context, DiagnosisCheck, Hit, ProfileSource
from .findings import SEVERITY_ORDER, Finding
from .packs import Pack
from .registry import RULE_IDS, RULE_NOT_APPLIED, RULES

__all__ = [
    "Context",
    "DiagnosisCheck",
    "Hit",
    "ProfileSource",
    "check_case",
    "check_diagnoses",
    "make_finding",
    "sort_findings",
    "supporting_conditions",
]

log = logging.getLogger(__name__)

_ORDER = {rule_id: position for position, rule_id in enumerate(RULE_IDS)}


def check_diagnoses(diagnoses: list[Diagnosis]) -> DiagnosisCheck:
    """Split diagnoses into valid billable ICD-10-CM codes and the rest (which are not written)."""
    result = DiagnosisCheck()
    for dx in diagnoses:
        status = icd10.status(dx.code)
        if status == "billable":
            result.valid.append(dx)
        else:
            result.invalid.append((dx, status))
    return result


def supporting_conditions(case: Case, coding: Coding, pack: Pack, diagnoses: DiagnosisCheck) -> list[ConditionOnset]:
    """The reason Conditions, else the covered ones, else all
    (docs/input.md, supporting conditions and pain duration)."""
    reasons = [c for c in case.conditions if c.is_reason]
    valid = {dx.code for dx in diagnoses.valid}
    covered = [
        c
        for c in case.conditions
        if c.code in valid and any(pack.covered_for(c.code, g.region, g.family) for g in coding.groups)
    ]
    return reasons or covered or list(case.conditions)


def check_case(
    case: Case, coding: Coding, pack: Pack, profile_source: ProfileSource
) -> tuple[list[Finding], DiagnosisCheck]:
    diagnoses = check_diagnoses(case.diagnoses)
    diagnoses.supporting = supporting_conditions(case, coding, pack, diagnoses)
    onsets = [c for c in diagnoses.supporting if c.onset is not None]
    diagnoses.onset = min(onsets, key=lambda c: c.onset or dt.date.max) if onsets else None
    context = Context(case, coding, pack, profile_source, diagnoses)
    findings: list[Finding] = []
    for rule_id, function in RULES:
        try:
            hits = list(function(context))
        except Exception as exc:  # fail safe: a rule that cannot run holds the claim
            log.error("rule %s could not be applied: %s", rule_id, type(exc).__name__)
            hits = []
            findings.append(
                make_finding(
                    pack,
                    RULE_NOT_APPLIED,
                    Hit(f"Rule {rule_id} could not be applied ({type(exc).__name__}).", ()),
                )
            )
        findings.extend(make_finding(pack, rule_id, hit) for hit in hits)
    return sort_findings(findings), context.diagnoses


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Errors first, then warnings, then information; within a severity, in registry order (stable)."""
    return sorted(findings, key=lambda f: (SEVERITY_ORDER[f.severity], _ORDER[f.rule_id]))


def make_finding(pack: Pack, rule_id: str, hit: Hit) -> Finding:
    """A rule's hit as a finding, with what the pack says about the rule."""
    spec = pack.rule(rule_id)
    return Finding(
        rule_id=rule_id,
        rule_version=spec.version,
        pack=pack.name,
        pack_version=pack.version,
        severity=spec.severity,
        issue=spec.issue,
        title=spec.title,
        message=hit.message,
        citation=pack.citation(rule_id),
        carc=spec.carc,
        hint=hit.hint or spec.hint,
        expressions=hit.expressions,
        avoids_denial=hit.avoids_denial,
    )
