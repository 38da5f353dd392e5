"""The CRD coverage-information extension: written from an `Assessment` for CRD 2.2 (the current
build) or 2.0 (STU2), and checked against the extension's invariants before it leaves
(docs/cds-hooks.md, the coverage-information extension; STU2 clients; invariants).

Two invariants of the definition say something other than what their FHIRPath checks: crd-ci-q3
is described as "if and only if" but its expression checks one direction, and crd-ci-q4 tests the
codes `noauth` and `not-covered` on pa-needed, where the codes are `no-auth` (pa-needed) and
`not-covered` (covered). They are enforced as described: info-needed exactly when something is
conditional, and no `withpa` purpose when pa-needed is no-auth or satisfied or the service is not
covered. crd-ci-q8 compares doc-purpose with `conditional`, which is no doc-purpose code, so it
asks for a reason whenever a purpose is given. STU2's crd-ci-q2 expression checks the opposite of
its description; both directions hold for what this service writes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ..writers.outcome import RULE_SYSTEM
from .assessment import TEMP_SYSTEM, Assessment, Reason

URL = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
CPT = "http://www.ama-assn.org/go/cpt"

# The codes each version's required bindings allow (CoverageInformationValuesets.fsh).
CODES: dict[str, dict[str, frozenset[str]]] = {
    "2.2": {
        "covered": frozenset({"covered", "not-covered", "conditional", "indeterminate"}),
        "pa-needed": frozenset({"no-auth", "auth-needed", "satisfied", "performpa", "conditional", "indeterminate"}),
        "doc-needed": frozenset({"clinical", "admin", "patient", "conditional", "indeterminate"}),
        "doc-purpose": frozenset({"withpa", "withclaim", "withorder", "retain-doc", "OTH"}),
        "info-needed": frozenset({"performer", "location", "timeframe", "contract-window", "detail-code", "OTH"}),
        "category": frozenset({"cat-limitation", "cat-decisional", "cat-other"}),
    },
    "2.0": {
        "covered": frozenset({"covered", "not-covered", "conditional"}),
        "pa-needed": frozenset({"no-auth", "auth-needed", "satisfied", "performpa", "conditional"}),
        "doc-needed": frozenset({"clinical", "admin", "both", "conditional"}),
        "doc-purpose": frozenset({"withpa", "withclaim", "withorder", "retain-doc", "OTH"}),
        "info-needed": frozenset({"performer", "location", "timeframe", "contract-window", "OTH"}),
    },
}
REASON_CODES: dict[str, frozenset[str]] = {
    "2.2": frozenset(
        {"gold-card", "no-member-found", "no-active-coverage", "coverage-not-found", "auth-out-network", "technical"}
    ),
    "2.0": frozenset({"gold-card", "detail-code"}),
}
_SINGLE = ("coverage", "covered", "pa-needed", "date", "coverage-assertion-id", "satisfied-pa-id")


class InvariantError(Exception):
    """An extension this service built breaks the definition: a bug, never sent."""


def coverage_information(assessment: Assessment, version: str = "2.2") -> dict[str, Any]:
    """The extension for `version` ("2.2" or "2.0"), checked; raises InvariantError."""
    extension = _stu2(assessment) if version == "2.0" else _current(assessment)
    problems = violations(extension, version)
    if problems:
        raise InvariantError("; ".join(problems))
    return extension


def _current(a: Assessment) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [
        {"url": "coverage", "valueReference": {"reference": a.coverage}},
        {"url": "covered", "valueCode": a.covered},
    ]
    if a.pa_needed is not None:
        parts.append({"url": "pa-needed", "valueCode": a.pa_needed})
    parts += [{"url": "doc-needed", "valueCode": code} for code in a.doc_needed]
    parts += [{"url": "doc-purpose", "valueCode": code} for code in a.doc_purpose]
    parts += [{"url": "info-needed", "valueCode": code} for code in a.info_needed]
    parts += _billing(a)
    parts += [{"url": "reason", "valueCodeableConcept": _reason(r, "2.2")} for r in a.reasons]
    for detail in a.details:
        inner: list[dict[str, Any]] = [
            {"url": "category", "valueCode": detail.category},
            {"url": "code", "valueCodeableConcept": {"coding": [{"system": TEMP_SYSTEM, "code": detail.code}]}},
            {"url": "value", "valueUrl" if detail.is_url else "valueString": detail.value},
        ]
        if detail.qualification:
            inner.append({"url": "qualification", "valueString": detail.qualification})
        parts.append({"url": "detail", "extension": inner})
    parts += _tail(a)
    return {"url": URL, "extension": parts}


def _stu2(a: Assessment) -> dict[str, Any]:
    """STU2 has no `indeterminate` (conditional instead), one doc-needed, `detail-code` as a
    reason rather than an info-needed code, and no detail codes for instructions or policy links
    (those stay in the card)."""
    covered = "conditional" if a.covered == "indeterminate" else a.covered
    pa_needed = "conditional" if a.pa_needed == "indeterminate" else a.pa_needed
    parts: list[dict[str, Any]] = [
        {"url": "coverage", "valueReference": {"reference": a.coverage}},
        {"url": "covered", "valueCode": covered},
    ]
    if pa_needed is not None:
        parts.append({"url": "pa-needed", "valueCode": pa_needed})
    if a.doc_needed:
        parts.append({"url": "doc-needed", "valueCode": "both" if len(set(a.doc_needed)) > 1 else a.doc_needed[0]})
    parts += [{"url": "doc-purpose", "valueCode": code} for code in a.doc_purpose]
    parts += [{"url": "info-needed", "valueCode": code} for code in a.info_needed if code != "detail-code"]
    parts += _billing(a)
    if "detail-code" in a.info_needed:
        text = "More detail needed: the order does not say enough (levels, side, intent or guidance) to code it."
        concept = {"coding": [{"system": TEMP_SYSTEM, "code": "detail-code"}], "text": text}
        parts.append({"url": "reason", "valueCodeableConcept": concept})
    parts += [{"url": "reason", "valueCodeableConcept": _reason(r, "2.0")} for r in a.reasons]
    parts += _tail(a)
    return {"url": URL, "extension": parts}


def _billing(a: Assessment) -> list[dict[str, Any]]:
    found = []
    for code in a.billing:
        coding = {"system": CPT, "code": code.code}
        if code.display:
            coding["display"] = code.display
        found.append({"url": "billingCode", "valueCoding": coding})
    return found


def _reason(reason: Reason, version: str) -> dict[str, Any]:
    codings: list[dict[str, str]] = []
    if reason.code is not None and reason.code in REASON_CODES[version]:
        codings.append({"system": TEMP_SYSTEM, "code": reason.code})
    if reason.rule_id:
        rule = {"system": RULE_SYSTEM, "code": reason.rule_id}
        if reason.rule_title:
            rule["display"] = reason.rule_title
        codings.append(rule)
    concept: dict[str, Any] = {"text": reason.text}
    if codings:
        concept = {"coding": codings, **concept}
    return concept


def _tail(a: Assessment) -> list[dict[str, Any]]:
    parts = [
        {"url": "date", "valueDate": a.date.isoformat()},
        {"url": "coverage-assertion-id", "valueString": a.assertion_id},
    ]
    if a.satisfied_pa_id is not None:
        parts.append({"url": "satisfied-pa-id", "valueString": a.satisfied_pa_id})
    return parts


# ----------------------------------------------------------------------------- invariants


def _codes(extension: Mapping[str, Any], name: str) -> list[str]:
    return [str(e.get("valueCode")) for e in extension.get("extension", []) if e.get("url") == name]


def _all(extension: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    return [e for e in extension.get("extension", []) if e.get("url") == name]


def violations(extension: Mapping[str, Any], version: str = "2.2") -> list[str]:
    """What breaks the definition's cardinalities, required bindings and invariants."""
    problems: list[str] = []
    if extension.get("url") != URL:
        problems.append("url is not the coverage-information extension")
    for name in _SINGLE:
        if len(_all(extension, name)) > 1:
            problems.append(f"{name} repeats")
    for name in ("coverage", "covered", "date", "coverage-assertion-id"):
        if not _all(extension, name):
            problems.append(f"{name} is missing")
    if version == "2.0" and len(_all(extension, "doc-needed")) > 1:
        problems.append("doc-needed repeats (0..1 in STU2)")
    allowed = CODES[version]
    for name in ("covered", "pa-needed", "doc-needed", "doc-purpose", "info-needed"):
        problems += [
            f"{name} {code!r} is not in its value set" for code in _codes(extension, name) if code not in allowed[name]
        ]
    covered = set(_codes(extension, "covered"))
    pa_needed = set(_codes(extension, "pa-needed"))
    doc_needed = set(_codes(extension, "doc-needed"))
    purposes = set(_codes(extension, "doc-purpose"))
    has = {name: bool(_all(extension, name)) for name in ("questionnaire", "info-needed", "reason", "satisfied-pa-id")}
    if has["questionnaire"] and not doc_needed:
        problems.append("crd-ci-q1: questionnaire without doc-needed")
    if "not-covered" in covered and pa_needed:
        problems.append("crd-ci-q2: pa-needed with not-covered")
    if version == "2.0" and covered and "not-covered" not in covered and not pa_needed:
        # STU2's expression asks the opposite of its description; what is sent meets both.
        problems.append("crd-ci-q2 (STU2 expression): no pa-needed while covered is not not-covered")
    conditional = "conditional" in covered | pa_needed | doc_needed
    if has["info-needed"] and not conditional:
        problems.append("crd-ci-q3: info-needed without anything conditional")
    if version != "2.0" and conditional and not has["info-needed"]:
        # STU2's q3 asks one direction only, in its description as in its expression.
        problems.append("crd-ci-q3: conditional without info-needed")
    if (pa_needed & {"satisfied", "no-auth"} or "not-covered" in covered) and "withpa" in purposes:
        problems.append("crd-ci-q4: doc-purpose withpa with pa-needed no-auth or satisfied, or not covered")
    if ("satisfied" in pa_needed) != has["satisfied-pa-id"]:
        problems.append("crd-ci-q5: satisfied-pa-id exactly when pa-needed is satisfied")
    if version == "2.0":
        return problems
    if "OTH" in _codes(extension, "info-needed") and not has["reason"]:
        problems.append("crd-ci-q6: info-needed OTH without reason")
    for reason in _all(extension, "reason"):
        concept = reason.get("valueCodeableConcept") or {}
        in_set = any(
            c.get("system") == TEMP_SYSTEM and c.get("code") in REASON_CODES["2.2"] for c in concept.get("coding", [])
        )
        if not concept.get("text") and not in_set:
            problems.append("crd-ci-q7: a reason outside the value set without text")
    if any(code != "conditional" for code in purposes) and not has["reason"]:
        problems.append("crd-ci-q8: doc-purpose without reason")
    if "indeterminate" in covered | pa_needed | doc_needed and not has["reason"]:
        problems.append("crd-ci-q9: indeterminate without reason")
    for detail in _all(extension, "detail"):
        names = [e.get("url") for e in detail.get("extension", [])]
        if sorted(set(names) - {"qualification"}) != ["category", "code", "value"] or len(names) != len(set(names)):
            problems.append("detail needs one category, code and value")
        problems += [
            f"detail category {code!r} is not in its value set"
            for code in _codes(detail, "category")
            if code not in allowed["category"]
        ]
    return problems


