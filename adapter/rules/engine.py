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
from typing import NamedTuple

from .. import icd10
from ..coding import Coding
from ..model import Case, ConditionOnset, Diagnosis
from ..spine import spine
from .context import Context, DiagnosisCheck, Hit, ProfileSource
from .dated import InForce, Section
from .findings import SEVERITY_ORDER, Finding
from .packs import Document, Pack, RuleSpec
from .registry import RULE_IDS, RULE_NOT_APPLIED, RULES

__all__ = [
    "Context",
    "DiagnosisCheck",
    "Hit",
    "ProfileSource",
    "RuleFacts",
    "check_case",
    "check_diagnoses",
    "make_finding",
    "rule_facts",
    "sort_findings",
    "supporting_conditions",
]

log = logging.getLogger(__name__)

_ORDER = {rule_id: position for position, rule_id in enumerate(RULE_IDS)}

# The dated pack sections each rule reads: its finding names the versions in force it was judged by
# (docs/input.md, versions in force).
SECTIONS_READ: dict[str, tuple[Section, ...]] = {
    "levels-exceed-limit": ("limits", "coding"),
    "multiple-regions": ("limits", "coding"),
    "guidance-not-covered": ("limits",),
    "frequency-limit": ("limits", "coding"),
    "diagnostic-block-prerequisite": ("limits",),
    "block-interval": ("limits",),
    "pain-duration": ("limits",),
    "conservative-care": ("limits",),
    "dx-not-covered": ("diagnoses",),
    "input-corrected": ("coding",),
}


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


def onset_conditions(case: Case, supporting: list[ConditionOnset]) -> list[ConditionOnset]:
    """The supporting Conditions and the patient's other Conditions with the same ICD-10-CM code,
    whatever their clinical status (refuted and entered-in-error ones are not read): an encounter
    diagnosis recorded on the day takes the onset of the problem-list entry with its code
    (docs/input.md, supporting conditions and pain duration)."""
    codes = {c.code for c in supporting if c.code}
    keys = {c.key for c in supporting}
    return [*supporting, *(c for c in case.coded_conditions if c.code in codes and c.key not in keys)]


def check_case(
    case: Case,
    coding: Coding,
    pack: Pack,
    profile_source: ProfileSource,
    *,
    defaulted_reason: str | None = None,
) -> tuple[list[Finding], DiagnosisCheck]:
    diagnoses = check_diagnoses(case.diagnoses)
    diagnoses.supporting = supporting_conditions(case, coding, pack, diagnoses)
    onsets = [c for c in onset_conditions(case, diagnoses.supporting) if c.onset is not None]
    diagnoses.onset = min(onsets, key=lambda c: c.onset or dt.date.max) if onsets else None
    context = Context(case, coding, pack, profile_source, diagnoses, defaulted_reason=defaulted_reason)
    relevant = _relevant_versions(case, pack)
    findings: list[Finding] = []
    for rule_id, function in RULES:
        try:
            hits = list(function(context))
        except Exception as exc:  # fail safe: a rule that cannot run holds the claim
            log.error("rule %s could not be applied: %s", rule_id, type(exc).__name__)
            hits = []
            findings.append(
                _finding(
                    rule_facts(pack, RULE_NOT_APPLIED),
                    pack,
                    Hit(f"Rule {rule_id} could not be applied ({type(exc).__name__}).", ()),
                    [],
                )
            )
        if hits:
            used = [relevant[section] for section in SECTIONS_READ.get(rule_id, ()) if section in relevant]
            facts = rule_facts(pack, rule_id)
            findings.extend(_finding(facts, pack, hit, used) for hit in hits)
    return sort_findings(findings), context.diagnoses


def _relevant_versions(case: Case, pack: Pack) -> dict[Section, InForce]:
    """The section versions in force that can matter for this session: the coding version only
    when the session has T12-L1 with L1-L2 (the one coding rule that is dated)."""
    found = {used.section: used for used in pack.in_force}
    table = spine()
    joints = {joint for proc in case.session.procedures for joint in proc.joints}
    if not {table.junction, table.partner} <= joints:
        found.pop("coding", None)
    return found


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Errors first, then warnings, then information; within a severity, in registry order (stable)."""
    return sorted(findings, key=lambda f: (SEVERITY_ORDER[f.severity], _ORDER[f.rule_id]))


class RuleFacts(NamedTuple):
    """What a pack says about one rule, worked out once: its settings, its citation in
    words, and the cited documents that have a public address as (title, address)."""

    rule_id: str
    spec: RuleSpec
    citation: str
    links: tuple[tuple[str, str], ...]


def rule_facts(pack: Pack, rule_id: str) -> RuleFacts:
    """The rule's facts in `pack`. They depend on its rules and documents only, which the pack as
    in force on each date of service shares with it: kept for them, for session after session."""
    kept = _FACTS.get(id(pack.rules))
    if kept is None or kept[0] is not pack.rules or kept[1] is not pack.documents:
        if len(_FACTS) >= _FACTS_KEPT:
            _FACTS.clear()
        kept = _FACTS[id(pack.rules)] = (pack.rules, pack.documents, {})
    facts = kept[2].get(rule_id)
    if facts is None:
        spec = pack.rule(rule_id)
        facts = kept[2][rule_id] = RuleFacts(rule_id, spec, pack.citation(rule_id), pack.citation_links(rule_id))
    return facts


# Rule facts by the id of the pack's rules; the rules and documents are kept with them, so an id
# is never taken for another pack's.
_FACTS: dict[int, tuple[dict[str, RuleSpec], dict[str, Document], dict[str, RuleFacts]]] = {}
_FACTS_KEPT = 256


def make_finding(pack: Pack, rule_id: str, hit: Hit, used: list[InForce] | None = None) -> Finding:
    """A rule's hit as a finding, with what the pack says about the rule and the dated versions
    (`used`) it was judged by."""
    return _finding(rule_facts(pack, rule_id), pack, hit, used or [])


def _finding(facts: RuleFacts, pack: Pack, hit: Hit, used: list[InForce]) -> Finding:
    spec = facts.spec
    message = hit.message
    for version in used:
        if not version.confirmed:
            message += f" Unconfirmed for this contractor: {version.why_unconfirmed}."
    return Finding(
        rule_id=facts.rule_id,
        rule_version=spec.version,
        pack=pack.name,
        pack_version=pack.version,
        severity=spec.severity,
        issue=spec.issue,
        title=spec.title,
        message=message,
        citation=facts.citation,
        carc=spec.carc,
        hint=hit.hint or spec.hint,
        expressions=hit.expressions,
        avoids_denial=hit.avoids_denial,
        in_force=tuple(version.label for version in used),
    )
