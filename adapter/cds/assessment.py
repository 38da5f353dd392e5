"""A claim decision for a draft order, in CRD's terms (docs/cds-hooks.md, from findings to
coverage information).

`assess(decision, order, pack, ...)` reads what `check` decided for the planned session and says
whether the order is covered, whether prior authorization is needed, what documentation or detail
is missing, which billing codes the claim would carry, and why (the rule ids and the policy
citations). The answer does not depend on the CRD version or the hook's wording, so the
coverage-assertion-id derived from it is the same for the same record and policy, and a later
claim or PAS request built from the same record can quote it (`coverage_assertion_id`).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from ..decision import NAMESPACE, ClaimDecision
from ..rules.documentation import prior_auth_codes
from ..rules.findings import Finding
from ..rules.packs import Pack
from ..rules.registry import RULE_IDS
from .discovery import Hook

Covered = Literal["covered", "not-covered", "conditional", "indeterminate"]
PaNeeded = Literal["no-auth", "auth-needed", "satisfied", "conditional", "indeterminate"]
DocNeeded = Literal["clinical", "admin"]
DocPurpose = Literal["withpa", "withclaim"]
InfoNeeded = Literal["performer", "location", "timeframe", "detail-code", "OTH"]
Category = Literal["cat-limitation", "cat-decisional", "cat-other"]
ReasonCode = Literal["technical", "no-active-coverage", "coverage-not-found"]
Kind = Literal["coverage", "documentation", "detail", "technical", "prior-auth", "billing"]

TEMP_SYSTEM = "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp"
CPT_SYSTEM = "http://www.ama-assn.org/go/cpt"

# What each rule's finding means for a planned service. A rule not listed here (one added later)
# is read as "the claim would be held for a reason CRD has no code for": conditional, OTH.
RULE_KINDS: dict[str, Kind] = {
    "dx-not-covered": "coverage",
    "levels-exceed-limit": "coverage",
    "multiple-regions": "coverage",
    "guidance-not-covered": "coverage",
    "frequency-limit": "coverage",
    "diagnostic-block-prerequisite": "coverage",
    "block-interval": "coverage",
    "radiculopathy": "coverage",
    "pain-duration": "documentation",
    "pain-score-missing": "documentation",
    "conservative-care": "documentation",
    "levels-unknown": "detail",
    "laterality-unknown": "detail",
    "intent-unknown": "detail",
    "guidance-unknown": "detail",
    "dx-invalid": "detail",
    "claim-data-missing": "detail",
    "npi-invalid": "detail",
    "rule-not-applied": "technical",
    "prior-auth-required": "prior-auth",
    "levels-inferred": "billing",
    "input-corrected": "billing",
    "imaging-line-bundled": "billing",
    "pos-defaulted": "billing",
    "payer-defaulted": "billing",
    "procedure-undated": "billing",
    # v1.2: an evidence value outside its scale is documentation to correct; an input holding other
    # patients, and a procedure not done, change nothing on the order.
    "evidence-invalid": "documentation",
    "several-patients": "billing",
    "procedure-not-done": "billing",
}
# The info-needed code of a "detail" finding: the order is not specific enough (detail-code), or
# names no one to perform it, or a performer whose NPI fails its check digit (performer); a
# diagnosis code that is not billable is OTH.
_INFO_OF: dict[str, InfoNeeded] = {"dx-invalid": "OTH", "claim-data-missing": "performer", "npi-invalid": "performer"}
# Information-level findings worth a detail line on the order.
_NOTED = frozenset({"payer-defaulted"})


@dataclass(frozen=True, slots=True)
class Reason:
    text: str
    code: ReasonCode | None = None  # a CRD coverage-assertion reason (CodeSystem temp)
    rule_id: str | None = None
    rule_title: str | None = None


@dataclass(frozen=True, slots=True)
class Detail:
    category: Category
    code: Literal["instructions", "policy-link"]  # CRD's detail codes (CodeSystem temp)
    value: str
    qualification: str | None = None

    @property
    def is_url(self) -> bool:
        return self.code == "policy-link"


@dataclass(frozen=True, slots=True)
class BillingCode:
    code: str  # the CPT code with its modifiers, post-coordinated: `64493:50:KX`
    display: str | None = None  # the plain code's description (an expression has none)


@dataclass(frozen=True, slots=True)
class Assessment:
    """What one coverage-information extension on one order says."""

    order: str  # "ServiceRequest/123"
    coverage: str  # the Coverage reference it is about
    covered: Covered
    pa_needed: PaNeeded | None
    doc_needed: tuple[DocNeeded, ...]
    doc_purpose: tuple[DocPurpose, ...]
    info_needed: tuple[InfoNeeded, ...]
    billing: tuple[BillingCode, ...]
    reasons: tuple[Reason, ...]
    details: tuple[Detail, ...]
    date: dt.date
    assertion_id: str
    satisfied_pa_id: str | None = None
    findings: tuple[Finding, ...] = field(default=())  # the findings behind it, for the card
    links: tuple[tuple[str, str], ...] = field(default=())  # (label, url) of the policies cited

    @property
    def acts(self) -> bool:
        """Whether a person must act on it (a card is due)."""
        return (
            self.covered != "covered"
            or self.pa_needed not in (None, "no-auth", "satisfied")
            or bool(self.doc_needed or self.info_needed)
        )


def kind_of(rule_id: str) -> Kind | None:
    return RULE_KINDS.get(rule_id)


def order_lines(decision: ClaimDecision, order: str) -> list[BillingCode]:
    """The claim lines that bill this order, as CPT expressions (modifiers after `:`)."""
    codes: list[BillingCode] = []
    for decided in decision.lines:
        if order not in decided.line.procedure_keys:
            continue
        expression = ":".join([decided.code, *decided.line.modifiers])
        codes.append(BillingCode(expression, decided.description if expression == decided.code else None))
    return codes


@dataclass(slots=True)
class _Effects:
    """What the findings of a session say, before prior authorization is asked."""

    not_covered: bool = False
    technical: bool = False
    conditional: bool = False
    documentation: bool = False
    info: list[InfoNeeded] = field(default_factory=list)
    reasons: list[Reason] = field(default_factory=list)
    details: list[Detail] = field(default_factory=list)
    shaping: list[Finding] = field(default_factory=list)  # the findings the answer rests on


def _effects(findings: Iterable[Finding]) -> _Effects:
    effects = _Effects()
    for finding in findings:
        kind = kind_of(finding.rule_id)
        if finding.severity == "information":
            if finding.rule_id in _NOTED:
                effects.details.append(Detail("cat-other", "instructions", finding.message, _qualification(finding)))
            continue
        if kind == "billing" or (finding.severity == "warning" and kind in ("detail", "technical", "prior-auth")):
            text = f"{finding.message} {finding.hint}"
            effects.details.append(Detail("cat-other", "instructions", text, _qualification(finding)))
            continue
        effects.shaping.append(finding)
        effects.details.append(Detail("cat-limitation", "instructions", finding.hint, _qualification(finding)))
        if finding.severity == "warning":
            # A coverage or documentation rule the payer lets pass when the record documents it.
            effects.documentation = True
            effects.reasons.append(_reason("Documentation needed", finding))
        elif kind == "coverage":
            effects.not_covered = True
            effects.reasons.append(_reason("Not covered as ordered", finding))
        elif kind == "documentation":
            effects.documentation = effects.conditional = True
            effects.info.append("OTH")
            effects.reasons.append(_reason("Documentation needed", finding))
        elif kind == "detail":
            effects.conditional = True
            effects.info.append(_INFO_OF.get(finding.rule_id, "detail-code"))
            effects.reasons.append(_reason("More detail needed", finding))
        elif kind == "technical":
            effects.technical = True
            effects.reasons.append(_reason("Not determined", finding, code="technical"))
        elif kind == "prior-auth":
            effects.reasons.append(_reason("Prior authorization", finding))
        else:  # a rule the table does not know yet
            effects.conditional = True
            effects.info.append("OTH")
            effects.reasons.append(_reason("Held", finding))
    return effects


def _covered(effects: _Effects) -> Covered:
    """Not covered over not determined over conditional over covered."""
    if effects.not_covered:
        return "not-covered"
    if effects.technical:
        return "indeterminate"
    return "conditional" if effects.conditional else "covered"


def assess(
    decision: ClaimDecision,
    order: str,
    pack: Pack,
    *,
    hook: Hook = "order-sign",
    coverage_active: bool = True,
) -> Assessment:
    """The coverage information for `order`, one of the planned session's facet orders, from the
    decision `check --use preauthorization` reaches for the record (docs/cds-hooks.md, from
    findings to coverage information). `coverage_active` is false when the Coverage is not in
    force on the date of service."""
    if decision.coverage is None:
        raise ValueError("a coverage-information extension needs a Coverage")
    billing = tuple(order_lines(decision, order))
    effects = _effects(decision.findings)
    if not coverage_active:
        effects.not_covered = True
        text = f"Not covered: {decision.coverage} is not in force on {decision.date.isoformat()}."
        effects.reasons.insert(0, Reason(text, code="no-active-coverage"))
    covered = _covered(effects)
    # What is needed to decide coverage counts only while coverage is undecided: a service that
    # is not covered, or not determined, asks for no more detail (crd-ci-q3).
    info = effects.info if covered == "conditional" else []
    reasons = effects.reasons
    pa_needed: PaNeeded | None = None
    satisfied: str | None = None
    if covered != "not-covered":  # crd-ci-q2
        pa_needed, satisfied, pa_reason, pa_info = _prior_auth(decision, pack, billing)
        reasons += [pa_reason] if pa_reason is not None else []
        info += pa_info
    doc_needed: tuple[DocNeeded, ...] = ()
    doc_purpose: tuple[DocPurpose, ...] = ()
    # order-select is a secondary hook: CRD does not let it ask for documentation (hook-17).
    if effects.documentation and covered != "not-covered" and hook == "order-sign":
        doc_needed = ("clinical",)
        doc_purpose = ("withpa",) if pa_needed == "auth-needed" else ("withclaim",)
    citations = [f.citation for f in effects.shaping]
    if pa_needed in ("auth-needed", "conditional"):
        citations.append(pack.citation("prior-auth-required"))
    links = policy_links(citations)
    details = [*effects.details, *(Detail("cat-other", "policy-link", url, label) for label, url in links)]
    return Assessment(
        order=order,
        coverage=decision.coverage,
        covered=covered,
        pa_needed=pa_needed,
        doc_needed=doc_needed,
        doc_purpose=doc_purpose,
        info_needed=tuple(dict.fromkeys(info)),
        billing=billing,
        reasons=tuple(reasons),
        details=tuple(dict.fromkeys(details)),
        date=decision.created.date(),
        assertion_id=coverage_assertion_id(decision, order, covered, pa_needed, satisfied, billing, effects.shaping),
        satisfied_pa_id=satisfied,
        findings=tuple(effects.shaping),
        links=tuple(links),
    )


def _prior_auth(
    decision: ClaimDecision, pack: Pack, billing: tuple[BillingCode, ...]
) -> tuple[PaNeeded, str | None, Reason | None, list[InfoNeeded]]:
    """Whether the claim for this order will need a prior authorization: the pack's list of codes
    and places of service (the `prior-auth-required` rule asks it of claims only)."""
    policy = pack.prior_authorization
    codes = [code.code.split(":", 1)[0] for code in billing]
    listed = sorted({code for code in codes if code in policy.codes})
    if not policy.uses or not listed:
        return "no-auth", None, None, []
    if decision.prior_auth:
        source = decision.prior_auth_source or "the record"
        text = f"Prior authorization: {decision.prior_auth} on record ({source}) covers {', '.join(listed)}."
        return "satisfied", decision.prior_auth, Reason(text), []
    places = ", ".join(policy.places_of_service)
    citation = pack.citation("prior-auth-required")
    named, verb = ", ".join(listed), "needs" if len(listed) == 1 else "need"
    if prior_auth_codes(policy, decision.place_of_service, codes):
        text = (
            f"Prior authorization: {named} at place of service {decision.place_of_service} {verb} prior "
            f"authorization and none is on record ({citation})."
        )
        return "auth-needed", None, Reason(text, rule_id="prior-auth-required"), []
    if decision.place_of_service_source == "default":
        text = (
            f"Prior authorization: {named} {verb} prior authorization at place of service {places}; "
            f"the order names no location ({citation})."
        )
        return "conditional", None, Reason(text, rule_id="prior-auth-required"), ["location"]
    return "no-auth", None, None, []


def _reason(aspect: str, finding: Finding, *, code: ReasonCode | None = None) -> Reason:
    return Reason(f"{aspect}: {finding.message}", code=code, rule_id=finding.rule_id, rule_title=finding.title)


def _qualification(finding: Finding) -> str:
    return f"{finding.rule_id}: {finding.citation}"


def coverage_assertion_id(
    decision: ClaimDecision,
    order: str,
    covered: str,
    pa_needed: str | None,
    satisfied: str | None,
    billing: Iterable[BillingCode],
    findings: Iterable[Finding],
) -> str:
    """A uuid5 of the session, the order, the pack and version, and what the assertion says: the
    same record under the same policy gives the same id, any change in the answer a new one."""
    basis = "|".join(
        [
            "coverage-information",
            decision.identifier,
            order,
            f"{decision.pack}@{decision.pack_version}",
            covered,
            pa_needed or "-",
            satisfied or "-",
            *(code.code for code in billing),
            *sorted({f.rule_id for f in findings}),
        ]
    )
    return str(uuid.uuid5(NAMESPACE, basis))


def error_assessment(
    order: str, coverage: str, date: dt.date, text: str, *, code: ReasonCode = "technical"
) -> Assessment:
    """The answer when the record could not be read or coded (CRD resp-43 to resp-45): not
    determined for a technical failure, not covered when the coverage is not in force."""
    covered: Covered = "indeterminate" if code == "technical" else "not-covered"
    pa: PaNeeded | None = "indeterminate" if code == "technical" else None
    basis = "|".join(["coverage-information", order, coverage, covered, code, text])
    return Assessment(
        order=order,
        coverage=coverage,
        covered=covered,
        pa_needed=pa,
        doc_needed=(),
        doc_purpose=(),
        info_needed=(),
        billing=(),
        reasons=(Reason(text, code=code),),
        details=(),
        date=date,
        assertion_id=str(uuid.uuid5(NAMESPACE, basis)),
    )


def timeframe_assessment(order: str, coverage: str, date: dt.date, text: str) -> Assessment:
    """An order without a date of service: the answer depends on when it is done."""
    basis = "|".join(["coverage-information", order, coverage, "timeframe"])
    return Assessment(
        order=order,
        coverage=coverage,
        covered="conditional",
        pa_needed="conditional",  # an authorization on record counts only for its period
        doc_needed=(),
        doc_purpose=(),
        info_needed=("timeframe",),
        billing=(),
        reasons=(Reason(f"More detail needed: {text}"),),
        details=(),
        date=date,
        assertion_id=str(uuid.uuid5(NAMESPACE, basis)),
    )


# Policy documents a citation names, and where they are published.
_LINKS: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (
        re.compile(r"\bL(\d{5})\b"),
        "LCD L{0}",
        "https://www.cms.gov/medicare-coverage-database/view/lcd.aspx?lcdid={0}",
    ),
    (
        re.compile(r"\bA(\d{5})\b"),
        "Billing and Coding article A{0}",
        "https://www.cms.gov/medicare-coverage-database/view/article.aspx?articleid={0}",
    ),
    (
        re.compile(r"\b(\d{1,2}) CFR (\d{3})\.(\d{1,4})\b"),
        "{0} CFR {1}.{2}",
        "https://www.ecfr.gov/current/title-{0}/section-{1}.{2}",
    ),
)


def policy_links(citations: Iterable[str]) -> list[tuple[str, str]]:
    """(label, url) of each LCD, billing and coding article and CFR section the citations name."""
    found: dict[str, str] = {}
    for citation in citations:
        for pattern, label, url in _LINKS:
            for match in pattern.finditer(citation):
                found.setdefault(url.format(*match.groups()), label.format(*match.groups()))
    return [(label, url) for url, label in found.items()]


def check_rule_kinds() -> list[str]:
    """Rule ids of the registry the table above does not place (a test keeps this empty)."""
    return [rule_id for rule_id in RULE_IDS if rule_id not in RULE_KINDS]
