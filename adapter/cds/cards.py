"""Cards, only where a person must act (docs/cds-hooks.md, cards).

One card per planned session whose coverage information asks for something: not covered, not
determined, prior authorization, documentation or detail. The summary fits CDS Hooks' 140
characters; the indicator follows the worst finding behind it (an error finding, which would hold
the claim, is a `warning`; a warning finding `info`; `critical` is kept for clinical danger, as
CRD asks); the detail lists the findings with their citations and fixes; the source names the
insurer, this product and the payer pack with its version; the links are the policies cited.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from .. import __version__
from ..decision import NAMESPACE, ClaimDecision
from .assessment import TEMP_SYSTEM, Assessment

CARD_TYPES = "http://terminology.hl7.org/CodeSystem/cdshooks-card-type"
SUMMARY_LIMIT = 140
_INDICATOR = {"error": "warning", "warning": "info", "information": "info"}
_RANK = {"info": 0, "warning": 1}


def _topic(version: str) -> dict[str, str]:
    # CRD 2.2 moved the card types to terminology.hl7.org; STU2 has them in its temp code system.
    system = TEMP_SYSTEM if version == "2.0" else CARD_TYPES
    return {"system": system, "code": "claim", "display": "Claim"}


def summary_text(text: str) -> str:
    return text if len(text) < SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 2].rstrip() + "…"


def _codes(assessments: Sequence[Assessment]) -> str:
    codes = list(dict.fromkeys(code.code for a in assessments for code in a.billing))
    return ", ".join(codes) or "the facet procedure ordered"


def _summary(assessments: Sequence[Assessment]) -> str:
    codes = _codes(assessments)
    if any(a.covered == "not-covered" for a in assessments):
        rules = ", ".join(dict.fromkeys(f.rule_id for a in assessments for f in a.findings if f.severity == "error"))
        return f"Not covered as ordered: {codes}" + (f" ({rules})" if rules else "")
    if any(a.covered == "indeterminate" for a in assessments):
        return f"Coverage of {codes} could not be determined; see the details"
    if any(a.pa_needed == "auth-needed" for a in assessments):
        return f"Prior authorization needed for {codes} before it is done"
    if any(a.covered == "conditional" for a in assessments):
        return f"More information needed before {codes} can be covered"
    if any(a.pa_needed == "conditional" for a in assessments):
        return f"Prior authorization for {codes} depends on where it is done"
    return f"Documentation needed for {codes}"


def _indicator(assessments: Sequence[Assessment], pa_severity: str) -> str:
    severities: list[str] = [f.severity for a in assessments for f in a.findings]
    if any(a.pa_needed in ("auth-needed", "conditional") for a in assessments):
        severities.append(pa_severity)
    if any(a.covered == "indeterminate" for a in assessments):
        severities.append("error")
    indicators = [_INDICATOR[s] for s in severities] or ["info"]
    return max(indicators, key=_RANK.__getitem__)


def _detail(assessments: Sequence[Assessment]) -> str:
    first = assessments[0]
    orders = ", ".join(a.order for a in assessments)
    lines = [f"**{_summary(assessments)}** ({orders}).", ""]
    seen: set[str] = set()
    for finding in first.findings:
        if finding.rule_id in seen:
            continue
        seen.add(finding.rule_id)
        # Two spaces end a line inside a list item (a hard break in GitHub-flavoured Markdown).
        lines.append(f"- **{finding.title}** (`{finding.rule_id}`, {finding.severity}): {finding.message}  ")
        lines.append(f"  *To fix:* {finding.hint}  ")
        lines.append(f"  *Policy:* {finding.citation}")
    for reason in first.reasons:
        if reason.rule_id is None or reason.rule_id not in seen:
            lines.append(f"- {reason.text}  ")
    if first.pa_needed == "auth-needed":
        lines.append(
            "  *To fix:* obtain the prior authorization before the procedure; once its approval is on record "
            "the order is answered `satisfied`, with its number."
        )
    elif first.pa_needed == "conditional":
        lines.append("  *To fix:* name where the procedure will be done (the order's Encounter and its Location).")
    return "\n".join(lines)


def session_card(
    assessments: Sequence[Assessment],
    decision: ClaimDecision,
    *,
    insurer: str,
    pa_severity: str,
    version: str,
) -> dict[str, Any] | None:
    """The card for the orders of one planned session; None when nobody must act."""
    acting = [a for a in assessments if a.acts]
    if not acting:
        return None
    card: dict[str, Any] = {
        "uuid": str(uuid.uuid5(NAMESPACE, "card|" + "|".join(a.assertion_id for a in acting))),
        "summary": summary_text(_summary(acting)),
        "indicator": _indicator(acting, pa_severity),
        "detail": _detail(acting),
        "source": _source(insurer, decision.pack, decision.pack_version, version),
    }
    links = list(dict.fromkeys(link for a in acting for link in a.links))
    if links:
        card["links"] = [{"label": label, "url": url, "type": "absolute"} for label, url in links]
    if version != "2.0":
        card["extension"] = {"davinci-crd.associated-resource": [{"reference": a.order} for a in acting]}
    return card


def notice_card(summary: str, detail: str, *, insurer: str, version: str, orders: Sequence[str]) -> dict[str, Any]:
    """A card for an order the service could not answer with coverage information (no Coverage
    on record, or the record could not be read)."""
    card: dict[str, Any] = {
        "uuid": str(uuid.uuid5(NAMESPACE, "notice|" + summary + "|" + "|".join(orders))),
        "summary": summary_text(summary),
        "indicator": "warning",
        "detail": detail,
        "source": _source(insurer, None, None, version),
    }
    if version != "2.0":
        card["extension"] = {"davinci-crd.associated-resource": [{"reference": order} for order in orders]}
    return card


def _source(insurer: str, pack: str | None, pack_version: str | None, version: str) -> dict[str, Any]:
    label = f"{insurer} · facet-adapter {__version__}"
    label += f", pack {pack} {pack_version}" if pack else ""
    return {"label": label, "topic": _topic(version)}
