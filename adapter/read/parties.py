"""The parties a claim names, read from the record: the patient, the subscriber and member id, the
payer, the billing and rendering providers and the facility (docs/input.md, parties).

Coding and checking do not depend on these details (names, identifiers, addresses); billing
formats do (an 837P needs the subscriber's address, the billing provider's NPI and tax id). So a
resource read only for them is read when it is valid R4 and otherwise treated as not on record,
never a reason to reject the input.
"""

from __future__ import annotations

from typing import Any

from ..fhir.ingest import Res
from ..fhir.values import codings, dicts, get_dict, get_str, parse_date
from ..model import Address, Parties, Party
from .access import Access

NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
# The IRS employer identification number (a tax id), as US Core and CARIN write it.
TAX_ID_SYSTEMS = frozenset({"urn:oid:2.16.840.1.113883.4.4", "http://hl7.org/fhir/sid/us-ein"})
_IDENTIFIER_TYPES = "http://terminology.hl7.org/CodeSystem/v2-0203"
_PERSONS = frozenset({"Patient", "RelatedPerson", "Practitioner"})
_PARTIES_MEMO = "parties"  # Party by id() of its resource, which the index keeps alive


def read_parties(
    access: Access,
    *,
    patient_key: str,
    patient: Res | None,
    coverage: Res | None,
    provider_key: str | None,
    location: Res | None,
    encounter: Res | None,
) -> Parties:
    subscriber: Party | None = None
    relationship = member_id = group = coverage_status = None
    payer: Party | None = None
    if coverage is not None:
        data = coverage.data
        coverage_status = get_str(data, "status")
        subscriber_res = access.if_valid(access.peek(coverage, "subscriber", data.get("subscriber")))
        if subscriber_res is not None:
            subscriber = _party(access, subscriber_res)
        elif get_str(get_dict(data, "subscriber"), "reference"):
            subscriber = Party(key=get_str(get_dict(data, "subscriber"), "reference"))
        relationship = next((code for _, _, code, _ in codings(data.get("relationship")) if code), None)
        member_id = get_str(data, "subscriberId") or _typed_identifier(data, "MB")
        group = _class_value(data, "group")
        for _, payor in dicts(data.get("payor")):
            target = access.peek(coverage, "payor", payor)
            if target is not None and target.type == "Organization":
                payer = _party(access, access.use(target))
                break
    patient_party = _party(access, patient) if patient is not None else Party(key=patient_key)
    if subscriber is None and relationship == "self":
        subscriber = patient_party  # the patient is the subscriber
    provider_res = access.get(provider_key) if provider_key else None
    provider = Party(key=provider_key) if provider_key else None
    if provider_res is not None:
        provider = _party(access, provider_res)
    rendering, billing = _rendering_and_billing(access, provider_res, provider, encounter)
    requester = next((p for p in (provider, billing) if p is not None and p.resource_type == "Organization"), None)
    return Parties(
        patient=patient_party,
        subscriber=subscriber,
        relationship=relationship,
        member_id=member_id,
        group_number=group,
        coverage_status=coverage_status,
        payer=payer,
        provider=provider,
        billing=billing,
        rendering=rendering,
        requester=requester,
        facility=_party(access, location) if location is not None else None,
    )


def _rendering_and_billing(
    access: Access, provider_res: Res | None, provider: Party | None, encounter: Res | None
) -> tuple[Party | None, Party | None]:
    """A practitioner performer renders; the billing provider is the organization the record ties
    to the claim (the PractitionerRole's, else the Encounter's service provider), else the provider."""
    rendering: Party | None = None
    organization: Res | None = None
    if provider_res is not None and provider_res.type == "Practitioner":
        rendering = provider
    elif provider_res is not None and provider_res.type == "PractitionerRole":
        practitioner = access.if_valid(access.peek(provider_res, "practitioner", provider_res.data.get("practitioner")))
        rendering = _merged(_party(access, practitioner), provider) if practitioner is not None else provider
        organization = access.if_valid(access.peek(provider_res, "organization", provider_res.data.get("organization")))
    elif provider_res is not None and provider_res.type == "Organization":
        organization = provider_res
    if organization is None and encounter is not None:
        target = access.peek(encounter, "serviceProvider", encounter.data.get("serviceProvider"))
        organization = access.if_valid(target) if target is not None and target.type == "Organization" else None
    billing = _party(access, organization) if organization is not None else provider
    return rendering, billing


