"""The claim decision: everything a billing format needs, decided once, as data.

The reader, coder and checker answer what was done and what the payer's policy says about it;
this module turns their answers into the claim a coder would send: which diagnoses go on it and
in which order, which of them each line points at, whether it is ready or held, who it names
(patient, subscriber, payer, providers, facility), the prior-authorization number, and the
evidence attached to it with the resources behind each item.

Every writer (the FHIR Claim Bundle, the PAS request, the OperationOutcome, the coder's review,
write-back to a FHIR server, an X12 837P) reads a `ClaimDecision`; none of them decides anything.
Entry point: `decide(...)`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Literal, NamedTuple, cast

from .coding import Coding, coding_tables
from .fhir.ingest import ResourceIndex
from .model import Case, ClaimLine, Diagnosis, EvidenceItem, Parties, Party, Use, label_guidance
from .read.locations import Location, Locator, locator_of
from .read.uses import DISABILITY_LOINC, PAIN_LOINC
from .rules.engine import DiagnosisCheck, rule_facts, sort_findings
from .rules.findings import Finding, holds_claim
from .rules.packs import Pack, dx_regions
from .tables import load_toml

# Names derived from this namespace are the adapter's stable identifiers: the same input always
# gives the same Claim identifier, which makes write-back idempotent (docs/output.md, identifier).
NAMESPACE = uuid.UUID("5b0f3b8e-52d1-4d8e-9a3c-7f3f0e0f4a61")
_NAMESPACE_BYTES = NAMESPACE.bytes
LOINC = "http://loinc.org"
# Findings as displayed, kept in the input's index (with the pack they were displayed for).
_SHOWN = "displayed-findings"
_Shown = tuple[object, object, Finding]  # (the pack's rules, its documents, the finding displayed)

Status = Literal["ready", "held"]
InformationCategory = Literal["onset", "info", "related"]
EvidenceKind = Literal[
    "onset", "pain-score", "disability-score", "conservative-care", "prior-block", "block-relief", "guidance"
]
# What kind of document an evidence item is, in words any attachment format can map to its own codes
# (a PAS request's documentInformation, an 837P's PWK report type).
DocumentKind = Literal[
    "medical-history", "symptoms", "functional-status", "treatment-history", "procedure-report", "progress-report"
]
DOCUMENT_KINDS: dict[EvidenceKind, DocumentKind] = {
    "onset": "medical-history",
    "pain-score": "symptoms",
    "disability-score": "functional-status",
    "conservative-care": "treatment-history",
    "prior-block": "procedure-report",
    "block-relief": "progress-report",
    "guidance": "procedure-report",
}
# How soon the service is needed, from the order's priority (a prior-authorization request's level of
# service): stat is an emergency, urgent and asap are urgent, anything else is elective.
LevelOfService = Literal["elective", "urgent", "emergency"]
_LEVELS: dict[str, LevelOfService] = {"stat": "emergency", "urgent": "urgent", "asap": "urgent"}


class DecidedDiagnosis(NamedTuple):
    sequence: int  # its position on the claim, from 1
    code: str  # dotted ICD-10-CM
    diagnosis: Diagnosis  # where it was read


class DecidedLine(NamedTuple):
    sequence: int
    line: ClaimLine
    description: str | None  # the CPT code's short description
    pointers: tuple[int, ...]  # diagnosis sequences, at most four, covered and region-matched first
    information: tuple[int, ...]  # evidence sequences
    care_team: tuple[int, ...]  # care-team sequences (the rendering practitioner)
    trace_number: str = ""  # the line's own stable identifier (a uuid), for formats that trace items

    @property
    def code(self) -> str:
        return self.line.code

    @property
    def text(self) -> str:
        """`64493-50-KX`, with ` x2` when the quantity is not one."""
        text = "-".join([self.line.code, *self.line.modifiers])
        return text if self.line.quantity == 1 else f"{text} x{self.line.quantity}"


class EvidenceEntry(NamedTuple):
    """One item of evidence that supports medical necessity, and the resource it comes from."""

    sequence: int
    kind: EvidenceKind
    category: InformationCategory  # FHIR claim information category
    text: str
    source: str  # the key of the resource behind it
    code: tuple[str, str] | None = None  # (system, code) of what was measured
    date: dt.date | None = None
    period: tuple[dt.date | None, dt.date | None] | None = None

    @property
    def document(self) -> DocumentKind:
        return DOCUMENT_KINDS[self.kind]


@dataclass(frozen=True, slots=True)
class ClaimDecision:
    identifier: str  # uuid5 of patient, date, session procedures and use
    use: Use
    status: Status
    created: dt.datetime
    patient: str
    date: dt.date
    procedures: tuple[str, ...]  # the session's facet procedure keys, sorted
    place_of_service: str
    place_of_service_source: Literal["option", "location", "default"]
    pack: str
    pack_version: str
    pack_title: str
    lines: tuple[DecidedLine, ...]
    diagnoses: tuple[DecidedDiagnosis, ...]
    parties: Parties
    coverage: str | None
    insurer: str | None  # the payer Organization's key, when the record has one
    provider: str | None
    care_team: bool  # a practitioner renders: named on the claim's care team and on its lines
    prior_auth: str | None
    prior_auth_source: str | None  # "option" or the ClaimResponse's key
    evidence: tuple[EvidenceEntry, ...]
    findings: tuple[Finding, ...]
    level_of_service: LevelOfService = "elective"
    pack_reason: str = ""  # how the pack was chosen (--payer, the Coverage, the place of service, a default)
    # The pack's dated sections as in force on the date of service ("limits per L38765 ...").
    in_force: tuple[str, ...] = ()

    @property
    def held(self) -> bool:
        return self.status == "held"

    @property
    def claim_status(self) -> Literal["active", "draft"]:
        """FHIR Claim.status: a held claim is a draft; a prior-authorization request is always
        active (the Da Vinci PAS profile fixes it) and shows a hold only in the findings."""
        return "draft" if self.held and self.use == "claim" else "active"

    @property
    def exit_code(self) -> int:
        return 1 if self.held else 0

    @property
    def line_texts(self) -> list[str]:
        return [line.text for line in self.lines]


def claim_identifier(patient: str, date: dt.date, procedures: tuple[str, ...] | list[str], use: Use) -> str:
    basis = "|".join([patient, date.isoformat(), *procedures, use])
    return name_uuid(basis)


def name_uuid(name: str) -> str:
    """`str(uuid.uuid5(NAMESPACE, name))` without the UUID object (RFC 4122, 4.3: the SHA-1 of the
    namespace and the name, with version 5 and the RFC variant): a claim takes a dozen of them."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode(), usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def decide(
    case: Case,
    coding: Coding,
    findings: list[Finding],
    diagnoses: DiagnosisCheck,
    pack: Pack,
    *,
    now: dt.datetime | None = None,
    index: ResourceIndex | None = None,
    pack_reason: str = "",
) -> ClaimDecision:
    """The claim decision. With the input's `index`, each finding's expressions are also given as
    a coder reads them (resource and element); without it, as the resource type and element."""
    parties = case.parties or Parties(patient=Party(key=case.patient))
    written = diagnoses.valid[: pack.diagnoses.max_on_claim]
    decided_dx = tuple(DecidedDiagnosis(i, dx.code, dx) for i, dx in enumerate(written, start=1))
    evidence = _evidence(case, diagnoses)
    information = tuple(entry.sequence for entry in evidence)
    # Only a practitioner in the record can be named on the care team (a prior-authorization
    # request names the requester as provider only).
    care_team = (
        case.use == "claim"
        and parties.provider is not None
        and parties.provider.resource_type in ("Practitioner", "PractitionerRole")
    )
    descriptions = coding_tables().descriptions
    identifier = claim_identifier(case.patient, case.session.date, case.session.keys, case.use)
    locator = locator_of(index) if index is not None else None
    # A patient's sessions raise many of the same findings (the same NPI, the same defaulted payer).
    shown = cast("dict[Finding, _Shown]", index.memo.setdefault(_SHOWN, {})) if index is not None else {}
    lines = tuple(
        DecidedLine(
            sequence=i,
            line=line,
            description=descriptions.get(line.code),
            pointers=_pointers(line, written, pack),
            information=information,
            care_team=(1,) if care_team else (),
            trace_number=name_uuid(f"item:{identifier}:{i}"),
        )
        for i, line in enumerate(coding.lines, start=1)
    )
    priorities = {p.priority for p in case.session.procedures if p.priority}
    return ClaimDecision(
        identifier=identifier,
        use=case.use,
        status="held" if holds_claim(findings) else "ready",
        created=(now or dt.datetime.now(dt.UTC)).replace(microsecond=0),
        patient=case.patient,
        date=case.session.date,
        procedures=tuple(case.session.keys),
        place_of_service=case.place_of_service,
        place_of_service_source=case.place_of_service_source,
        pack=pack.name,
        pack_version=pack.version,
        pack_title=pack.title,
        lines=lines,
        diagnoses=decided_dx,
        parties=parties,
        coverage=case.coverage,
        insurer=parties.payer.key if parties.payer is not None else None,
        provider=case.provider,
        care_team=care_team,
        prior_auth=case.evidence.prior_auth,
        prior_auth_source=case.evidence.prior_auth_source,
        evidence=evidence,
        findings=tuple(_displayed(finding, pack, locator, shown) for finding in findings),
        level_of_service=next((_LEVELS[p] for p in ("stat", "urgent", "asap") if p in priorities), "elective"),
        pack_reason=pack_reason,
        in_force=tuple(used.label for used in pack.in_force),
    )


