"""The claim as an X12 837P: every interchange written here passes pyx12's 005010X222A1 validation
and parses back (x12sdk) to the claim's codes, modifiers, units, pointers and amounts; the data an
837P needs that the record lacks holds the claim with findings naming loop and element."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from builders import NOW, CaseBuilder
from conftest import REPO, run_cli
from golden import CASES_DIR, case_files, write_input
from x12 import (
    CLINIC_NPI,
    add_billing_data,
    claim_lines,
    parse,
    settings,
    validate,
    write_config,
    x12_lines,
)

from adapter.decision import with_findings
from adapter.pipeline import Options, Result, process
from adapter.writers import WRITERS, X12_MEDIA_TYPE, x12_837p_writer
from adapter.writers.x12_837p import MEDIA_TYPE, X12Options, x12_requirements
from adapter.writers.x12_837p.charges import load_chargemaster
from adapter.writers.x12_837p.content import claim_number
from adapter.writers.x12_837p.interchange import interchange
from adapter.writers.x12_837p.writer import _content

EXAMPLE = REPO / "examples" / "medicare-lumbar-bilateral"
OWN_CASES = Path(__file__).resolve().parent / "cases"


def test_the_registry_names_the_837p_media_type_the_writer_has() -> None:
    # The registry says it without importing the writer (a claim starts without it).
    assert WRITERS["x12-837p"].media_type == X12_MEDIA_TYPE == MEDIA_TYPE


def billable_case(**kwargs: Any) -> CaseBuilder:
    case = CaseBuilder(**kwargs)
    case.block(["L4-L5", "L5-S1"], side="bilateral", intent="diagnostic")
    return case


def run(case: CaseBuilder, **options: Any) -> Result:
    return process(json.dumps(add_billing_data(case.bundle())).encode(), Options(now=NOW, **options))


def written(result: Result, *, number: int = 1, **changes: Any) -> str:
    """The 837P of a decision with the test settings and a fixed control number (no state)."""
    content = _content(result.decision, settings(**changes), load_chargemaster(), "1", None)
    assert content.complete, [m.message for m in content.missing]
    return interchange(content, settings(**changes), number, result.decision.created)


# --------------------------------------------------------------------------- the interchange


def test_the_example_is_a_valid_837p_with_the_claims_lines() -> None:
    result = process((EXAMPLE / "input.json").read_bytes(), Options(payer="medicare", now=NOW))
    writer = x12_837p_writer(X12Options(config=EXAMPLE / "x12-837p.toml", control_number=1))
    decision = writer.prepare(result.decision)
    assert decision.status == "ready" and decision.findings == result.decision.findings
    text = writer.write(decision, result.index).decode()
    assert validate(text) == []
    parsed = parse(text)
    assert (
        x12_lines(parsed)
        == claim_lines(result.bundle)
        == [("64493", ("50", "KX"), 1, (1,)), ("64494", ("50", "KX"), 1, (1,))]
    )
    assert [line.charge for line in parsed.lines] == [Decimal("1200"), Decimal("600")]
    assert parsed.total == Decimal("1800") and parsed.place_of_service == "11" and parsed.frequency == "1"
    assert parsed.diagnoses == ("ABK:M47816",)
    assert parsed.claim_number == claim_number(result.decision.identifier) and len(parsed.claim_number) == 20
    assert parsed.control_number == "000000001" and parsed.usage == "T"
    for segment in ("SBR*P*18*******MB~", "NM1*85*2*RIVERSIDE SPINE CENTER*****XX*1093817462~", "REF*EI*314567890~"):
        assert segment in text
    assert "NM1*82*1*OKAFOR*CHIDI****XX*1234567893~" in text  # 2310B rendering provider
    assert text.count("~") == len(text.splitlines())


def test_diagnoses_in_claim_order_pointers_and_prior_auth() -> None:
    case = billable_case(dx=["M54.16", "M47.816", "M51.36"], pos="22")
    result = run(case, payer="medicare", prior_auth="PA-2026-77")
    text = written(result)
    assert validate(text) == []
    parsed = parse(text)
    assert parsed.diagnoses == tuple(
        f"{'ABK' if i == 0 else 'ABF'}:{dx.code.replace('.', '')}" for i, dx in enumerate(result.decision.diagnoses)
    )
    assert parsed.diagnoses[0] == "ABK:M5416"
    assert x12_lines(parsed) == claim_lines(result.bundle)
    assert all(line.pointers[0] == 2 for line in parsed.lines)  # the covered M47.816 first
    assert parsed.references == {"G1": "PA-2026-77"} and parsed.place_of_service == "22"


def test_a_dependent_patient_has_the_2000c_loop() -> None:
    case = billable_case(payer_name="Acme Health")
    coverage = next(r for r in case.resources if r["resourceType"] == "Coverage")
    coverage["relationship"] = {"coding": [{"code": "child"}]}
    coverage["subscriber"] = {"reference": "RelatedPerson/mom"}
    case.add(
        {
            "resourceType": "RelatedPerson",
            "id": "mom",
            "patient": {"reference": "Patient/p1"},
            "name": [{"family": "Test", "given": ["Maria"]}],
            "gender": "female",
        }
    )
    result = run(case, payer="commercial")
    text = written(result)
    assert validate(text) == []
    parsed = parse(text)
    assert parsed.dependent and "PAT*19~" in text and "SBR*P********CI~" in text
    assert "HL*3*2*23*0~" in text and "NM1*QC*1*TEST~" in text
    assert x12_lines(parsed) == claim_lines(result.bundle)
    assert [line.modifiers for line in parsed.lines] == [("RT",), ("LT",), ("RT",), ("LT",)]


def test_rt_lt_lines_units_and_charges_of_a_commercial_claim() -> None:
    case = CaseBuilder(payer_name="Acme Health", therapy=("2026-01-02", "2026-05-25"))
    case.block(["L3-L4", "L4-L5", "L5-S1"], side="left", intent="diagnostic")
    result = run(case, payer="commercial")
    parsed = parse(text := written(result))
    assert validate(text) == []
    assert x12_lines(parsed) == claim_lines(result.bundle)
    charges = load_chargemaster()
    for line, decided in zip(parsed.lines, result.decision.lines, strict=True):
        assert line.charge == charges.line_charge(decided.code, decided.line.modifiers, decided.line.quantity)
    assert parsed.total == sum(line.charge for line in parsed.lines)


def test_custom_delimiters_and_production_usage() -> None:
    result = run(billable_case(), payer="medicare")
    delimiters = {"element": "|", "component": ">", "repetition": "!", "segment": "#"}
    text = written(result, delimiters=delimiters, segment_newline=False)
    assert "\n" not in text and text.startswith("ISA|00|")
    assert text[104] == ">" and text[105] == "#" and text.split("|")[11] == "!"
    assert validate(text) == []
    assert x12_lines(parse(text)) == claim_lines(result.bundle)


def test_record_values_never_carry_a_delimiter() -> None:
    case = billable_case()
    clinic = next(r for r in case.resources if r.get("id") == "clinic")
    clinic["name"] = "Spine*Care: Ñandú ~ Clinic^"
    result = run(case, payer="medicare")
    text = written(result)
    assert validate(text) == []
    assert "NM1*85*2*SPINE CARE NANDU CLINIC*****XX*" in text


# --------------------------------------------------------------------------- every ready golden case


def _ready_cases() -> list[Path]:
    found = []
    for path in [*case_files(CASES_DIR), *case_files(OWN_CASES)]:
        case = json.loads(path.read_text())
        if case["expect"]["exit"] == 0 and case["use"] == "claim":
            found.append(path)
    return found


READY = _ready_cases()


@pytest.mark.parametrize("case_path", READY, ids=[p.name for p in READY])
def test_a_ready_golden_case_as_837p_has_the_claims_lines(case_path: Path, tmp_path: Path) -> None:
    case = json.loads(case_path.read_text())
    case["input"] = add_billing_data(case["input"])
    source = write_input(case, tmp_path)
    result = process(source.read_bytes(), Options(payer=case["payer"], pos=case.get("pos"), now=NOW), name=source.name)
    assert result.exit_code == 0
    text = written(result)
    assert validate(text) == []
    parsed = parse(text)
    assert x12_lines(parsed) == claim_lines(result.bundle)
    want = sorted((x["code"], tuple(sorted(x["modifiers"])), x["quantity"]) for x in case["expect"].get("lines", []))
    if "lines" in case["expect"]:
        assert sorted((code, tuple(sorted(mods)), units) for code, mods, units, _ in x12_lines(parsed)) == want
    assert parsed.diagnoses == tuple(
        f"{'ABK' if i == 0 else 'ABF'}:{dx.code.replace('.', '')}" for i, dx in enumerate(result.decision.diagnoses)
    )
    assert parsed.total == sum(line.charge for line in parsed.lines)


def test_ready_golden_cases_are_found() -> None:
    assert len(READY) >= 50


# --------------------------------------------------------------------------- data the 837P needs


def test_missing_data_is_a_finding_naming_loop_and_element() -> None:
    case = billable_case()  # the builder's record: no NPIs, addresses, tax id, payer id, member id
    result = case.run(payer="medicare")
    assert result.decision.status == "ready"
    findings = x12_requirements(result.decision, settings())
    messages = [f.message for f in findings]
    assert {f.rule_id for f in findings} == {"claim-data-missing"} and all(f.severity == "error" for f in findings)
    for start in (
        "2010AA NM109 billing provider NPI: Organization/clinic has no NPI",
        "2010AA N301 billing provider street address: Organization/clinic has no address.",
        "2010AA N403 billing provider ZIP+4 code (nine digits)",
        "2010AA REF02 billing provider tax id (REF*EI)",
        "2010BA NM109 subscriber member id",
        "2010BA DMG02 subscriber birth date: Patient/p1",
        "2010BB NM109 payer id: Organization/payer",
        "2310B NM109 rendering provider NPI: Practitioner/dr1",
    ):
        assert any(message.startswith(start) for message in messages), (start, messages)
    held = with_findings(result.decision, findings)
    assert held.held and held.exit_code == 1 and len(held.findings) == len(findings) + len(result.decision.findings)
    severities = [f.severity for f in held.findings]
    assert severities == sorted(severities, key=lambda s: "ewi".index(s[0]))


def test_a_five_digit_billing_zip_and_a_missing_price_are_findings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    case = billable_case()
    document = add_billing_data(case.bundle())
    clinic = next(r for r in document["entry"] if r["resource"].get("id") == "clinic")["resource"]
    clinic["address"][0]["postalCode"] = "43215"
    (tmp_path / "chargemaster.toml").write_text(
        'example = false\nversion = "site-1"\ncurrency = "USD"\n[prices]\n"64493" = "500.00"\n'
    )
    monkeypatch.setenv("FACET_ADAPTER_PACKS", str(tmp_path))
    _clear_caches()
    try:
        result = process(json.dumps(document).encode(), Options(payer="medicare", now=NOW))
        messages = [f.message for f in x12_requirements(result.decision, settings())]
    finally:
        monkeypatch.delenv("FACET_ADAPTER_PACKS")
        _clear_caches()
    assert messages == [
        "2010AA N403 billing provider ZIP+4 code (nine digits): Organization/clinic has no ZIP+4 code (nine digits) "
        "in its address.",
        "2400 SV102 line charge: the chargemaster (version site-1) has no price for 64494.",
    ]


def _clear_caches() -> None:
    from adapter.rules.selection import load_pack
    from adapter.tables import load_toml

    load_chargemaster.cache_clear()
    load_toml.cache_clear()
    load_pack.cache_clear()


def test_the_registered_writer_adds_its_findings_and_does_not_write_held_claims(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FACET_ADAPTER_X12_CONFIG", str(write_config(tmp_path)))
    writer = WRITERS["x12-837p"]
    assert writer.media_type == "application/EDI-X12" and not writer.writes_held
    plain = billable_case().run(payer="medicare").decision
    assert WRITERS["fhir"].writes_held and WRITERS["fhir"].prepare(plain) is plain
    incomplete = billable_case().run(payer="medicare").decision
    assert writer.prepare(incomplete).held
    result = run(billable_case(), payer="medicare")
    ready = writer.prepare(result.decision)
    assert ready.status == "ready"
    first, second = (parse(writer.write(ready, result.index).decode()) for _ in range(2))
    assert (first.control_number, second.control_number) == ("000000001", "000000002")
    assert (first.frequency, second.frequency) == ("1", "1")  # the same content again: a retransmission


# --------------------------------------------------------------------------- the command line


def _x12_args(source: Path, config: Path) -> list[str]:
    return ["claim", str(source), "--payer", "medicare", "--format", "x12-837p", "--x12-config", str(config)]


def _input(tmp_path: Path, case: CaseBuilder) -> Path:
    path = tmp_path / "input.json"
    path.write_text(json.dumps(add_billing_data(case.bundle())))
    return path


def test_claim_writes_the_837p_and_exits_0(tmp_path: Path) -> None:
    source, config = _input(tmp_path, billable_case()), write_config(tmp_path)
    out = tmp_path / "claim.x12"
    got = run_cli(
        "claim", str(source), "--payer", "medicare", "--format", "x12-837p", "--x12-config", str(config), "-o", str(out)
    )
    assert got.code == 0, got.stderr.decode()
    assert got.stdout == b"" and validate(out.read_text()) == []
    assert b"Claim active" in got.stderr
    state = json.loads((tmp_path / "x12-state.json").read_text())
    assert state["next_control_number"] == 2 and len(state["claims"]) == 1


def test_a_held_claim_writes_no_837p_unless_forced(tmp_path: Path) -> None:
    source = _input(tmp_path, billable_case(dx="M54.16"))  # no covered diagnosis: dx-not-covered holds it
    config = write_config(tmp_path)
    args = _x12_args(source, config)
    held = run_cli(*args, "-o", str(tmp_path / "held.x12"))
    assert held.code == 1 and held.stdout == b"" and not (tmp_path / "held.x12").exists()
    assert b"dx-not-covered" in held.stderr and b"837P not written" in held.stderr
    assert not (tmp_path / "x12-state.json").exists()  # no control number taken
    forced = run_cli(*args, "--force")
    assert forced.code == 1 and b"dx-not-covered" in forced.stderr
    assert validate(forced.stdout.decode()) == []
    assert parse(forced.stdout.decode()).control_number == "000000001"


def test_missing_data_holds_the_837p_and_force_cannot_invent_it(tmp_path: Path) -> None:
    source = tmp_path / "input.json"
    source.write_text(json.dumps(billable_case().bundle()))
    config = write_config(tmp_path)
    args = _x12_args(source, config)
    held = run_cli(*args)
    assert held.code == 1 and held.stdout == b""
    assert b"claim-data-missing: 2010AA NM109 billing provider NPI: Organization/clinic has no NPI" in held.stderr
    forced = run_cli(*args, "--force")
    assert forced.code == 1 and forced.stdout == b""
    assert b"cannot be written without the data it requires" in forced.stderr
    # The same record as a FHIR Claim is ready: the 837P's needs are its own.
    assert run_cli("claim", str(source), "--payer", "medicare").code == 0


def test_npi_invalid_holds_every_format(tmp_path: Path) -> None:
    case = billable_case()
    document = add_billing_data(case.bundle())
    clinic = next(r for r in document["entry"] if r["resource"].get("id") == "clinic")["resource"]
    npi = next(i for i in clinic["identifier"] if i["system"].endswith("us-npi"))
    npi["value"] = CLINIC_NPI[:-1] + "5"
    source = tmp_path / "input.json"
    source.write_text(json.dumps(document))
    fhir = run_cli("claim", str(source), "--payer", "medicare")
    assert fhir.code == 1 and b"npi-invalid: Organization/clinic" in fhir.stderr
    config = write_config(tmp_path)
    args = _x12_args(source, config)
    x12 = run_cli(*args)
    assert x12.code == 1 and x12.stdout == b"" and b"npi-invalid" in x12.stderr
    forced = run_cli(*args, "--force")  # the NPI is there, only wrong: the 837P can be written
    assert forced.code == 1 and validate(forced.stdout.decode()) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--use", "preauthorization"], b"needs --use claim"),
        (["--delimiters", "*:^"], b"four characters"),
        (["--delimiters", "**^~"], b"must differ"),
        (["--x12-config", "/nonexistent/x12.toml"], b"does not exist"),
        (["--usage-indicator", "P"], b"chargemaster is an example"),
    ],
)
def test_x12_usage_errors_exit_2(tmp_path: Path, extra: list[str], message: bytes) -> None:
    source = _input(tmp_path, billable_case())
    config = write_config(tmp_path)
    got = run_cli(
        "claim", str(source), "--payer", "medicare", "--format", "x12-837p", "--x12-config", str(config), *extra
    )
    assert got.code == 2 and got.stdout == b"", got.stderr.decode()
    assert message in got.stderr


def test_x12_options_need_the_x12_format_and_settings(tmp_path: Path) -> None:
    source = _input(tmp_path, billable_case())
    got = run_cli("claim", str(source), "--payer", "medicare", "--void")
    assert got.code == 2 and b"--void: only with --format x12-837p" in got.stderr
    bare = run_cli("claim", str(source), "--payer", "medicare", "--format", "x12-837p")
    assert bare.code == 2 and b"submitter" in bare.stderr
    config = write_config(tmp_path, state=False)
    no_state = run_cli("claim", str(source), "--payer", "medicare", "--format", "x12-837p", "--x12-config", str(config))
    assert no_state.code == 2 and b"--control-number" in no_state.stderr
    fixed = run_cli(
        "claim", str(source), "--payer", "medicare", "--format", "x12-837p", "--x12-config", str(config),
        "--control-number", "42", "--submitter-id", "OTHERSUB", "--usage-indicator", "T",
    )  # fmt: skip
    assert fixed.code == 0 and parse(fixed.stdout.decode()).control_number == "000000042"
    assert b"*ZZ*OTHERSUB       *" in fixed.stdout and b"NM1*41*2*TEST CLINIC*****46*OTHERSUB~" in fixed.stdout