# ----------------------------------------------------------------------------- the updated order


def coverage_of(extension: Mapping[str, Any]) -> str | None:
    for part in _all(extension, "coverage"):
        reference = (part.get("valueReference") or {}).get("reference")
        if isinstance(reference, str):
            return reference
    return None


def assertion_of(extension: Mapping[str, Any]) -> str | None:
    for part in _all(extension, "coverage-assertion-id"):
        value = part.get("valueString")
        if isinstance(value, str):
            return value
    return None


def already_said(order: Mapping[str, Any], extension: Mapping[str, Any]) -> bool:
    """Whether the order carries this assertion already (CRD: no update with nothing new)."""
    wanted = assertion_of(extension)
    return any(
        isinstance(e, dict) and e.get("url") == URL and assertion_of(e) == wanted for e in order.get("extension") or []
    )


def updated(order: Mapping[str, Any], extension: Mapping[str, Any]) -> dict[str, Any]:
    """The order with its coverage information for this Coverage replaced by `extension`; nothing
    else changes (CRD resp-37)."""
    resource = copy.deepcopy(dict(order))
    coverage = coverage_of(extension)
    kept = [
        e
        for e in resource.get("extension") or []
        if not (isinstance(e, dict) and e.get("url") == URL and coverage_of(e) == coverage)
    ]
    resource["extension"] = [*kept, copy.deepcopy(dict(extension))]
    return resource