def _merged(person: Party, role: Party | None) -> Party:
    """The practitioner, with the NPI its PractitionerRole carries when the person has none."""
    if role is None or person.npi or not role.npi:
        return person
    return Party(
        key=person.key,
        resource_type=person.resource_type,
        family=person.family,
        given=person.given,
        npi=role.npi,
        npi_path=role.npi_path,
        tax_id=person.tax_id,
        identifiers=person.identifiers,
        address=person.address,
    )


def _party(access: Access, res: Res) -> Party:
    """`party_of`, once per resource of the input: the patient's sessions name the same patient,
    payer, providers and places."""
    kept = access.index.memo.get(_PARTIES_MEMO)
    if not isinstance(kept, dict):
        kept = access.index.memo[_PARTIES_MEMO] = {}
    party = kept.get(id(res))
    if party is None:
        party = kept[id(res)] = party_of(res)
    return party


def party_of(res: Res) -> Party:
    data = res.data
    family, given = _person_name(data) if res.type in _PERSONS else (None, ())
    npi, npi_path = _npi(res)
    return Party(
        key=res.key,
        resource_type=res.type,
        name=get_str(data, "name") if res.type not in _PERSONS else None,
        family=family,
        given=given,
        npi=npi,
        npi_path=npi_path,
        tax_id=next((value for system, value in _identifiers(data) if system in TAX_ID_SYSTEMS), None)
        or _typed_identifier(data, "TAX"),
        identifiers=tuple(_identifiers(data)),
        address=_address(data),
        birth_date=parse_date(data.get("birthDate")),
        gender=get_str(data, "gender"),
    )


def _identifiers(data: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (get_str(identifier, "system") or "", value)
        for _, identifier in dicts(data.get("identifier"))
        if (value := get_str(identifier, "value"))
    ]


def _typed_identifier(data: dict[str, Any], type_code: str) -> str | None:
    for _, identifier in dicts(data.get("identifier")):
        types = {code for _, system, code, _ in codings(identifier.get("type")) if system == _IDENTIFIER_TYPES}
        if type_code in types and get_str(identifier, "value"):
            return get_str(identifier, "value")
    return None


def _npi(res: Res) -> tuple[str | None, str | None]:
    for i, identifier in dicts(res.data.get("identifier")):
        if get_str(identifier, "system") == NPI_SYSTEM and get_str(identifier, "value"):
            return get_str(identifier, "value"), f"{res.path}.identifier[{i}].value"
    return None, None


def _person_name(data: dict[str, Any]) -> tuple[str | None, tuple[str, ...]]:
    names = [name for _, name in dicts(data.get("name"))]
    chosen = next((n for n in names if get_str(n, "use") == "official"), names[0] if names else None)
    if chosen is None:
        return None, ()
    given = tuple(g for g in chosen.get("given", []) if isinstance(g, str) and g)
    return get_str(chosen, "family"), given


def _address(data: dict[str, Any]) -> Address | None:
    addresses = [a for _, a in dicts(data.get("address"))]
    chosen = next((a for a in addresses if get_str(a, "use") in ("work", "home", None)), None)
    if chosen is None:
        return None
    return Address(
        lines=tuple(line for line in chosen.get("line", []) if isinstance(line, str) and line),
        city=get_str(chosen, "city"),
        state=get_str(chosen, "state"),
        postal_code=get_str(chosen, "postalCode"),
        country=get_str(chosen, "country"),
    )


def _class_value(data: dict[str, Any], class_type: str) -> str | None:
    for _, entry in dicts(data.get("class")):
        if any(code == class_type for _, _, code, _ in codings(entry.get("type"))):
            return get_str(entry, "value")
    return None
