"""npi-invalid: an NPI of a provider the claim names must pass its check digit (Luhn over 80840 and
the ten digits), whatever the output format."""

from __future__ import annotations

import pytest
from builders import CaseBuilder, rule_ids

from adapter.rules.providers import npi_valid

NPI = "http://hl7.org/fhir/sid/us-npi"
VALID = ["1234567893", "1093817462", "1245319599", "1588667638", "1326049826", "1710987656"]


@pytest.mark.parametrize("npi", VALID)
def test_a_valid_npi_passes_and_every_other_check_digit_fails(npi: str) -> None:
    assert npi_valid(npi)
    for digit in "0123456789":
        if digit != npi[-1]:
            assert not npi_valid(npi[:-1] + digit)


@pytest.mark.parametrize("value", ["", "123456789", "12345678930", "12345 6789", "123456789O", "１２３４５６７８９３"])
def test_an_npi_that_is_not_ten_ascii_digits_fails(value: str) -> None:
    assert not npi_valid(value)


def test_a_swap_of_two_digits_is_caught() -> None:
    assert npi_valid("1234567893") and not npi_valid("2134567893")


def _case(practitioner_npi: str | None, clinic_npi: str | None = None) -> CaseBuilder:
    case = CaseBuilder()
    case.block(["L4-L5", "L5-S1"], side="bilateral", intent="diagnostic")
    for resource in case.resources:
        if resource.get("id") == "dr1" and practitioner_npi is not None:
            resource["identifier"] = [{"system": NPI, "value": practitioner_npi}]
        if resource.get("id") == "clinic" and clinic_npi is not None:
            resource["identifier"] = [{"system": NPI, "value": clinic_npi}]
    return case


def test_valid_npis_raise_nothing() -> None:
    result = _case("1234567893", "1093817462").run(payer="medicare")
    assert "npi-invalid" not in rule_ids(result) and result.exit_code == 0


def test_an_invalid_npi_holds_the_claim_and_names_the_resource() -> None:
    result = _case("1234567894", "1093817462").run(payer="medicare")
    findings = [f for f in result.findings if f.rule_id == "npi-invalid"]
    assert len(findings) == 1 and result.exit_code == 1 and result.bundle["entry"][0]["resource"]["status"] == "draft"
    finding = findings[0]
    assert finding.severity == "error" and finding.carc == "16" and finding.issue == "invalid"
    assert finding.message.startswith("Practitioner/dr1: the NPI of the provider fails its check digit")
    assert "1234567894" not in finding.message  # the message names the resource, not the value
    assert finding.expressions == ("Bundle.entry[1].resource.identifier[0].value",)


def test_the_billing_organization_and_a_malformed_npi_are_checked_too() -> None:
    result = _case("1234567893", "10938174").run(payer="medicare")
    messages = [f.message for f in result.findings if f.rule_id == "npi-invalid"]
    assert messages == [
        "Organization/clinic: the NPI of the billing provider is not ten digits; a clearinghouse rejects the claim."
    ]


def test_a_facility_npi_is_checked_and_a_payer_npi_is_not() -> None:
    case = _case("1234567893")
    for resource in case.resources:
        if resource.get("id") == "loc":
            resource["identifier"] = [{"system": NPI, "value": "1111111111"}]
        if resource.get("id") == "payer":
            resource["identifier"] = [{"system": NPI, "value": "2222222222"}]
    messages = [f.message for f in case.run(payer="medicare").findings if f.rule_id == "npi-invalid"]
    assert messages == [
        "Location/loc: the NPI of the facility fails its check digit (Luhn over 80840 and the ten digits); "
        "a clearinghouse rejects the claim."
    ]
