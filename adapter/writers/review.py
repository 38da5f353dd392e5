"""Human-readable text from the claim decision: the coder's pre-claim review and the short `claim`
summary."""

from __future__ import annotations

import textwrap

from ..decision import ClaimDecision
from ..rules.findings import Finding
from . import wording

_WIDTH = 100
_INDENT = " " * 14


def _wrap(text: str, initial: str, subsequent: str) -> list[str]:
    # Never inside a word: resource ids, codes and options (Procedure/mbb-l4l5, --prior-auth) stay whole.
    return textwrap.wrap(
        text,
        _WIDTH,
        initial_indent=initial,
        subsequent_indent=subsequent,
        break_on_hyphens=False,
        break_long_words=False,
    )


def review_text(decision: ClaimDecision) -> str:
    """The coder's pre-claim review as text; the HTML page (adapter/writers/html.py) says the same
    things (adapter/writers/wording.py)."""
    out: list[str] = []
    out.append(f"facet-adapter pre-claim review · profile {wording.pack_text(decision)}")
    out.append(
        f"Session {decision.date.isoformat()} · {wording.patient_text(decision)} · {wording.use_text(decision)} · "
        f"place of service {wording.place_of_service(decision)}"
    )
    out.append("Procedures: " + ", ".join(decision.procedures))
    for fact in wording.profile_lines(decision):
        out.extend(_wrap(fact, "", "  "))
    out.append("")
    out.append("Lines")
    if not decision.lines:
        out.append("  (none)")
    else:
        out.append(f"  {'#':>2}  {'Code':<6} {'Modifiers':<10} {'Qty':>3}  {'Levels':<28} Why")
        for decided in decision.lines:
            line = decided.line
            out.append(
                f"  {decided.sequence:>2}  {line.code:<6} {' '.join(line.modifiers) or '-':<10} {line.quantity:>3}  "
                f"{wording.levels_text(decided)[:28]:<28} {wording.code_reason(decided)}"
            )
            for note in wording.modifier_notes(decided):
                out.extend(_wrap(note.text, " " * 8, " " * 10))
    out.append("")
    out.append("Diagnoses on the claim")
    if not decision.diagnoses:
        out.append("  none")
    for dx in decision.diagnoses:
        lines = wording.lines_pointing_at(decision, dx.sequence)
        pointed = f"lines {', '.join(map(str, lines))}" if lines else "no line"
        out.append(
            f"  {dx.sequence:>2}  {dx.code:<8} {pointed} · from {wording.diagnosis_source(decision, dx.sequence)}"
        )
    out.append("")
    out.append("Evidence")
    if not decision.evidence:
        out.append("  none")
    for entry in decision.evidence:
        when = wording.evidence_when(entry)
        out.append(f"  {entry.sequence:>2}  {entry.text}{' · ' + when if when else ''} · {entry.source}")
    out.append("")
    out.append(f"Findings ({len(decision.findings)})")
    if not decision.findings:
        out.append("  none")
    for finding in decision.findings:
        out.extend(_finding_block(finding))
    out.append("")
    other_patients = wording.other_patients_note(decision)
    if other_patients:
        out.append(other_patients)
    out.append(f"Result: {wording.verdict(decision)} (exit {decision.exit_code})")
    return "\n".join(out) + "\n"


def _finding_block(finding: Finding) -> list[str]:
    head = f"  {finding.severity.upper():<11} {finding.rule_id} (v{finding.rule_version}): "
    lines = _wrap(finding.message, head, _INDENT)
    detail = [f"Rule: {finding.citation}"]
    detail.extend(f"Policy: {url}" for _, url in finding.links)
    carc = wording.carc_sentence(finding)
    if carc:
        detail.append(carc)
    detail.append(f"Fix: {finding.hint}")
    if finding.locations:
        shown = [location.text for location in finding.locations[:4]]
        detail.append("At: " + "; ".join(shown) + (" …" if len(finding.locations) > 4 else ""))
    for text in detail:
        # Addresses are not wrapped: a terminal must be able to open them.
        if text.startswith("Policy: "):
            lines.append(_INDENT + text)
            continue
        lines.extend(_wrap(text, _INDENT, " " * 16))
    return lines


def claim_summary(decision: ClaimDecision) -> str:
    lines = (
        ", ".join(
            f"{d.line.code}{''.join('-' + m for m in d.line.modifiers)} x{d.line.quantity}" for d in decision.lines
        )
        or "no lines"
    )
    counts: dict[str, int] = {}
    for finding in decision.findings:
        counts[finding.severity] = counts.get(finding.severity, 0) + 1
    status = "draft (held)" if decision.held and decision.use == "claim" else "active"
    if decision.held and decision.use == "preauthorization":
        status = "active (request held: error findings)"
    parts = [f"{counts.get(s, 0)} {s}" for s in ("error", "warning", "information") if counts.get(s)]
    summary = f"Claim {status}: {lines}. Findings: {', '.join(parts) or 'none'}."
    held = [f"  {f.severity}: {f.rule_id}: {f.message}" for f in decision.findings if f.severity != "information"]
    return "\n".join([summary, *held]) + "\n"
