"""X12 837P test helpers: validate with pyx12 (an independent validator with its own 005010X222A1
map), parse back with x12sdk, and give test records the billing data an 837P needs."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyx12.params
import pyx12.x12n_document
from x12sdk.io import X12ModelReader

from adapter.writers.x12_837p import X12Settings

CLINIC_NPI = "1093817462"
DOCTOR_NPI = "1234567893"
NAIC = "urn:oid:2.16.840.1.113883.6.300"
EIN = "urn:oid:2.16.840.1.113883.4.4"
NPI = "http://hl7.org/fhir/sid/us-npi"

SETTINGS = {
    "usage_indicator": "T",
    "submitter": {"name": "Test Clinic", "id": "TESTSUB01", "contact_name": "Billing", "phone": "6145550100"},
    "receiver": {"name": "Test Clearinghouse", "id": "TESTRCV01"},
}


def settings(**changes: Any) -> X12Settings:
    return X12Settings.model_validate({**SETTINGS, **changes})


def write_config(folder: Path, state: bool = True, **extra: str) -> Path:
    """A site configuration file (with a state file beside it unless `state` is False)."""
    lines = [
        'usage_indicator = "T"',
        *(f"{key} = {value}" for key, value in extra.items()),
        *(['state_file = "x12-state.json"'] if state else []),
        "[submitter]",
        'name = "Test Clinic"',
        'id = "TESTSUB01"',
        'contact_name = "Billing"',
        'phone = "6145550100"',
        "[receiver]",
        'name = "Test Clearinghouse"',
        'id = "TESTRCV01"',
    ]
    path = folder / "x12-837p.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def validate(text: str) -> list[str]:
    """pyx12's errors for the interchange (empty when its 999 accepts it), run as pyx12's own
    x12valid does: `x12n_document` with the installed maps, a 999 and the JSON error report."""
    fd_999, fd_json = io.StringIO(), io.StringIO()
    ok = pyx12.x12n_document.x12n_document(
        param=pyx12.params.params(),
        src_file=io.StringIO(text),
        fd_997=fd_999,
        fd_html=None,
        fd_json=fd_json,
    )
    errors: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for error in node.get("errors", []):
                errors.append(json.dumps(error))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(fd_json.getvalue() or "{}"))
    ack = fd_999.getvalue()
    if not ok:
        errors.append("pyx12: failure")
    if "IK5*A" not in ack or "AK9*A" not in ack:
        errors.append(f"999 does not accept the transaction: {ack}")
    return errors


@dataclass(frozen=True)
class ParsedLine:
    code: str
    modifiers: tuple[str, ...]
    charge: Decimal
    units: Decimal
    pointers: tuple[int, ...]


@dataclass(frozen=True)
class Parsed:
    control_number: str  # ISA13
    usage: str  # ISA15
    claim_number: str
    total: Decimal
    place_of_service: str
    frequency: str
    diagnoses: tuple[str, ...]  # with their qualifiers: ("ABK:M47816", ...)
    lines: tuple[ParsedLine, ...]
    references: dict[str, str]  # REF qualifier -> value in 2300
    dependent: bool
    relationship: str | None
    model: Any


def parse(text: str) -> Parsed:
    """The one claim of the interchange, read back with x12sdk."""
    isa = text[:106]
    element, component = isa[3], isa[104]
    with X12ModelReader(text) as reader:
        models = list(reader.models())
    assert len(models) == 1
    claims = list(models[0].claims())
    assert len(claims) == 1
    submitted = claims[0]
    clm = submitted.claim.clm_segment
    place, _, frequency = clm.health_care_service_location_information.split(component)
    diagnoses = tuple(
        ":".join(value)
        for hi in submitted.claim.hi_segment or []
        for name in type(hi).model_fields
        if name.startswith("health_care_code_") and (value := getattr(hi, name))
    )
    lines = []
    for loop in submitted.claim.loop_2400:
        sv1 = loop.sv1_segment
        qualifier, code, *modifiers = sv1.product_service_id_qualifier.split(component)
        assert qualifier == "HC"
        pointers = tuple(int(p) for p in sv1.composite_diagnosis_code_pointer.split(component))
        lines.append(ParsedLine(code, tuple(modifiers), sv1.line_item_charge_amount, sv1.service_unit_count, pointers))
    return Parsed(
        control_number=isa.split(element)[13],
        usage=isa.split(element)[15],
        claim_number=clm.patient_control_number,
        total=clm.total_claim_charge_amount,
        place_of_service=place,
        frequency=frequency,
        diagnoses=diagnoses,
        lines=tuple(lines),
        references={
            ref.reference_identification_qualifier: ref.reference_identification
            for ref in submitted.claim.ref_segment or []
        },
        dependent=submitted.is_dependent,
        relationship=submitted.relationship,
        model=models[0],
    )


def claim_lines(bundle: dict[str, Any]) -> list[tuple[str, tuple[str, ...], int, tuple[int, ...]]]:
    """The FHIR Claim's lines as (code, modifiers, quantity, diagnosis pointers)."""
    claim = bundle["entry"][0]["resource"]
    return [
        (
            item["productOrService"]["coding"][0]["code"],
            tuple(m["coding"][0]["code"] for m in item.get("modifier", [])),
            item["quantity"]["value"],
            tuple(item.get("diagnosisSequence", [])),
        )
        for item in claim.get("item", [])
    ]


def x12_lines(parsed: Parsed) -> list[tuple[str, tuple[str, ...], int, tuple[int, ...]]]:
    return [(line.code, line.modifiers, int(line.units), line.pointers) for line in parsed.lines]


def _resources(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if isinstance(node.get("resourceType"), str):
            found.append(node)
        for value in node.values():
            found.extend(_resources(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_resources(value))
    return found


def add_billing_data(document: Any) -> Any:
    """Give a test record what an 837P needs and test records leave out: addresses and birth
    dates of people, the clinic's address and tax id, payer ids, member ids. Nothing that coding
    or checking reads is touched."""
    for res in _resources(document):
        kind = res["resourceType"]
        if kind in ("Patient", "RelatedPerson"):
            res.setdefault(
                "address", [{"line": ["10 Main St"], "city": "Columbus", "state": "OH", "postalCode": "43215"}]
            )
            res.setdefault("birthDate", "1960-01-01")
            if not res.get("name"):
                res["name"] = [{"family": "Test", "given": ["Pat"]}]
        elif kind in ("Organization", "Practitioner"):
            identifiers = res.setdefault("identifier", [])
            identifiers.append({"system": EIN, "value": "31-4567890"})
            if kind == "Organization":
                identifiers.append({"system": NAIC, "value": "15999"})
            if not any(i.get("system") == NPI for i in identifiers):
                identifiers.append({"system": NPI, "value": CLINIC_NPI if kind == "Organization" else DOCTOR_NPI})
            # A billing provider's address needs the ZIP+4.
            office = {"line": ["1 Clinic Way"], "city": "Columbus", "state": "OH", "postalCode": "43215-1122"}
            res["address"] = [{**office, **a, "postalCode": office["postalCode"]} for a in res.get("address", [])] or [
                office
            ]
        elif kind == "Coverage":
            res.setdefault("subscriberId", "MEMBER0001")
    return document