def _displayed(finding: Finding, pack: Pack, locator: Locator | None, shown: dict[Finding, _Shown]) -> Finding:
    kept = shown.get(finding)
    # What display adds depends on the pack's rules and documents (the links), not its dated parts.
    if kept is None or kept[0] is not pack.rules or kept[1] is not pack.documents:
        kept = shown[finding] = (pack.rules, pack.documents, _for_display(finding, pack, locator))
    return kept[2]


def _for_display(finding: Finding, pack: Pack, locator: Locator | None) -> Finding:
    """The finding with what a review shows beside it: links to the cited documents, the CARC in
    words and the input elements in a coder's words."""
    locations: list[Location] = []
    for expression in dict.fromkeys(finding.expressions):
        if locator is not None:
            locations.extend(locator.locate(expression, finding.message))
        else:
            locations.extend(Locator.unlocated(expression))
    return dataclasses.replace(
        finding,
        links=rule_facts(pack, finding.rule_id).links,
        carc_text=carc_text(finding.carc),
        locations=tuple(dict.fromkeys(locations)),
    )


@cache
def _carc_table() -> dict[str, str]:
    return {str(code): str(text) for code, text in load_toml("carc.toml").get("codes", {}).items()}


def carc_text(code: str | None) -> str | None:
    """A claim adjustment reason code in words (mappings/carc.toml), when the table has it."""
    return _carc_table().get(code) if code else None


