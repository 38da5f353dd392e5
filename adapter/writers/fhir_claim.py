"""The claim decision → a FHIR R4 Claim in a collection Bundle (docs/output.md, Claim; Collection
Bundle); the parts every Claim the adapter writes shares (header, diagnoses, insurance, the coded
line) are here too, for the PAS request writer (`pas`).

Entry points: `claim_bundle(decision, index)` (`claim_bundle_json` for its bytes) and
`claim_resource(decision, refs)`. Output is plain
JSON-ready dicts; the tests validate every written resource with the fhir.resources R4B models.
Nothing here decides: every choice comes from the `ClaimDecision`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from ..coding import coding_tables
from ..decision import ClaimDecision, DecidedLine, EvidenceEntry, name_uuid
from ..fhir.ingest import ResourceIndex
from ..fhir.systems import CPT, ICD10CM, POS_SYSTEM
from .entries import BundleEntries, References
from .outcome import decision_outcome

IDENTIFIER_SYSTEM = "urn:ietf:rfc:3986"
PACK_TAG_SYSTEM = "urn:facet-adapter:rule-pack"
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
PRIORITY = "http://terminology.hl7.org/CodeSystem/processpriority"
INFO_CATEGORY = "http://terminology.hl7.org/CodeSystem/claiminformationcategory"
CARE_TEAM_ROLE = "http://terminology.hl7.org/CodeSystem/claimcareteamrole"


def claim_bundle(decision: ClaimDecision, index: ResourceIndex) -> dict[str, Any]:
    """The collection Bundle: the Claim first, then every resource it names, transitively."""
    entries = BundleEntries(index, decision.patient)
    claim = _bundle_claim(decision, entries)
    return _bundle(decision, claim, entries.close())


def claim_bundle_json(decision: ClaimDecision, index: ResourceIndex, outcome: dict[str, Any] | None = None) -> bytes:
    """`claim_bundle` serialised (compact JSON, as `orjson.dumps` writes it), each resource it copies
    serialised once per index: what the bulk runner writes for every session of a patient.
    `outcome` is `decision_outcome(decision)` when the caller has it already."""
    entries = BundleEntries(index, decision.patient, kept=True)
    claim = _bundle_claim(decision, entries)
    return orjson.dumps(_bundle(decision, claim, entries.close_json(), outcome))


def _bundle_claim(decision: ClaimDecision, entries: BundleEntries) -> dict[str, Any]:
    claim = claim_resource(decision, entries)
    if decision.parties.patient.resource_type != "Patient":
        # Not in the input (claim-data-missing): display-only, like a missing provider or
        # coverage, so every reference the Claim makes resolves inside the Bundle.
        claim["patient"] = {"display": f"{decision.patient} (Patient resource not in the input)"}
    return claim


def _bundle(
    decision: ClaimDecision, claim: dict[str, Any], body: Sequence[object], outcome: dict[str, Any] | None = None
) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": decision.created.isoformat(),
        "entry": [{"fullUrl": f"urn:uuid:{decision.identifier}", "resource": claim}, *body],
    }
    if decision.held:
        bundle["entry"].append(held_reasons(decision, outcome))
    return bundle


def held_reasons(decision: ClaimDecision, outcome: dict[str, Any] | None = None) -> dict[str, Any]:
    """The last entry of a held claim's Bundle: the findings as an OperationOutcome, so whoever
    reads the Bundle alone sees why the claim is held (docs/output.md, why a claim is held). Its
    id and fullUrl derive from the claim identifier, like every other name in the Bundle.
    `outcome` is `decision_outcome(decision)` when the caller has it already."""
    outcome_id = name_uuid("outcome:" + decision.identifier)
    resource = {"resourceType": "OperationOutcome", "id": outcome_id, **(outcome or decision_outcome(decision))}
    return {"fullUrl": f"urn:uuid:{outcome_id}", "resource": resource}


def claim_resource(decision: ClaimDecision, refs: References) -> dict[str, Any]:
    claim = claim_header(decision, refs, profile=None)
    if decision.insurer is not None:
        claim["insurer"] = refs.to(decision.insurer, "Payer")
    claim["provider"] = refs.to(decision.provider, "Provider not on record")
    claim["priority"] = {"coding": [{"system": PRIORITY, "code": "normal"}]}
    if decision.care_team:
        claim["careTeam"] = [
            {
                "sequence": 1,
                "provider": refs.to(decision.provider, "Provider"),
                "role": {"coding": [{"system": CARE_TEAM_ROLE, "code": "primary"}]},
            }
        ]
    if decision.evidence:
        claim["supportingInfo"] = [_supporting_info(entry, refs) for entry in decision.evidence]
    if decision.diagnoses:
        claim["diagnosis"] = diagnoses(decision)
    if decision.use == "claim" and decision.procedures:  # a planned session has no Procedure yet
        day = decision.date.isoformat()
        claim["procedure"] = [
            {"sequence": i, "date": day, "procedureReference": refs.to(key, key)}
            for i, key in enumerate(decision.procedures, start=1)
        ]
    claim["insurance"] = [insurance(decision, refs)]
    if decision.lines:
        claim["item"] = [line_item(line, decision) for line in decision.lines]
    return claim


# --------------------------------------------------------------------------- parts every Claim shares


def claim_header(decision: ClaimDecision, refs: References, *, profile: str | None) -> dict[str, Any]:
    """`resourceType` to `created`: id, meta (the pack tag, the profile), identifier, status, type,
    use, patient, billable period."""
    claim: dict[str, Any] = {"resourceType": "Claim", "id": decision.identifier}
    meta: dict[str, Any] = {"tag": [{"system": PACK_TAG_SYSTEM, "code": f"{decision.pack}@{decision.pack_version}"}]}
    if profile:
        meta["profile"] = [profile]
    claim["meta"] = meta
    claim["identifier"] = [{"system": IDENTIFIER_SYSTEM, "value": f"urn:uuid:{decision.identifier}"}]
    claim["status"] = decision.claim_status
    claim["type"] = {"coding": [{"system": CLAIM_TYPE, "code": "professional"}]}
    claim["use"] = decision.use
    claim["patient"] = refs.to(decision.patient, "Patient")
    day = decision.date.isoformat()
    claim["billablePeriod"] = {"start": day, "end": day}
    claim["created"] = decision.created.isoformat()
    return claim


def diagnoses(decision: ClaimDecision) -> list[dict[str, Any]]:
    return [
        {"sequence": dx.sequence, "diagnosisCodeableConcept": {"coding": [{"system": ICD10CM, "code": dx.code}]}}
        for dx in decision.diagnoses
    ]


def insurance(decision: ClaimDecision, refs: References) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "sequence": 1,
        "focal": True,
        "coverage": refs.to(decision.coverage, "Coverage not on record"),
    }
    if decision.prior_auth:
        entry["preAuthRef"] = [decision.prior_auth]
    return entry


def line_item(line: DecidedLine, decision: ClaimDecision, *, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One line as a Claim.item; `extra` holds a profile's own elements (extensions first, category
    after the pointers), placed where R4 orders them."""
    systems = coding_tables().modifier_systems
    extra = extra or {}
    item: dict[str, Any] = {}
    if "extension" in extra:
        item["extension"] = extra["extension"]
    item["sequence"] = line.sequence
    if line.care_team:
        item["careTeamSequence"] = list(line.care_team)
    if line.pointers:
        item["diagnosisSequence"] = list(line.pointers)
    if line.information:
        item["informationSequence"] = list(line.information)
    if "category" in extra:
        item["category"] = extra["category"]
    coding: dict[str, Any] = {"system": CPT, "code": line.code}
    if line.description:
        coding["display"] = line.description
    item["productOrService"] = {"coding": [coding]}
    if line.line.modifiers:
        item["modifier"] = [{"coding": [{"system": systems[m], "code": m}]} for m in line.line.modifiers]
    item["servicedDate"] = decision.date.isoformat()
    item["locationCodeableConcept"] = {"coding": [{"system": POS_SYSTEM, "code": decision.place_of_service}]}
    item["quantity"] = {"value": line.line.quantity}
    item["bodySite"] = {"text": line.line.body_site_text}
    return item


def _supporting_info(entry: EvidenceEntry, refs: References) -> dict[str, Any]:
    info: dict[str, Any] = {
        "sequence": entry.sequence,
        "category": {"coding": [{"system": INFO_CATEGORY, "code": entry.category}]},
    }
    info["code"] = evidence_code(entry)
    if entry.period is not None:
        start, end = entry.period
        period = {k: v.isoformat() for k, v in (("start", start), ("end", end)) if v is not None}
        if period:
            info["timingPeriod"] = period
    elif entry.date is not None:
        info["timingDate"] = entry.date.isoformat()
    info["valueReference"] = refs.to(entry.source, entry.source)
    return info


def evidence_code(entry: EvidenceEntry) -> dict[str, Any]:
    if entry.code is not None:
        return {"coding": [{"system": entry.code[0], "code": entry.code[1]}], "text": entry.text}
    return {"text": entry.text}
