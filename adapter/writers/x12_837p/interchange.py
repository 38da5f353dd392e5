"""The claim content → one ASC X12 005010X222A1 837P interchange (docs/output.md, X12 837P).

The transaction (ST to SE) is built as x12sdk's typed models, which check each segment's
elements, code values, the HL linkage and the SE count when they are made; x12sdk writes them
with the site's delimiters. The interchange envelope is written here: x12sdk's own envelope writer
(`write_transactions`) fixes the repetition and component separators and its ISA model ignores
custom delimiters, so ISA is formatted directly and GS / GE / IEA use x12sdk's segment models.
This module imports x12sdk (about half a second): only the X12 format loads it.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from x12sdk.models import X12Delimiters
from x12sdk.support import count_segments
from x12sdk.v5010.segments import GeSegment, GsSegment, IeaSegment
from x12sdk.v5010.x12_837_005010X222A2.transaction_set import HealthCareClaimProfessional

from ...errors import InternalError
from .content import ClaimContent, Line, Name, Person, Place, Provider, clean
from .settings import X12Settings

VERSION = "005010X222A1"


class _Values:
    """Element values with the delimiters taken out (a value never splits a segment)."""

    def __init__(self, settings: X12Settings) -> None:
        self.delimiters = settings.delimiters
        self.remove = str.maketrans({char: " " for char in settings.delimiters.all})

    def text(self, value: str) -> str:
        return clean(value.translate(self.remove)) or ""

    def composite(self, *parts: str) -> str:
        return self.delimiters.component.join(self.text(part) for part in parts)


def amount(value: Decimal) -> Decimal:
    """An X12 amount: cents, without trailing zeros (1200.00 → 1200, 1200.50 → 1200.5)."""
    return value.quantize(Decimal("0.01")).normalize()


def _required(value: Any, element: str) -> Any:
    if value is None:
        raise InternalError(f"837P element {element} has no value although the claim content is complete.")
    return value


def _nm1(values: _Values, entity: str, name: Name, qualifier: str | None, ident: str | None) -> dict[str, Any]:
    segment: dict[str, Any] = {
        "entity_identifier_code": entity,
        "entity_type_qualifier": "1" if name.person else "2",
        "name_last_or_organization_name": values.text(name.last),
    }
    if name.person:
        segment["name_first"] = values.text(name.first) if name.first else None
        segment["name_middle"] = values.text(name.middle) if name.middle else None
    if qualifier and ident:
        segment["identification_code_qualifier"] = qualifier
        segment["identification_code"] = values.text(ident)
    return segment


def _address(values: _Values, place: Place) -> dict[str, Any]:
    return {
        "n3_segment": {
            "address_information_1": values.text(place.line1),
            "address_information_2": values.text(place.line2) if place.line2 else None,
        },
        "n4_segment": {
            "city_name": values.text(place.city),
            "state_province_code": values.text(place.state),
            "postal_code": place.postal_code,
        },
    }


def _person(values: _Values, entity: str, person: Person, member_id: str | None) -> dict[str, Any]:
    loop: dict[str, Any] = {
        "nm1_segment": _nm1(values, entity, _required(person.name, f"{entity} NM103"), "MI", member_id)
    }
    if person.address is not None:
        loop.update(_address(values, person.address))
    if person.birth_date is not None:
        loop["dmg_segment"] = {
            "date_time_period_format_qualifier": "D8",
            "date_time_period": person.birth_date.strftime("%Y%m%d"),
            "gender_code": person.gender,
        }
    return loop


def _billing(values: _Values, billing: Provider) -> dict[str, Any]:
    name = _required(billing.name, "2010AA NM103")
    return {
        "nm1_segment": _nm1(values, "85", name, "XX", _required(billing.npi, "2010AA NM109")),
        **_address(values, _required(billing.address, "2010AA N3")),
        "ref_segment": [
            {"reference_identification_qualifier": "EI", "reference_identification": _required(billing.tax_id, "REF")}
        ],
    }


def _line(values: _Values, line: Line) -> dict[str, Any]:
    return {
        "lx_segment": {"assigned_number": str(line.number)},
        "sv1_segment": {
            "product_service_id_qualifier": values.composite("HC", line.code, *line.modifiers),
            "line_item_charge_amount": amount(_required(line.charge, "2400 SV102")),
            "unit_basis_measurement_code": "UN",
            "service_unit_count": Decimal(line.units),
            "composite_diagnosis_code_pointer": values.composite(*(str(p) for p in line.pointers)),
        },
        "dtp_segment": [
            {
                "date_time_qualifier": "472",
                "date_time_period_format_qualifier": "D8",
                "date_time_period": line.date.strftime("%Y%m%d"),
            }
        ],
    }


def _claim(values: _Values, content: ClaimContent) -> dict[str, Any]:
    refs = []
    if content.prior_auth:
        refs.append({"reference_identification_qualifier": "G1", "reference_identification": content.prior_auth})
    if content.frequency in ("7", "8") and content.payer_claim_number:
        refs.append(
            {"reference_identification_qualifier": "F8", "reference_identification": content.payer_claim_number}
        )
    diagnoses = {
        f"health_care_code_{i}": ["ABK" if i == 1 else "ABF", code] for i, code in enumerate(content.diagnoses, start=1)
    }
    loop: dict[str, Any] = {
        "clm_segment": {
            "patient_control_number": content.claim_number,
            "total_claim_charge_amount": amount(_required(content.total, "CLM02")),
            "health_care_service_location_information": values.composite(
                content.place_of_service, "B", content.frequency
            ),
            "provider_or_supplier_signature_indicator": "Y",
            "provider_accept_assignment_code": content.accept_assignment,
            "benefit_assignment_certification_indicator": "Y",
            "release_of_information_code": "Y",
        },
        "ref_segment": [{k: values.text(v) for k, v in ref.items()} for ref in refs] or None,
        "hi_segment": [diagnoses],
        "loop_2400": [_line(values, line) for line in content.lines],
    }
    if content.rendering is not None:
        rendering = content.rendering
        name = _required(rendering.name, "2310B NM103")
        loop["loop_2310b"] = {"nm1_segment": _nm1(values, "82", name, "XX", _required(rendering.npi, "2310B NM109"))}
    return loop


def transaction(content: ClaimContent, settings: X12Settings, control_number: int, created: dt.datetime) -> Any:
    """The 837P transaction set (ST to SE) as x12sdk's validated model."""
    values = _Values(settings)
    st02 = f"{control_number:04d}"
    submitter, receiver = settings.submitter, settings.receiver
    contact: dict[str, Any] = {"contact_function_code": "IC", "name": values.text(submitter.contact_name)}
    numbers = [("TE", submitter.phone), ("EM", submitter.email)]
    for position, (qualifier, number) in enumerate([n for n in numbers if n[1]], start=1):
        contact[f"communication_number_qualifier_{position}"] = qualifier
        contact[f"communication_number_{position}"] = values.text(str(number))
    subscriber_loop: dict[str, Any] = {
        "hl_segment": {
            "hierarchical_id_number": "2",
            "hierarchical_parent_id_number": "1",
            "hierarchical_level_code": "22",
            "hierarchical_child_code": "1" if content.patient is not None else "0",
        },
        "sbr_segment": {
            "payer_responsibility_code": "P",
            "individual_relationship_code": "18" if content.patient is None else None,
            "group_policy_number": values.text(content.group_number) if content.group_number else None,
            "claim_filing_indicator_code": content.filing_indicator,
        },
        "loop_2010ba": _person(values, "IL", content.subscriber, _required(content.member_id, "2010BA NM109")),
        "loop_2010bb": {
            "nm1_segment": {
                "entity_identifier_code": "PR",
                "entity_type_qualifier": "2",
                "name_last_or_organization_name": values.text(_required(content.payer_name, "2010BB NM103")),
                "identification_code_qualifier": "PI",
                "identification_code": values.text(_required(content.payer_id, "2010BB NM109")),
            }
        },
    }
    claim = _claim(values, content)
    if content.patient is None:
        subscriber_loop["loop_2300"] = [claim]
    else:
        patient_loop = _person(values, "QC", content.patient, None)
        subscriber_loop["loop_2000c"] = [
            {
                "hl_segment": {
                    "hierarchical_id_number": "3",
                    "hierarchical_parent_id_number": "2",
                    "hierarchical_level_code": "23",
                    "hierarchical_child_code": "0",
                },
                "pat_segment": {"individual_relationship_code": content.patient_relationship},
                "loop_2010ca": patient_loop,
                "loop_2300": [claim],
            }
        ]
    structure: dict[str, Any] = {
        "header": {
            "st_segment": {
                "transaction_set_identifier_code": "837",
                "transaction_set_control_number": st02,
                "implementation_convention_reference": VERSION,
            },
            "bht_segment": {
                "hierarchical_structure_code": "0019",
                "transaction_set_purpose_code": "00",
                "submitter_transactional_identifier": f"{control_number:09d}",
                "transaction_set_creation_date": created.strftime("%Y%m%d"),
                "transaction_set_creation_time": created.strftime("%H%M"),
                "transaction_type_code": "CH",
            },
        },
        "loop_1000a": {
            "nm1_segment": {
                "entity_identifier_code": "41",
                "entity_type_qualifier": "2",
                "name_last_or_organization_name": values.text(submitter.name),
                "identification_code_qualifier": "46",
                "identification_code": values.text(submitter.id),
            },
            "per_segment": [contact],
        },
        "loop_1000b": {
            "nm1_segment": {
                "entity_identifier_code": "40",
                "entity_type_qualifier": "2",
                "name_last_or_organization_name": values.text(receiver.name),
                "identification_code_qualifier": "46",
                "identification_code": values.text(receiver.id),
            }
        },
        "loop_2000a": [
            {
                "hl_segment": {
                    "hierarchical_id_number": "1",
                    "hierarchical_level_code": "20",
                    "hierarchical_child_code": "1",
                },
                "loop_2010aa": _billing(values, content.billing),
                "loop_2000b": [subscriber_loop],
            }
        ],
    }
    # SE01 counts the segments from ST to SE: count the structure with SE in it, then set it.
    footer = {"se_segment": {"transaction_segment_count": 1, "transaction_set_control_number": st02}}
    footer["se_segment"]["transaction_segment_count"] = count_segments({**structure, "footer": footer})
    return HealthCareClaimProfessional.model_validate({**structure, "footer": footer})