def with_findings(decision: ClaimDecision, extra: Iterable[Finding]) -> ClaimDecision:
    """The decision with the findings an output format adds (the 837P's missing data, docs/output.md,
    X12 837P): they join the others in finding order, and the status follows them as in `decide`."""
    added = tuple(extra)
    if not added:
        return decision
    findings = sort_findings([*decision.findings, *added])
    return dataclasses.replace(decision, findings=tuple(findings), status="held" if holds_claim(findings) else "ready")


def _pointers(line: ClaimLine, diagnoses: list[Diagnosis], pack: Pack) -> tuple[int, ...]:
    """At most four diagnosis pointers, covered and region-matched codes first."""
    ranked = sorted(
        range(len(diagnoses)),
        key=lambda i: (
            0
            if pack.covered_for(diagnoses[i].code, line.region, line.family)
            else 1
            if line.region in dx_regions(diagnoses[i].code)
            else 2,
            i,
        ),
    )
    return tuple(i + 1 for i in ranked[: pack.diagnoses.max_pointers_per_line])


def _evidence(case: Case, diagnoses: DiagnosisCheck) -> tuple[EvidenceEntry, ...]:
    """Onset, the latest pain and disability scores, conservative care, earlier blocks with their
    relief, and the guidance of each session procedure."""
    entries: list[EvidenceEntry] = []

    def add(
        kind: EvidenceKind,
        category: InformationCategory,
        text: str,
        source: str | None,
        *,
        code: tuple[str, str] | None = None,
        date: dt.date | None = None,
        period: tuple[dt.date | None, dt.date | None] | None = None,
    ) -> None:
        if source is None:
            return
        entries.append(EvidenceEntry(len(entries) + 1, kind, category, text, source, code, date, period))

    onset = diagnoses.onset
    if onset is not None and onset.onset is not None:
        add("onset", "onset", f"Onset of {onset.code or 'the condition treated'}", onset.key, date=onset.onset)
    if case.evidence.pain_scores:
        latest = case.evidence.pain_scores[-1]
        add(
            "pain-score",
            "info",
            _score_text("Pain score (0-10)", latest),
            latest.source_key,
            code=(LOINC, PAIN_LOINC),
            date=latest.date,
        )
    if case.evidence.disability_scores:
        latest_disability = max(case.evidence.disability_scores, key=lambda item: item.date or dt.date.min)
        add(
            "disability-score",
            "info",
            _score_text("Oswestry disability index", latest_disability),
            latest_disability.source_key,
            code=(LOINC, DISABILITY_LOINC),
            date=latest_disability.date,
        )
    for care in case.evidence.conservative_care:
        add(
            "conservative-care",
            "info",
            f"Conservative care tried: {care.text}",
            care.source_key,
            period=(care.date, care.end) if care.date else None,
        )
    for session in case.history:
        for proc in session.procedures:
            add(
                "prior-block",
                "related",
                f"Earlier facet procedure ({proc.category}) on {session.date.isoformat()}",
                proc.key,
                date=session.date,
            )
            relief = case.reliefs.get(proc.key)
            if relief is not None and relief.percent is not None and relief.source_keys:
                add(
                    "block-relief",
                    "info",
                    f"Relief after the {session.date.isoformat()} block: {relief.percent:.0f}%",
                    relief.source_keys[-1],
                )
    for proc in case.session.procedures:
        source = next(iter(proc.guidance_resources), proc.key)
        add("guidance", "info", f"Image guidance: {label_guidance(proc.guidance)}", source)
    return tuple(entries)


def _score_text(name: str, item: EvidenceItem) -> str:
    value = "value missing" if item.value is None else f"{item.value:g}"
    return f"{name}: {value}"
