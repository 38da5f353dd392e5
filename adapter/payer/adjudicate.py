"""The sandbox payer's decision on a request (docs/payer.md, the sandbox payer): the library reads the
Bundle it receives, codes and checks the session with the same rule packs, and each submitted line is
approved, denied (with a CARC) or, on a prior-authorization request, pended for documentation.

Entry points: `adjudicate(bundle, settings, reviewed=False)` → `Verdict`, `authorization_number(member,
day)` and `verify_authorization(number, member, day)`.

Deterministic: the same request always gives the same verdict and the same authorization number.
The number is derived from the member id and the planned date of service (`FA` + date + six check
characters), so a claim's number can be verified without the payer remembering it, across restarts.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import orjson

from ..decision import ClaimDecision, DecidedLine
from ..fhir.ingest import ResourceIndex, parse_bytes
from ..fhir.values import codings, dicts, get_dict, get_str, parse_instant
from ..model import Use
from ..pipeline import Options, Result, process_index
from ..rules.findings import Finding
from .policy import AdjudicationPolicy, FeeTable, adjudication_policy, fee_table

PAS_EXT = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"
AUTH_VALID_BEFORE = dt.timedelta(days=30)
AUTH_VALID_AFTER = dt.timedelta(days=90)

LineDecision = Literal["approved", "denied", "pended"]


@dataclass(frozen=True, slots=True)
class PayerSettings:
    pack: str | None = None  # the payer's rule pack; default: chosen from the Coverage, as the adapter does
    review_seconds: float = 5.0  # how long a pended request waits for its reviewer


@dataclass(frozen=True, slots=True)
class LineVerdict:
    sequence: int
    code: str | None
    modifiers: tuple[str, ...]
    quantity: int
    trace_number: str | None
    decision: LineDecision
    carc: str | None = None
    rarc: str | None = None
    rules: tuple[str, ...] = ()  # the findings behind a denial or a pend
    charge: Decimal | None = None
    allowed: Decimal | None = None
    benefit: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    use: str
    claim: dict[str, Any]
    claim_url: str
    claim_identifier: str | None
    lines: tuple[LineVerdict, ...]
    findings: tuple[Finding, ...]
    pack: str
    received: str  # the request's timestamp: the answer's `created`
    authorization: tuple[str, dt.date, dt.date] | None  # number, start, end, when a line is approved
    notes: tuple[str, ...]
    currency: str

    @property
    def pended(self) -> bool:
        return any(line.decision == "pended" for line in self.lines)


def authorization_number(member: str, day: dt.date) -> str:
    digest = hashlib.sha256(f"facet-adapter sandbox payer|{member}|{day.isoformat()}".encode()).digest()
    return f"FA{day:%Y%m%d}{base64.b32encode(digest).decode()[:6]}"


def verify_authorization(number: str, member: str | None, day: dt.date) -> bool:
    """Whether `number` is one this payer issued for `member` and covers `day`."""
    if member is None or len(number) != 16 or not number.startswith("FA"):
        return False
    try:
        planned = dt.datetime.strptime(number[2:10], "%Y%m%d").date()
    except ValueError:
        return False
    return (
        authorization_number(member, planned) == number
        and planned - AUTH_VALID_BEFORE <= day <= planned + AUTH_VALID_AFTER
    )


def adjudicate(bundle: dict[str, Any], settings: PayerSettings, *, reviewed: bool = False) -> Verdict:
    """Decide a request Bundle (its first entry the Claim). Raises InputError subclasses when the
    library cannot read it (the app answers 422)."""
    claim_entry = bundle["entry"][0]
    claim = claim_entry["resource"]
    use: Use = "preauthorization" if claim.get("use") == "preauthorization" else "claim"
    index = parse_bytes(orjson.dumps(bundle), name="request")
    received = get_str(bundle, "timestamp") or get_str(claim, "created") or ""
    options = Options(payer=settings.pack, use=use, focus=_focus(index, claim, use), now=parse_instant(received))
    notes: list[str] = []
    number = _claim_authorization(claim) if use == "claim" else None
    result = process_index(index, options)
    if number is not None:
        if verify_authorization(number, result.decision.parties.member_id, result.decision.date):
            result = process_index(index, Options(**{**_fields(options), "prior_auth": number}))
        else:
            notes.append(f"The authorization number {number} was not issued by this payer for this member and date.")
    lines = _lines(claim, result, adjudication_policy(), fee_table(), use=use, reviewed=reviewed)
    decision = result.decision
    authorization = None
    if use == "preauthorization" and any(line.decision == "approved" for line in lines):
        member = decision.parties.member_id or decision.patient
        authorization = (
            authorization_number(member, decision.date),
            decision.date - AUTH_VALID_BEFORE,
            decision.date + AUTH_VALID_AFTER,
        )
    return Verdict(
        use=use,
        claim=claim,
        claim_url=str(claim_entry.get("fullUrl") or f"Claim/{claim.get('id')}"),
        claim_identifier=next((get_str(i, "value") for _, i in dicts(claim.get("identifier"))), None),
        lines=tuple(lines),
        findings=decision.findings,
        pack=f"{decision.pack}@{decision.pack_version}",
        received=received,
        authorization=authorization,
        notes=tuple(notes),
        currency=fee_table().currency,
    )


def _fields(options: Options) -> dict[str, Any]:
    return {name: getattr(options, name) for name in Options.__dataclass_fields__}


def _focus(index: ResourceIndex, claim: dict[str, Any], use: str) -> str | None:
    """The session the request is about: the first requested service (a prior authorization) or the
    first billed Procedure (a claim) that the Bundle holds."""
    claim_res = next((r for r in index.of_type("Claim") if r.path == "Bundle.entry[0].resource"), None)
    references: list[Any] = []
    if use == "preauthorization":
        for _, item in dicts(claim.get("item")):
            for _, extension in dicts(item.get("extension")):
                if get_str(extension, "url") == PAS_EXT + "extension-requestedService":
                    references.append(extension.get("valueReference"))
    else:
        references = [p.get("procedureReference") for _, p in dicts(claim.get("procedure"))]
    for reference in references:
        target = index.resolve(reference, claim_res)
        if target is not None and target.type in ("Procedure", "ServiceRequest"):
            return target.key
    return None


def _claim_authorization(claim: dict[str, Any]) -> str | None:
    for _, insurance in dicts(claim.get("insurance")):
        for number in insurance.get("preAuthRef") or []:
            if isinstance(number, str) and number.strip():
                return number.strip()
    return None


def _submitted(item: dict[str, Any]) -> tuple[str | None, tuple[str, ...], int, str | None]:
    code = next((c for _, _, c, _ in codings(item.get("productOrService")) if c), None)
    modifiers = tuple(c for _, m in dicts(item.get("modifier")) for _, _, c, _ in codings(m) if c)
    quantity = get_dict(item, "quantity").get("value")
    trace = next(
        (
            get_str(get_dict(e, "valueIdentifier"), "value")
            for _, e in dicts(item.get("extension"))
            if get_str(e, "url") == PAS_EXT + "extension-itemTraceNumber"
        ),
        None,
    )
    return code, modifiers, int(quantity) if isinstance(quantity, int | float) and quantity >= 1 else 1, trace


def _excess_lines(decision: ClaimDecision, limit: int) -> set[int]:
    """Sequences of the lines that bill a level beyond `limit` in their region, in line order."""
    seen: dict[str, list[str]] = {}
    excess: set[int] = set()
    for line in decision.lines:
        labels = seen.setdefault(line.line.region, [])
        for level in line.line.levels:
            if level.level.label not in labels:
                labels.append(level.level.label)
            if labels.index(level.level.label) >= limit:
                excess.add(line.sequence)
    return excess


def _lines(
    claim: dict[str, Any],
    result: Result,
    policy: AdjudicationPolicy,
    fees: FeeTable,
    *,
    use: str,
    reviewed: bool,
) -> list[LineVerdict]:
    decision = result.decision
    ours: dict[tuple[str, tuple[str, ...]], DecidedLine] = {
        (line.code, tuple(line.line.modifiers)): line for line in decision.lines
    }
    codes_ours = {line.code for line in decision.lines}
    excess = _excess_lines(decision, result.pack.limits.levels_per_region)
    pend = [
        f for f in decision.findings if use == "preauthorization" and not reviewed and f.rule_id in policy.pend_rules
    ]
    denials = [f for f in decision.findings if f.severity == "error" and f not in pend]
    if use == "preauthorization" and reviewed:
        # The reviewer has the documentation: what pended the request no longer denies it.
        denials = [f for f in denials if f.rule_id not in policy.pend_rules]
    verdicts: list[LineVerdict] = []
    for position, (_, item) in enumerate(dicts(claim.get("item")), start=1):
        written = item.get("sequence")
        sequence = written if isinstance(written, int) else position
        code, modifiers, quantity, trace = _submitted(item)
        mine = ours.get((code or "", modifiers))
        outcome: LineDecision = "approved"
        carc = rarc = None
        rules: list[str] = []
        if mine is None:
            # The payer codes the record differently: a modifier problem when the code matches.
            outcome, carc, rarc = (
                "denied",
                ("4" if code in codes_ours else "16"),
                (None if code in codes_ours else "M51"),
            )
        else:
            for finding in denials:
                denial = policy.denial(finding.rule_id, finding.carc)
                if denial.lines == "excess-levels" and mine.sequence not in excess:
                    continue
                rules.append(finding.rule_id)
                if outcome != "denied":
                    outcome, carc, rarc = "denied", denial.carc, denial.rarc
            if outcome == "approved" and pend:
                outcome = "pended"
                rules = [f.rule_id for f in pend]
        amounts = fees.amounts(code or "", quantity, "50" in modifiers) if use == "claim" else None
        charge, allowed = amounts if amounts is not None else (None, None)
        eligible = allowed if outcome == "approved" and allowed is not None else (Decimal(0) if amounts else None)
        verdicts.append(
            LineVerdict(
                sequence=sequence,
                code=code,
                modifiers=modifiers,
                quantity=quantity,
                trace_number=trace,
                decision=outcome,
                carc=carc,
                rarc=rarc,
                rules=tuple(dict.fromkeys(rules)),
                charge=charge,
                allowed=eligible,
                benefit=fees.benefit(eligible) if eligible is not None else None,
            )
        )
    return verdicts