def interchange(content: ClaimContent, settings: X12Settings, control_number: int, created: dt.datetime) -> str:
    """ISA, GS, the transaction, GE, IEA; one segment per line when the settings ask for it."""
    delimiters = settings.delimiters
    x12_delimiters = X12Delimiters(
        element_separator=delimiters.element,
        repetition_separator=delimiters.repetition,
        segment_terminator=delimiters.segment,
        component_separator=delimiters.component,
    )
    values = _Values(settings)
    model = transaction(content, settings, control_number, created)
    submitter, receiver = settings.submitter, settings.receiver
    isa13 = f"{control_number:09d}"
    isa = delimiters.element.join(
        [
            "ISA",
            "00",
            " " * 10,
            "00",
            " " * 10,
            submitter.interchange_id_qualifier,
            values.text(submitter.interchange).ljust(15),
            receiver.interchange_id_qualifier,
            values.text(receiver.interchange).ljust(15),
            created.strftime("%y%m%d"),
            created.strftime("%H%M"),
            delimiters.repetition,
            "00501",
            isa13,
            "1" if settings.acknowledgment_requested else "0",
            settings.usage_indicator,
            delimiters.component,
        ]
    )
    gs = GsSegment(
        functional_identifier_code="HC",
        application_sender_code=values.text(submitter.interchange),
        application_receiver_code=values.text(receiver.interchange),
        functional_group_creation_date=created.strftime("%Y%m%d"),
        functional_group_creation_time=created.strftime("%H%M"),
        group_control_number=str(control_number),
        responsible_agency_code="X",
        version_identifier_code=VERSION,
    )
    ge = GeSegment(number_of_transaction_sets_included=1, group_control_number=str(control_number))
    iea = IeaSegment(number_of_included_functional_groups=1, interchange_control_number=isa13)
    newline = "\n" if settings.segment_newline else ""
    segments = [
        isa + delimiters.segment,
        gs.x12(custom_delimiters=x12_delimiters),
        model.x12(use_new_lines=settings.segment_newline, custom_delimiters=x12_delimiters),
        ge.x12(custom_delimiters=x12_delimiters),
        iea.x12(custom_delimiters=x12_delimiters),
    ]
    return newline.join(segments) + newline
