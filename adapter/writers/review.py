"""Human-readable text from the claim decision: the coder's pre-claim review table and the short
`claim` summary."""

from __future__ import annotations

import textwrap

from ..decision import ClaimDecision
from ..rules.findings import Finding

_WIDTH = 100


def review_text(decision: ClaimDecision) -> str:
    out: list[str] = []
    out.append(
        f"facet-adapter pre-claim review · profile {decision.pack}@{decision.pack_version} ({decision.pack_title})"
    )
    pos_from = {"option": "from --pos", "location": "from the encounter's location", "default": "defaulted"}
    out.append(
        f"Session {decision.date.isoformat()} · {decision.patient} · use {decision.use} · place of service "
        f"{decision.place_of_service} ({pos_from[decision.place_of_service_source]})"
    )
    out.append("Procedures: " + ", ".join(decision.procedures))
    if decision.pack_reason:
        out.extend(textwrap.wrap(f"Profile: {decision.pack_reason}", _WIDTH, subsequent_indent="  "))
    if decision.in_force:
        out.extend(
            textwrap.wrap(
                f"Rules in force on {decision.date.isoformat()}: " + "; ".join(decision.in_force),
                _WIDTH,
                subsequent_indent="  ",
            )
        )
    out.append("")
    out.append("Lines")
    if not decision.lines:
        out.append("  (none)")
    else:
        out.append(f"  {'#':>2}  {'Code':<6} {'Modifiers':<10} {'Qty':>3}  {'Levels':<28} Why")
        for number, line in ((decided.sequence, decided.line) for decided in decision.lines):
            levels = ", ".join(level.level.label for level in line.levels)
            side = line.side or "side unknown"
            why = line.rationale.split(" (group")[0].split(": ", 1)[-1]
            out.append(
                f"  {number:>2}  {line.code:<6} {' '.join(line.modifiers) or '-':<10} {line.quantity:>3}  "
                f"{(levels + ' ' + side)[:28]:<28} {why}"
            )
    out.append("")
    out.append("Diagnoses on the claim: " + (", ".join(dx.code for dx in decision.diagnoses) or "none"))
    out.append("")
    errors = sum(1 for f in decision.findings if f.severity == "error")
    out.append(f"Findings ({len(decision.findings)})")
    if not decision.findings:
        out.append("  none")
    for finding in decision.findings:
        out.extend(_finding_block(finding))
    out.append("")
    verdict = f"HOLD: {errors} error finding(s) must be resolved" if errors else "READY: no error findings"
    if any(f.rule_id == "several-patients" for f in decision.findings):
        out.append(
            "Other patients' sessions were not coded: use --patient to choose a patient, or bulk for every session."
        )
    out.append(f"Result: {verdict} (exit {decision.exit_code})")
    return "\n".join(out) + "\n"


def _finding_block(finding: Finding) -> list[str]:
    head = f"  {finding.severity.upper():<11} {finding.rule_id} (v{finding.rule_version}): "
    lines = textwrap.wrap(finding.message, _WIDTH, initial_indent=head, subsequent_indent=" " * 14)
    detail = [
        f"Rule: {finding.citation}",
        f"Fix: {finding.hint}",
    ]
    if finding.carc:
        detail.append(f"Payer would likely deny with CARC {finding.carc}.")
    if finding.expressions:
        detail.append("At: " + "; ".join(finding.expressions[:4]) + (" …" if len(finding.expressions) > 4 else ""))
    for text in detail:
        lines.extend(textwrap.wrap(text, _WIDTH, initial_indent=" " * 14, subsequent_indent=" " * 16))
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
