"""Human-readable text: the coder's pre-claim review table and the short `claim` summary."""

from __future__ import annotations

import textwrap

from .pipeline import Result
from .rules.findings import Finding
from .rules.packs import Pack

_WIDTH = 100


def review_text(result: Result) -> str:
    case, pack = result.case, result.pack
    out: list[str] = []
    out.append(f"facet-adapter pre-claim review · profile {pack.name}@{pack.version} ({pack.title})")
    pos_from = {"option": "from --pos", "location": "from the encounter's location", "default": "defaulted"}
    out.append(
        f"Session {case.session.date.isoformat()} · {case.patient} · use {case.use} · place of service "
        f"{case.place_of_service} ({pos_from[case.place_of_service_source]})"
    )
    out.append("Procedures: " + ", ".join(case.session.keys))
    out.append("")
    out.append("Lines")
    if not result.coding.lines:
        out.append("  (none)")
    else:
        out.append(f"  {'#':>2}  {'Code':<6} {'Modifiers':<10} {'Qty':>3}  {'Levels':<28} Why")
        for number, line in enumerate(result.coding.lines, start=1):
            levels = ", ".join(level.level.label for level in line.levels)
            side = line.side or "side unknown"
            why = line.rationale.split(" (group")[0].split(": ", 1)[-1]
            out.append(
                f"  {number:>2}  {line.code:<6} {' '.join(line.modifiers) or '-':<10} {line.quantity:>3}  "
                f"{(levels + ' ' + side)[:28]:<28} {why}"
            )
    out.append("")
    written = result.diagnoses.valid[: pack.diagnoses.max_on_claim]
    out.append("Diagnoses on the claim: " + (", ".join(dx.code for dx in written) or "none"))
    out.append("")
    errors = sum(1 for f in result.findings if f.severity == "error")
    out.append(f"Findings ({len(result.findings)})")
    if not result.findings:
        out.append("  none")
    for finding in result.findings:
        out.extend(_finding_block(finding))
    out.append("")
    verdict = f"HOLD: {errors} error finding(s) must be resolved" if errors else "READY: no error findings"
    out.append(f"Result: {verdict} (exit {result.exit_code})")
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


def claim_summary(result: Result) -> str:
    lines = (
        ", ".join(
            f"{line.code}{''.join('-' + m for m in line.modifiers)} x{line.quantity}" for line in result.coding.lines
        )
        or "no lines"
    )
    counts: dict[str, int] = {}
    for finding in result.findings:
        counts[finding.severity] = counts.get(finding.severity, 0) + 1
    status = "draft (held)" if result.held and result.case.use == "claim" else "active"
    if result.held and result.case.use == "preauthorization":
        status = "active (request held: error findings)"
    parts = [f"{counts.get(s, 0)} {s}" for s in ("error", "warning", "information") if counts.get(s)]
    summary = f"Claim {status}: {lines}. Findings: {', '.join(parts) or 'none'}."
    held = [f"  {f.severity}: {f.rule_id}: {f.message}" for f in result.findings if f.severity != "information"]
    return "\n".join([summary, *held]) + "\n"


def rules_text(pack: Pack) -> str:
    out = [f"{pack.name}@{pack.version}: {pack.title}", f"extends: {' -> '.join(pack.chain)}", ""]
    out.append(f"{'Rule':<31} {'Ver':>3}  {'Severity':<11} {'CARC':<5} Citation")
    for rule_id, spec in pack.rules.items():
        citation = pack.citation(rule_id)
        wrapped = textwrap.wrap(citation, 70) or [""]
        out.append(f"{rule_id:<31} {spec.version:>3}  {spec.severity:<11} {spec.carc or '-':<5} {wrapped[0]}")
        out.extend(" " * 55 + more for more in wrapped[1:])
    return "\n".join(out) + "\n"
