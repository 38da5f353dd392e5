"""The claim decision → a FHIR R4 Claim in a collection Bundle, or a Da Vinci PAS request Bundle for a
prior-authorization request (docs/output.md); and the same Claim as it is written to a FHIR server.

Entry points: `claim_bundle(decision, index)` and `server_claim(decision, index, base_url)`. Output is
plain JSON-ready dicts; the tests validate every written resource with the fhir.resources R4B
models. Nothing here decides: every choice comes from the `ClaimDecision`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any, Protocol

import orjson

from ..coding import coding_tables
from ..decision import NAMESPACE, ClaimDecision, DecidedLine, EvidenceEntry
from ..fhir.ingest import Res, ResourceIndex
from ..fhir.systems import CPT, ICD10CM, POS_SYSTEM
from ..fhir.values import reference_holders

log = logging.getLogger(__name__)

IDENTIFIER_SYSTEM = "urn:ietf:rfc:3986"
PACK_TAG_SYSTEM = "urn:facet-adapter:rule-pack"
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
PRIORITY = "http://terminology.hl7.org/CodeSystem/processpriority"
INFO_CATEGORY = "http://terminology.hl7.org/CodeSystem/claiminformationcategory"
CARE_TEAM_ROLE = "http://terminology.hl7.org/CodeSystem/claimcareteamrole"
PAS = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition"
X12_1525 = "https://codesystem.x12.org/005010/1525"
X12_1322 = "https://codesystem.x12.org/005010/1322"
X12_1365 = "https://codesystem.x12.org/005010/1365"
NOT_ON_SERVER = "not on the FHIR server"


class References(Protocol):
    """How the Claim points at the resources it names: Bundle fullUrls, or server references."""

    def to(self, key: str | None, display: str) -> dict[str, Any]: ...


def entry_url(res: Res) -> str:
    """A resource's fullUrl in the Bundle: its own http(s) fullUrl, else a urn:uuid derived from its
    key (stable: the same input always gives the same Bundle)."""
    if res.container is None and res.full_url and res.full_url.startswith(("http://", "https://")):
        return res.full_url
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, res.key)}"


class BundleEntries:
    """The Bundle's resources: each once, with a stable fullUrl, references rewritten to them.

    The resources the Claim names were read (and checked as R4) by the reader. What they reference
    in turn is added as far as the input has it, except what cannot be written as valid R4 (left
    out, its reference kept as written) and other patients' data (never copied into a claim).
    """

    def __init__(self, index: ResourceIndex, patient: str) -> None:
        self.index = index
        self.patient = patient
        self.order: list[Res] = []
        self.urls: dict[int, str] = {}

    def url_of(self, res: Res) -> str:
        key = id(res)
        if key not in self.urls:
            self.urls[key] = entry_url(res)
            self.order.append(res)
        return self.urls[key]

    def to(self, key: str | None, display: str) -> dict[str, Any]:
        res = self.index.get(key) if key else None
        if res is not None:
            return {"reference": self.url_of(res)}
        if key and "/" in key:
            return {"reference": key}
        return {"display": display}

    def _includable(self, res: Res) -> bool:
        if res.type == "Patient" and res.key != self.patient:
            return False
        for element in ("subject", "patient", "beneficiary"):
            value = res.data.get(element)
            if isinstance(value, dict) and "reference" in value:
                owner = self.index.resolve(value, res)
                if owner is not None and owner.type == "Patient" and owner.key != self.patient:
                    return False
        if not self.index.is_valid(res):
            log.info("%s left out of the Bundle: not writable as valid R4", res.label())
            return False
        return True

    def close(self) -> list[dict[str, Any]]:
        """Copies of the resources, with what they reference added transitively: one walk of each
        resource finds its references and copies it, rewriting them to the Bundle's fullUrls."""
        done = 0
        while done < len(self.order):
            res = self.order[done]
            done += 1
            for target in _referenced(self.index, res):
                if id(target) not in self.urls and self._includable(target):
                    self.url_of(target)
        entries = []
        for res in self.order:
            copy = _copy_json(res.data)
            if res.container is not None:
                copy["id"] = contained_id(res)
            else:
                self._rewrite(copy, res)
            entries.append({"fullUrl": self.urls[id(res)], "resource": copy})
        return entries

    def _rewrite(self, copy: dict[str, Any], res: Res) -> None:
        for holder in reference_holders(copy):
            target = self.index.resolve(holder["reference"], res)
            if target is not None and id(target) in self.urls and target.container is None:
                holder["reference"] = self.urls[id(target)]
            elif target is not None and target.container is not None and target.container is not res:
                holder["reference"] = self.url_of(target) if id(target) in self.urls else holder["reference"]


