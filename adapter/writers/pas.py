"""The claim decision → a Da Vinci PAS 2.2.1 prior-authorization request Bundle (docs/output.md, PAS
request Bundle), and the PAS Claim alone (for a FHIR server).

Entry points: `pas_request_bundle(decision, index)` and `pas_claim(decision, refs)`.

The Claim is the PAS Claim profile's: the level of service, an identifier, the insurer, the
requestor, and on each item its trace number, the request and certification types, the service
type, the place of service and the requested service. The parties it names (the beneficiary, a
subscriber who is someone else, the insurer, the requestor and the Coverage) are written from the
decision's parties to the PAS profiles rather than copied from the input, which holds more than a
payer needs and is rarely shaped for PAS. The evidence resources are copied, each referenced from
an `additionalInformation` supporting-info entry with its documentInformation. The X12 codes come
from `mappings/pas.toml`; nothing here decides anything about the claim.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from ..decision import ClaimDecision, DecidedLine, EvidenceEntry, name_uuid
from ..errors import RulePackError, UsageError
from ..fhir.ingest import ResourceIndex
from ..model import Address, Party
from ..tables import load_toml
from .entries import BundleEntries, References
from .fhir_claim import (
    IDENTIFIER_SYSTEM,
    PRIORITY,
    claim_header,
    diagnoses,
    evidence_code,
    held_reasons,
    insurance,
    line_item,
)

PAS = "http://hl7.org/fhir/us/davinci-pas"
PROFILE = f"{PAS}/StructureDefinition"
PAS_TEMP_CODES = f"{PAS}/CodeSystem/PASTempCodes"
IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
RELATIONSHIP = "http://terminology.hl7.org/CodeSystem/subscriber-relationship"
COVERAGE_CLASS = "http://terminology.hl7.org/CodeSystem/coverage-class"
REQUEST_BUNDLE_PROFILE = f"{PROFILE}/profile-pas-request-bundle"
CLAIM_PROFILE = f"{PROFILE}/profile-claim"


@dataclass(frozen=True, slots=True)
class Code:
    system: str
    code: str
    display: str

    def concept(self) -> dict[str, Any]:
        return {"coding": [{"system": self.system, "code": self.code, "display": self.display}]}


@dataclass(frozen=True, slots=True)
class PasCodes:
    level_of_service: dict[str, Code]
    request_type: Code
    certification_type: Code
    service_type: Code
    transmission: Code
    report_types: dict[str, Code]


@cache
def pas_codes() -> PasCodes:
    raw = load_toml("pas.toml")
    try:
        systems = raw["systems"]

        def code(system: str, entry: dict[str, str]) -> Code:
            return Code(systems[system], str(entry["code"]), str(entry["display"]))

        documents = dict(raw["documents"])
        transmission = code("transmission", documents.pop("transmission"))
        return PasCodes(
            level_of_service={k: code("level_of_service", v) for k, v in raw["level_of_service"].items()},
            request_type=code("request_type", raw["item"]["request_type"]),
            certification_type=code("certification_type", raw["item"]["certification_type"]),
            service_type=code("service_type", raw["item"]["service_type"]),
            transmission=transmission,
            report_types={k: code("report_type", v) for k, v in documents.items()},
        )
    except (KeyError, TypeError) as exc:
        raise RulePackError(f"pas.toml is malformed: missing {exc}") from exc


def pas_request_bundle(decision: ClaimDecision, index: ResourceIndex) -> dict[str, Any]:
    """The PAS request Bundle: the Claim first, then every resource it names, transitively."""
    if decision.use != "preauthorization":
        raise UsageError("A Da Vinci PAS request is a prior-authorization request (--use preauthorization).")
    entries = BundleEntries(index, decision.patient)
    written = _written_parties(decision)
    for key in written:
        entries.reserve(key)
    claim = pas_claim(decision, entries)
    for key, build in written.items():
        entries.supply(key, build(entries))
    body = entries.close()
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "meta": {"profile": [REQUEST_BUNDLE_PROFILE]},
        "identifier": {
            "system": IDENTIFIER_SYSTEM,
            "value": f"urn:uuid:{name_uuid('bundle:' + decision.identifier)}",
        },
        "type": "collection",
        "timestamp": decision.created.isoformat(),
        "entry": [{"fullUrl": f"urn:uuid:{decision.identifier}", "resource": claim}, *body],
    }
    if decision.held:
        bundle["entry"].append(held_reasons(decision))
    return bundle


def pas_claim(decision: ClaimDecision, refs: References) -> dict[str, Any]:
    """The PAS Claim, its references made by `refs` (Bundle entries, or a server's `Type/id`)."""
    codes = pas_codes()
    header = claim_header(decision, refs, profile=CLAIM_PROFILE)
    level = codes.level_of_service[decision.level_of_service]
    claim: dict[str, Any] = {}
    for name, value in header.items():
        claim[name] = value
        if name == "meta":
            claim["extension"] = [
                {"url": f"{PROFILE}/extension-levelOfServiceCode", "valueCodeableConcept": level.concept()}
            ]
    payer = decision.parties.payer
    claim["insurer"] = refs.to(payer.key, "Payer not on record") if payer else {"display": "Payer not on record"}
    requester = decision.parties.requester
    claim["provider"] = (
        refs.to(requester.key, "Provider not on record")
        if requester is not None
        else refs.to(decision.provider, "Provider not on record")
    )
    urgent = decision.level_of_service != "elective"
    claim["priority"] = {"coding": [{"system": PRIORITY, "code": "stat" if urgent else "normal"}]}
    if decision.evidence:
        claim["supportingInfo"] = [_additional_information(entry, refs) for entry in decision.evidence]
    if decision.diagnoses:
        claim["diagnosis"] = diagnoses(decision)
    claim["insurance"] = [insurance(decision, refs)]
    if decision.lines:
        claim["item"] = [_item(line, decision, refs) for line in decision.lines]
    return claim


def _item(line: DecidedLine, decision: ClaimDecision, refs: References) -> dict[str, Any]:
    codes = pas_codes()
    extensions: list[dict[str, Any]] = [
        {
            "url": f"{PROFILE}/extension-itemTraceNumber",
            "valueIdentifier": {"system": IDENTIFIER_SYSTEM, "value": f"urn:uuid:{line.trace_number}"},
        },
        {"url": f"{PROFILE}/extension-serviceItemRequestType", "valueCodeableConcept": codes.request_type.concept()},
        {
            "url": f"{PROFILE}/extension-certificationType",
            "valueCodeableConcept": codes.certification_type.concept(),
        },
    ]
    # One requested service per item (0..1): the line's first order; a bilateral line coded from a
    # left and a right order names the first.
    requested = next((key for key in line.line.procedure_keys if key.startswith("ServiceRequest/")), None)
    if requested is not None:
        extensions.append(
            {"url": f"{PROFILE}/extension-requestedService", "valueReference": refs.to(requested, requested)}
        )
    return line_item(line, decision, extra={"extension": extensions, "category": codes.service_type.concept()})


def _additional_information(entry: EvidenceEntry, refs: References) -> dict[str, Any]:
    codes = pas_codes()
    report = codes.report_types[entry.document]
    return {
        "extension": [
            {
                "url": f"{PROFILE}/extension-documentInformation",
                "extension": [
                    {"url": "reportTypeCode", "valueCodeableConcept": report.concept()},
                    {"url": "transmissionMethod", "valueCodeableConcept": codes.transmission.concept()},
                    {"url": "description", "valueString": entry.text},
                ],
            }
        ],
        "sequence": entry.sequence,
        "category": {"coding": [{"system": PAS_TEMP_CODES, "code": "additionalInformation"}]},
        "code": evidence_code(entry),
        "valueReference": refs.to(entry.source, entry.source),
    }


# --------------------------------------------------------------------------- the parties, to the PAS profiles


Builder = Callable[[References], dict[str, Any]]


def _written_parties(decision: ClaimDecision) -> dict[str, Builder]:
    """Key of each party resource the request writes itself → how to write it."""
    parties = decision.parties
    written: dict[str, Builder] = {}
    patient = parties.patient
    if patient.key:
        written[patient.key] = lambda refs: _person(patient, "profile-beneficiary")
    subscriber = parties.subscriber
    if subscriber is not None and subscriber.key and subscriber.key != patient.key:
        if subscriber.resource_type == "Patient":
            written[subscriber.key] = lambda refs: _person(subscriber, "profile-subscriber")
    payer, requester = parties.payer, parties.requester
    if payer is not None and payer.key:
        written[payer.key] = lambda refs: _organization(payer, "profile-insurer")
    if requester is not None and requester.key and requester.key not in written:
        written[requester.key] = lambda refs: _organization(requester, "profile-requestor")
    if decision.coverage:
        coverage = decision.coverage
        written[coverage] = lambda refs: _coverage(decision, coverage, refs)
    return written


def _resource_id(key: str) -> str:
    """The id the input gave it (`Type/id`), else one derived from its key."""
    type_, _, rest = key.partition("/")
    if rest and type_[:1].isupper() and "/" not in rest and len(rest) <= 64:
        return rest
    return name_uuid(key)


def _base(party: Party, resource_type: str, profile: str) -> dict[str, Any]:
    return {
        "resourceType": resource_type,
        "id": _resource_id(str(party.key)),
        "meta": {"profile": [f"{PROFILE}/{profile}"]},
    }


def _identifiers(party: Party) -> list[dict[str, str]]:
    return [{"system": system, "value": value} for system, value in party.identifiers if system]


def _address(address: Address | None) -> list[dict[str, Any]]:
    if address is None:
        return []
    written: dict[str, Any] = {}
    if address.lines:
        written["line"] = list(address.lines)
    for name, value in (
        ("city", address.city),
        ("state", address.state),
        ("postalCode", address.postal_code),
        ("country", address.country),
    ):
        if value:
            written[name] = value
    return [written] if written else []


def _person(party: Party, profile: str) -> dict[str, Any]:
    person = _base(party, "Patient", profile)
    if identifiers := _identifiers(party):
        person["identifier"] = identifiers
    if party.family or party.given:
        name: dict[str, Any] = {}
        if party.family:
            name["family"] = party.family
        if party.given:
            name["given"] = list(party.given)
        person["name"] = [name]
    if party.gender:
        person["gender"] = party.gender
    if party.birth_date:
        person["birthDate"] = party.birth_date.isoformat()
    if address := _address(party.address):
        person["address"] = address
    return person


def _organization(party: Party, profile: str) -> dict[str, Any]:
    organization = _base(party, "Organization", profile)
    if identifiers := _identifiers(party):
        organization["identifier"] = identifiers
    # The PAS insurer and requestor profiles require an active organization with a name; one the
    # record names on the claim is taken to be active.
    organization["active"] = True
    if party.name:
        organization["name"] = party.name
    if address := _address(party.address):
        organization["address"] = address
    return organization


def _coverage(decision: ClaimDecision, key: str, refs: References) -> dict[str, Any]:
    parties = decision.parties
    coverage: dict[str, Any] = {
        "resourceType": "Coverage",
        "id": _resource_id(key),
        "meta": {"profile": [f"{PROFILE}/profile-coverage"]},
    }
    member: dict[str, Any] = {"type": {"coding": [{"system": IDENTIFIER_TYPE, "code": "MB"}]}}
    if parties.member_id:
        member["value"] = parties.member_id
    coverage["identifier"] = [member]
    if parties.coverage_status:
        coverage["status"] = parties.coverage_status
    subscriber = parties.subscriber or (parties.patient if parties.relationship == "self" else None)
    if subscriber is not None and subscriber.key:
        coverage["subscriber"] = refs.to(subscriber.key, subscriber.display)
    if parties.member_id:
        coverage["subscriberId"] = parties.member_id
    coverage["beneficiary"] = refs.to(decision.patient, "Patient")
    if parties.relationship:
        coverage["relationship"] = {"coding": [{"system": RELATIONSHIP, "code": parties.relationship}]}
    payer = parties.payer
    coverage["payor"] = [refs.to(payer.key, payer.display) if payer else {"display": "Payer not on record"}]
    if parties.group_number:
        coverage["class"] = [
            {
                "type": {"coding": [{"system": COVERAGE_CLASS, "code": "group"}]},
                "value": parties.group_number,
            }
        ]
    return coverage
