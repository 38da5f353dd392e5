"""The words of the coder's review, shared by its formats (the text review, the HTML page), so they
say the same things: the verdict, where the place of service came from, each line's levels and
modifiers with why, the CARC sentence, the findings by severity, and where each one is in the
input. Nothing here decides: every fact comes from the `ClaimDecision`."""

from __future__ import annotations

from typing import NamedTuple

from ..decision import ClaimDecision, DecidedLine, EvidenceEntry
from ..rules.findings import Finding

SEVERITY_HEADINGS = (("error", "Errors"), ("warning", "Warnings"), ("information", "Information"))

_POS_SOURCE = {"option": "from --pos", "location": "from the encounter's location", "default": "defaulted"}
_USE = {"claim": "claim", "preauthorization": "prior authorization request"}


class ModifierNote(NamedTuple):
    """A modifier on a line and why, or (`present` False) one a coder may expect and why it is not there."""

    modifier: str
    present: bool
    reason: str

    @property
    def text(self) -> str:
        return f"{self.modifier}: {self.reason}" if self.present else f"no {self.modifier}: {self.reason}"


def verdict(decision: ClaimDecision) -> str:
    errors = sum(1 for finding in decision.findings if finding.severity == "error")
    if errors:
        noun = "finding" if errors == 1 else "findings"
        return f"HOLD: {errors} error {noun} must be resolved before the claim is sent"
    return "READY: no error findings"


def status_text(decision: ClaimDecision) -> str:
    """What happens to the claim: `held` or `ready`, and the FHIR Claim status it is written with."""
    if decision.held and decision.use == "preauthorization":
        return "held (the request stays active: the PAS profile fixes its status)"
    return f"{decision.status} (Claim status {decision.claim_status})"


def place_of_service(decision: ClaimDecision) -> str:
    return f"{decision.place_of_service} ({_POS_SOURCE[decision.place_of_service_source]})"


def use_text(decision: ClaimDecision) -> str:
    return _USE[decision.use]


def pack_text(decision: ClaimDecision) -> str:
    return f"{decision.pack}@{decision.pack_version} ({decision.pack_title})"


def profile_lines(decision: ClaimDecision) -> list[str]:
    """How the pack was chosen, and the pack's dated rules as in force on the date of service."""
    lines = [f"Profile: {decision.pack_reason}"] if decision.pack_reason else []
    if decision.in_force:
        lines.append(f"Rules in force on {decision.date.isoformat()}: " + "; ".join(decision.in_force))
    return lines


def other_patients_note(decision: ClaimDecision) -> str | None:
    """What to do when the input held other patients' sessions (several-patients)."""
    if any(finding.rule_id == "several-patients" for finding in decision.findings):
        return "Other patients' sessions were not coded: use --patient to choose a patient, or bulk for every session."
    return None


def patient_text(decision: ClaimDecision) -> str:
    """The patient by name and key, as the record names them."""
    party = decision.parties.patient
    name = party.display
    return name if name == decision.patient else f"{name} ({decision.patient})"


def levels_text(line: DecidedLine) -> str:
    levels = ", ".join(level.level.label for level in line.line.levels)
    return f"{levels} {line.line.side or 'side unknown'}"


def code_reason(line: DecidedLine) -> str:
    """Why the line has its code: the coding-table row's description."""
    return line.line.rationale.split(" (group")[0].split(": ", 1)[-1]


def modifier_notes(line: DecidedLine) -> list[ModifierNote]:
    notes = [
        ModifierNote(m, True, line.line.modifier_reasons[m])
        for m in line.line.modifiers
        if m in line.line.modifier_reasons
    ]
    notes.extend(ModifierNote(m, False, reason) for m, reason in line.line.modifiers_left_off.items())
    return notes


def lines_pointing_at(decision: ClaimDecision, sequence: int) -> list[int]:
    return [line.sequence for line in decision.lines if sequence in line.pointers]


def diagnosis_source(decision: ClaimDecision, sequence: int) -> str:
    """Where a diagnosis on the claim was read, in a coder's words."""
    diagnosis = next(dx.diagnosis for dx in decision.diagnoses if dx.sequence == sequence)
    if diagnosis.source_key is None:
        return f"reason code of {diagnosis.owner}" if diagnosis.owner else "a reason code"
    if diagnosis.from_reason:
        return f"{diagnosis.source_key} (the procedure's reason)"
    if diagnosis.from_encounter:
        return f"{diagnosis.source_key} (an encounter diagnosis)"
    return diagnosis.source_key


def evidence_when(entry: EvidenceEntry) -> str:
    if entry.period is not None:
        start, end = entry.period
        return f"{start.isoformat() if start else '…'} to {end.isoformat() if end else 'ongoing'}"
    return entry.date.isoformat() if entry.date is not None else ""


def by_severity(decision: ClaimDecision) -> list[tuple[str, str, list[Finding]]]:
    """(severity, heading, findings) for each severity that has findings, errors first."""
    groups = []
    for severity, heading in SEVERITY_HEADINGS:
        found = [finding for finding in decision.findings if finding.severity == severity]
        if found:
            groups.append((severity, heading, found))
    return groups


def carc_sentence(finding: Finding) -> str | None:
    """The denial a payer would likely give, in words; for a finding whose cause the adapter
    already corrected on the claim, the denial the correction avoids."""
    if not finding.carc:
        return None
    code = f"CARC {finding.carc}" + (f" ({finding.carc_text.rstrip('.')})" if finding.carc_text else "")
    if finding.avoids_denial:
        return f"Denial avoided: as the record has it, a payer would likely deny it with {code}."
    return f"A payer would likely deny it with {code}."


def rule_text(finding: Finding) -> str:
    return f"{finding.rule_id} v{finding.rule_version}, pack {finding.pack}@{finding.pack_version}"