class ServerReferences:
    """References as a FHIR server holds them: `Type/id`. A resource that exists only inside another
    one (contained) has no address on the server: it is contained in the Claim again (`#id`),
    because pointing at its container would give `Claim.patient` or `insurance.coverage` a
    reference of the wrong type. A resource the server cannot name keeps only a display."""

    def __init__(self, index: ResourceIndex, base_url: str) -> None:
        self.index = index
        self.base = base_url.rstrip("/") + "/"
        self.contained: dict[str, dict[str, Any]] = {}

    def relative(self, reference: str) -> str:
        return reference[len(self.base) :] if reference.startswith(self.base) else reference

    def to(self, key: str | None, display: str) -> dict[str, Any]:
        res = self.index.get(key) if key else None
        if res is None:
            if key and "/" in key:
                return {"reference": self.relative(key)}
            return {"display": display}
        if res.container is not None:
            return {"reference": f"#{self._contain(res)}"}
        if res.id is None:
            return {"display": NOT_ON_SERVER}
        return {"reference": f"{res.type}/{res.id}"}

    def _contain(self, res: Res) -> str:
        inner = _copy_json(res.data)
        inner["id"] = contained_id(res)
        container = res.container
        container_ref = f"{container.type}/{container.id}" if container is not None and container.id else None
        for holder in reference_holders(inner):
            target = holder["reference"]
            # "#x" meant the original container (or a sibling inside it): that is the container.
            if target.startswith("#") and container_ref:
                holder["reference"] = container_ref
            elif not target.startswith("#"):
                holder["reference"] = self.relative(target)
        self.contained.setdefault(inner["id"], inner)
        return str(inner["id"])


def contained_id(res: Res) -> str:
    parent = res.container.id if res.container is not None and res.container.id else "contained"
    return f"{parent}-{res.id or 'x'}"[:64]


