"""What the 837P says, element by element, read from the claim decision: the values each loop
takes and, for each element the implementation guide requires that the record lacks, a `Missing`
naming its loop and element (docs/output.md, X12 837P).

Both the format's findings (`requirements`) and the interchange are made from one `ClaimContent`,
so the findings name exactly what the writer would leave out. Nothing here decides anything about
the claim: every value is the decision's, the record's (through the decision's parties), the
chargemaster's or the site settings'.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from ...decision import ClaimDecision
from ...model import Address, Party
from .charges import Chargemaster
from .settings import FilingIndicator, X12Settings

Frequency = Literal["1", "7", "8"]
Gender = Literal["F", "M", "U"]
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
# PAT01 from the FHIR subscriber-relationship code: a patient who is not the subscriber.
PATIENT_RELATIONSHIP = {"spouse": "01", "common": "01", "child": "19"}
OTHER_RELATIONSHIP = "G8"
# DMG03 from Patient.gender: other and unknown are U.
_GENDER: dict[str, Gender] = {"female": "F", "male": "M"}
_PERSONS = frozenset({"Patient", "RelatedPerson", "Practitioner"})


@dataclass(frozen=True, slots=True)
class Missing:
    """An element the 837P requires that the record (or the chargemaster) does not give."""

    where: str  # loop and element: "2010AA NM109"
    what: str  # "billing provider NPI"
    detail: str  # why, naming the resource: "Organization/clinic1 has no NPI (...)"
    blocking: bool = True  # False: the interchange can be written without it (and is rejected later)

    @property
    def message(self) -> str:
        return f"{self.where} {self.what}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Name:
    person: bool  # NM102 1, else 2 (an organization)
    last: str  # NM103: a person's family name or an organization's name
    first: str | None = None
    middle: str | None = None


@dataclass(frozen=True, slots=True)
class Place:
    line1: str
    line2: str | None
    city: str
    state: str
    postal_code: str  # digits only: five, or nine with the ZIP+4


@dataclass(frozen=True, slots=True)
class Provider:
    name: Name | None
    npi: str | None
    tax_id: str | None = None
    address: Place | None = None


@dataclass(frozen=True, slots=True)
class Person:
    name: Name | None
    address: Place | None
    birth_date: dt.date | None
    gender: Gender


@dataclass(frozen=True, slots=True)
class Line:
    number: int  # LX01
    code: str
    modifiers: tuple[str, ...]
    charge: Decimal | None  # SV102
    units: int  # SV104
    pointers: tuple[int, ...]  # SV107
    date: dt.date  # DTP*472


@dataclass(frozen=True, slots=True)
class ClaimContent:
    claim_number: str  # CLM01
    billing: Provider
    subscriber: Person
    member_id: str | None
    group_number: str | None
    patient: Person | None  # 2000C / 2010CA, when the patient is not the subscriber
    patient_relationship: str | None  # PAT01
    payer_name: str | None
    payer_id: str | None
    filing_indicator: FilingIndicator
    accept_assignment: str
    total: Decimal | None  # CLM02
    place_of_service: str
    frequency: Frequency
    payer_claim_number: str | None  # REF*F8, for a replacement or a void
    prior_auth: str | None  # REF*G1
    diagnoses: tuple[str, ...]  # ICD-10-CM without the dot, claim order: ABK then ABF
    rendering: Provider | None  # 2310B
    lines: tuple[Line, ...]
    missing: tuple[Missing, ...]

    @property
    def complete(self) -> bool:
        """Every element the interchange cannot be written without is there."""
        return not any(missing.blocking for missing in self.missing)


def claim_number(identifier: str) -> str:
    """CLM01: the first 20 hexadecimal digits of the claim identifier (the guide allows 20 characters)."""
    return identifier.replace("-", "").upper()[:20]


def clean(value: str | None, limit: int | None = None) -> str | None:
    """A record value as the 837P carries it: ASCII, upper case, one space between words, at most
    `limit` characters. (Delimiters are taken out when the segment is written.)"""
    if value is None:
        return None
    ascii_text = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    text = " ".join(ascii_text.upper().split())
    text = text[:limit].rstrip() if limit else text
    return text or None


def _name(party: Party | None) -> Name | None:
    if party is None:
        return None
    if party.resource_type in _PERSONS or (party.name is None and party.family):
        last = clean(party.family, 60)
        if last is None:
            return None
        given = [name for name in (clean(g) for g in party.given) if name]
        first = given[0][:35] if given else None
        middle = given[1][:25] if len(given) > 1 else None
        return Name(True, last, first, middle)
    name = clean(party.name, 60)
    return Name(False, name) if name else None


def _place(address: Address | None) -> tuple[Place | None, list[str]]:
    """The address, or None with the parts it lacks (N301, N401, N402, N403)."""
    if address is None:
        return None, ["N301", "N401", "N402", "N403"]
    lines = [line for line in (clean(text, 55) for text in address.lines) if line]
    city = clean(address.city, 30)
    state = clean(address.state)
    postal = re.sub(r"[^0-9]", "", address.postal_code or "")
    lacking = []
    if not lines:
        lacking.append("N301")
    if city is None or len(city) < 2:
        lacking.append("N401")
    if state is None or len(state) != 2:
        lacking.append("N402")
    if len(postal) not in (5, 9):
        lacking.append("N403")
    if lacking or city is None or state is None:
        return None, lacking
    return Place(lines[0], lines[1] if len(lines) > 1 else None, city, state, postal), []


_PART = {"N301": "street address", "N401": "city", "N402": "state code", "N403": "ZIP code"}


class _Reader:
    """Collects the values and what is missing, loop by loop."""

    def __init__(self) -> None:
        self.missing: list[Missing] = []

    def lack(self, where: str, what: str, detail: str, *, blocking: bool = True) -> None:
        self.missing.append(Missing(where, what, detail, blocking))

    def address(
        self, loop: str, role: str, who: str, address: Address | None, lacking: list[str], *, zip_plus_four: bool
    ) -> None:
        for element in lacking:
            part = _PART[element]
            if element == "N403":
                part = "ZIP+4 code (nine digits)" if zip_plus_four else "ZIP code (five or nine digits)"
            detail = f"{who} has no address." if address is None else f"{who} has no {part} in its address."
            self.lack(f"{loop} {element}", f"{role} {part}", detail)

    def provider(self, loop: str, role: str, party: Party | None, *, address: bool, tax_id: bool) -> Provider:
        who = party.key if party is not None and party.key else f"the {role}"
        if party is None:
            for element, what in (("NM103", "name"), ("NM109", "NPI")):
                self.lack(f"{loop} {element}", f"{role} {what}", f"the record names no {role}.")
            if address:
                for element, part in _PART.items():
                    self.lack(f"{loop} {element}", f"{role} {part}", f"the record names no {role}.")
            if tax_id:
                self.lack(f"{loop} REF02", f"{role} tax id (REF*EI)", f"the record names no {role}.")
            return Provider(None, None)
        name = _name(party)
        if name is None:
            self.lack(f"{loop} NM103", f"{role} name", f"{who} has no name.")
        if not party.npi:
            self.lack(f"{loop} NM109", f"{role} NPI", f"{who} has no NPI (identifier system {NPI_SYSTEM}).")
        place: Place | None = None
        if address:
            place, lacking = _place(party.address)
            if place is not None and len(place.postal_code) != 9:
                lacking, place = ["N403"], None
            self.address(loop, role, who, party.address, lacking, zip_plus_four=True)
        ein: str | None = None
        if tax_id:
            ein = re.sub(r"[^0-9]", "", party.tax_id or "") or None
            if ein is None or len(ein) != 9:
                self.lack(
                    f"{loop} REF02",
                    f"{role} tax id (REF*EI)",
                    f"{who} has no nine-digit employer identification number "
                    "(identifier system urn:oid:2.16.840.1.113883.4.4 or typed TAX).",
                )
                ein = None
        return Provider(name, party.npi, ein, place)

    def person(self, loop: str, role: str, party: Party | None, *, required: bool) -> Person:
        who = (party.key if party is not None else None) or f"the {role}"
        name = _name(party)
        place, lacking = _place(party.address if party is not None else None)
        birth = party.birth_date if party is not None else None
        if name is None:
            self.lack(f"{loop} NM103", f"{role} last name", f"{who} has no family name on record.")
        if required:
            self.address(loop, role, who, party.address if party is not None else None, lacking, zip_plus_four=False)
            if birth is None:
                self.lack(f"{loop} DMG02", f"{role} birth date", f"{who} has no birth date on record.")
        gender = party.gender if party is not None else None
        return Person(name, place, birth, _GENDER.get(gender or "", "U"))


def claim_content(
    decision: ClaimDecision,
    settings: X12Settings,
    charges: Chargemaster,
    *,
    pack_chain: tuple[str, ...],
    frequency: Frequency = "1",
    payer_claim_number: str | None = None,
) -> ClaimContent:
    parties = decision.parties
    read = _Reader()
    billing = read.provider("2010AA", "billing provider", parties.billing, address=True, tax_id=True)

    relationship = parties.relationship
    subscriber_party = parties.subscriber
    patient_subscribes = (
        relationship == "self"
        or (subscriber_party is not None and subscriber_party.key == parties.patient.key)
        or (subscriber_party is None and relationship is None)
    )
    if patient_subscribes:
        subscriber = read.person("2010BA", "subscriber", parties.patient, required=True)
        patient = None
        patient_relationship = None
    else:
        subscriber = read.person("2010BA", "subscriber", subscriber_party or Party(key=None), required=False)
        patient = read.person("2010CA", "patient", parties.patient, required=True)
        patient_relationship = PATIENT_RELATIONSHIP.get(relationship or "", OTHER_RELATIONSHIP)
    member_id = clean(parties.member_id, 80)
    if member_id is None:
        read.lack("2010BA NM109", "subscriber member id", "the Coverage has no subscriberId (or identifier typed MB).")

    payer = parties.payer
    payer_name = clean(payer.name, 60) if payer is not None else None
    payer_id = None
    if payer is not None:
        for system in settings.claim.payer_id_systems:
            payer_id = next((clean(value, 80) for sys, value in payer.identifiers if sys == system), None)
            if payer_id:
                break
    if payer is None:
        for element, what in (("NM103", "payer name"), ("NM109", "payer id")):
            read.lack(f"2010BB {element}", what, "the Coverage names no payer Organization.")
    else:
        if payer_name is None:
            read.lack("2010BB NM103", "payer name", f"{payer.key} has no name.")
        if payer_id is None:
            read.lack(
                "2010BB NM109",
                "payer id",
                f"{payer.key} has no identifier of system {', '.join(settings.claim.payer_id_systems)}.",
            )

    rendering: Provider | None = None
    render = parties.rendering
    if render is not None and (parties.billing is None or render.key != parties.billing.key):
        rendering = read.provider("2310B", "rendering provider", render, address=False, tax_id=False)

    if not decision.diagnoses:
        read.lack("2300 HI01", "principal diagnosis", "the claim has no valid ICD-10-CM diagnosis.")
    if not decision.lines:
        read.lack("2400 SV101", "service line", "the session has no line to bill.")
    lines = []
    for decided in decision.lines:
        line = decided.line
        charge = charges.line_charge(line.code, line.modifiers, line.quantity)
        if charge is None:
            read.lack(
                "2400 SV102",
                "line charge",
                f"the chargemaster (version {charges.version}) has no price for {line.code}.",
            )
        lines.append(
            Line(
                decided.sequence,
                line.code,
                tuple(line.modifiers),
                charge,
                line.quantity,
                decided.pointers,
                decision.date,
            )
        )
    line_charges = [line.charge for line in lines]
    total = sum((c for c in line_charges if c is not None), Decimal(0)) if None not in line_charges else None

    if frequency in ("7", "8") and not payer_claim_number:
        kind = "a replacement (frequency 7)" if frequency == "7" else "a void (frequency 8)"
        read.lack(
            "2300 REF02",
            "payer claim control number (REF*F8)",
            f"the claim is {kind} of one sent before; give the payer's claim number (--payer-claim-number).",
            blocking=False,
        )
    return ClaimContent(
        claim_number=claim_number(decision.identifier),
        billing=billing,
        subscriber=subscriber,
        member_id=member_id,
        group_number=clean(parties.group_number, 50),
        patient=patient,
        patient_relationship=patient_relationship,
        payer_name=payer_name,
        payer_id=payer_id,
        filing_indicator=settings.filing_indicator(pack_chain),
        accept_assignment=settings.claim.accept_assignment,
        total=total,
        place_of_service=decision.place_of_service,
        frequency=frequency,
        payer_claim_number=clean(payer_claim_number, 50),
        prior_auth=clean(decision.prior_auth, 50),
        diagnoses=tuple(dx.code.replace(".", "") for dx in decision.diagnoses),
        rendering=rendering,
        lines=tuple(lines),
        missing=tuple(read.missing),
    )


def content_digest(content: ClaimContent) -> str:
    """What identifies the claim's content when it is sent again: everything but the frequency,
    the payer's claim number and the missing list (docs/output.md, frequency code)."""
    basis = dataclasses.replace(content, frequency="1", payer_claim_number=None, missing=())
    text = json.dumps(dataclasses.asdict(basis), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
