"""Check: model + lines + payer pack → findings (docs/output.md, rule ids); each pack's settings are
listed in docs/rules.md.

Entry point: `check_case(case, coding, pack, profile_source)`. Each rule is a small named
function in `adapter.rules`, registered under its rule id; the pack supplies its version,
severity, citation, CARC and limits. A rule that fails to run holds the claim with
`rule-not-applied` instead of being skipped.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from . import icd10
from .code import Coding
from .findings import SEVERITY_ORDER, Finding
from .model import Case, ConditionOnset, Diagnosis
from .packs import RULE_IDS, Pack

log = logging.getLogger(__name__)

ProfileSource = Literal["option", "coverage", "default"]


@dataclass(frozen=True, slots=True)
class Hit:
    """One occurrence of a rule: the message and where in the input it comes from."""

    message: str
    expressions: tuple[str, ...] = ()


@dataclass(slots=True)
class DiagnosisCheck:
    valid: list[Diagnosis] = field(default_factory=list)
    invalid: list[tuple[Diagnosis, str]] = field(default_factory=list)  # (diagnosis, status)
    # The Conditions pain duration is measured from, and the earliest onset among them: computed
    # once, for the pain-duration rule and the Claim's onset supporting information alike.
    supporting: list[ConditionOnset] = field(default_factory=list)
    onset: ConditionOnset | None = None


@dataclass(slots=True)
class Context:
    case: Case
    coding: Coding
    pack: Pack
    profile_source: ProfileSource
    diagnoses: DiagnosisCheck
    memo: dict[int, Any] = field(default_factory=dict)  # per-run results rules share (history groups)


RuleFunction = Callable[[Context], Iterable[Hit]]
_REGISTRY: dict[str, RuleFunction] = {}


def rule(rule_id: str) -> Callable[[RuleFunction], RuleFunction]:
    if rule_id not in RULE_IDS:
        raise ValueError(f"unknown rule id {rule_id}")

    def register(function: RuleFunction) -> RuleFunction:
        _REGISTRY[rule_id] = function
        return function

    return register


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
    from . import rules  # noqa: F401  (registers the rule functions)

    diagnoses = check_diagnoses(case.diagnoses)
    diagnoses.supporting = supporting_conditions(case, coding, pack, diagnoses)
    onsets = [c for c in diagnoses.supporting if c.onset is not None]
    diagnoses.onset = min(onsets, key=lambda c: c.onset or dt.date.max) if onsets else None
    context = Context(case, coding, pack, profile_source, diagnoses)
    findings: list[Finding] = []
    for rule_id in RULE_IDS:
        function = _REGISTRY.get(rule_id)
        if function is None:
            continue
        try:
            hits = list(function(context))
        except Exception as exc:  # fail safe: a rule that cannot run holds the claim
            log.error("rule %s could not be applied: %s", rule_id, type(exc).__name__)
            hits = []
            findings.append(
                _finding(
                    pack,
                    "rule-not-applied",
                    Hit(f"Rule {rule_id} could not be applied ({type(exc).__name__}).", ()),
                )
            )
        findings.extend(_finding(pack, rule_id, hit) for hit in hits)
    findings.sort(key=lambda f: (SEVERITY_ORDER[f.severity], RULE_IDS.index(f.rule_id)))
    return findings, context.diagnoses


def _finding(pack: Pack, rule_id: str, hit: Hit) -> Finding:
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
        hint=spec.hint,
        expressions=hit.expressions,
    )