def _copy_json(value: dict[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = orjson.loads(orjson.dumps(value))
    return copied


def _referenced(index: ResourceIndex, res: Res) -> Iterator[Res]:
    for holder in reference_holders(res.data):
        reference = holder["reference"]
        if reference.startswith("#"):
            continue
        target = index.resolve(reference, res)
        if target is not None:
            yield target


# --------------------------------------------------------------------------- the Claim


def claim_bundle(decision: ClaimDecision, index: ResourceIndex) -> dict[str, Any]:
    """The collection Bundle: the Claim first, then every resource it names, transitively."""
    entries = BundleEntries(index, decision.patient)
    claim = claim_resource(decision, entries)
    if decision.parties.patient.resource_type != "Patient":
        # Not in the input (claim-data-missing): display-only, like a missing provider or
        # coverage, so every reference the Claim makes resolves inside the Bundle.
        claim["patient"] = {"display": f"{decision.patient} (Patient resource not in the input)"}
    body = entries.close()
    created = decision.created.isoformat()
    bundle: dict[str, Any] = {"resourceType": "Bundle"}
    if decision.use == "preauthorization":
        bundle["meta"] = {"profile": [f"{PAS}/profile-pas-request-bundle"]}
        bundle["identifier"] = {
            "system": IDENTIFIER_SYSTEM,
            "value": f"urn:uuid:{uuid.uuid5(NAMESPACE, 'bundle:' + decision.identifier)}",
        }
    bundle["type"] = "collection"
    bundle["timestamp"] = created
    bundle["entry"] = [{"fullUrl": f"urn:uuid:{decision.identifier}", "resource": claim}, *body]
    return bundle


def server_claim(decision: ClaimDecision, index: ResourceIndex, base_url: str) -> dict[str, Any]:
    """The Claim as it is written to a FHIR server: no id, references `Type/id`."""
    references = ServerReferences(index, base_url)
    claim = claim_resource(decision, references)
    claim.pop("id", None)
    if references.contained:
        ordered: dict[str, Any] = {}
        for name, value in claim.items():
            ordered[name] = value
            if name == "meta":
                ordered["contained"] = list(references.contained.values())
        claim = ordered
    return claim


def claim_resource(decision: ClaimDecision, refs: References) -> dict[str, Any]:
    preauth = decision.use == "preauthorization"
    claim: dict[str, Any] = {"resourceType": "Claim", "id": decision.identifier}
    meta: dict[str, Any] = {"tag": [{"system": PACK_TAG_SYSTEM, "code": f"{decision.pack}@{decision.pack_version}"}]}
    if preauth:
        meta["profile"] = [f"{PAS}/profile-claim"]
    claim["meta"] = meta
    claim["identifier"] = [{"system": IDENTIFIER_SYSTEM, "value": f"urn:uuid:{decision.identifier}"}]
    claim["status"] = decision.claim_status
    claim["type"] = {"coding": [{"system": CLAIM_TYPE, "code": "professional"}]}
    claim["use"] = decision.use
    claim["patient"] = refs.to(decision.patient, "Patient")
    day = decision.date.isoformat()
    claim["billablePeriod"] = {"start": day, "end": day}
    claim["created"] = decision.created.isoformat()
    if decision.insurer is not None:
        claim["insurer"] = refs.to(decision.insurer, "Payer")
    elif preauth:
        claim["insurer"] = {"display": "Payer not on record"}
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
        claim["diagnosis"] = [
            {"sequence": dx.sequence, "diagnosisCodeableConcept": {"coding": [{"system": ICD10CM, "code": dx.code}]}}
            for dx in decision.diagnoses
        ]
    if not preauth and decision.procedures:
        claim["procedure"] = [
            {"sequence": i, "date": day, "procedureReference": refs.to(key, key)}
            for i, key in enumerate(decision.procedures, start=1)
        ]
    insurance: dict[str, Any] = {
        "sequence": 1,
        "focal": True,
        "coverage": refs.to(decision.coverage, "Coverage not on record"),
    }
    if decision.prior_auth:
        insurance["preAuthRef"] = [decision.prior_auth]
    claim["insurance"] = [insurance]
    if decision.lines:
        claim["item"] = [_item(line, decision, refs) for line in decision.lines]
    return claim


def _item(line: DecidedLine, decision: ClaimDecision, refs: References) -> dict[str, Any]:
    systems = coding_tables().modifier_systems
    item: dict[str, Any] = {}
    if decision.use == "preauthorization":
        item["extension"] = [
            {
                "url": f"{PAS}/extension-serviceItemRequestType",
                "valueCodeableConcept": {
                    "coding": [{"system": X12_1525, "code": "HS", "display": "Health Services Review"}]
                },
            },
            {
                "url": f"{PAS}/extension-certificationType",
                "valueCodeableConcept": {"coding": [{"system": X12_1322, "code": "I", "display": "Initial"}]},
            },
        ]
        for key in line.line.procedure_keys:
            if key.startswith("ServiceRequest/"):
                item["extension"].append(
                    {"url": f"{PAS}/extension-requestedService", "valueReference": refs.to(key, key)}
                )
    item["sequence"] = line.sequence
    if line.care_team:
        item["careTeamSequence"] = list(line.care_team)
    if line.pointers:
        item["diagnosisSequence"] = list(line.pointers)
    if line.information:
        item["informationSequence"] = list(line.information)
    if decision.use == "preauthorization":
        item["category"] = {"coding": [{"system": X12_1365, "code": "2", "display": "Surgical"}]}
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
    if entry.code is not None:
        info["code"] = {"coding": [{"system": entry.code[0], "code": entry.code[1]}], "text": entry.text}
    else:
        info["code"] = {"text": entry.text}
    if entry.period is not None:
        start, end = entry.period
        period = {k: v.isoformat() for k, v in (("start", start), ("end", end)) if v is not None}
        if period:
            info["timingPeriod"] = period
    elif entry.date is not None:
        info["timingDate"] = entry.date.isoformat()
    info["valueReference"] = refs.to(entry.source, entry.source)
    return info
