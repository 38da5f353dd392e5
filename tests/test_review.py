"""The coder's review: what the decision carries for it, the words its formats share, the HTML
writer (without a browser: tests/test_review_page.py opens the page in one), and the reasons a
held claim's Bundle carries."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import REPO
from test_output_valid import assert_valid_r4

from adapter.fhir.ingest import parse_bytes
from adapter.pipeline import Options, Result, process
from adapter.read.locations import Locator, element_words
from adapter.rules.packs import available_packs
from adapter.rules.selection import load_pack
from adapter.tables import load_toml
from adapter.writers import WRITERS, wording
from adapter.writers.html import review_fragment, review_page
from adapter.writers.review import review_text

CASES = REPO / "tests" / "cases"


def _run(name: str, **options: object) -> Result:
    case = json.loads((CASES / name).read_text())
    raw = json.dumps(case["input"]).encode()
    if case.get("format") == "ndjson":
        raw = b"\n".join(json.dumps(e["resource"]).encode() for e in case["input"]["entry"])
    defaults: dict[str, object] = {"payer": case["payer"], "use": case["use"], "pos": case.get("pos")}
    return process(raw, Options(**{**defaults, **options}))  # type: ignore[arg-type]


def _example(name: str) -> Result:
    return process((REPO / "examples" / name / "input.json").read_bytes(), Options(payer="medicare"))


def _finding(result: Result, rule_id: str):  # type: ignore[no-untyped-def]
    return next(f for f in result.decision.findings if f.rule_id == rule_id)


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _page_text(page: str) -> str:
    parser = _Text()
    parser.feed(page)
    return " ".join(" ".join(parser.parts).split())


def _flat(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------- the same words in both reviews

SAMPLE = sorted(p.name for p in CASES.glob("*.json"))[::6]


@pytest.mark.parametrize("name", SAMPLE)
def test_the_text_review_and_the_page_say_the_same_things(name: str) -> None:
    try:
        result = _run(name)
    except Exception as error:  # an input-error case writes no review
        pytest.skip(f"input error: {type(error).__name__}")
    decision = result.decision
    text = _flat(review_text(decision))
    page = _page_text(review_page(decision))
    said = [wording.verdict(decision), wording.place_of_service(decision), decision.pack_version]
    for line in decision.lines:
        said.append(wording.code_reason(line))
        said.extend(note.reason for note in wording.modifier_notes(line))
    for dx in decision.diagnoses:
        said.append(wording.diagnosis_source(decision, dx.sequence))
    said.extend(entry.text for entry in decision.evidence)
    for finding in decision.findings:
        said += [finding.message, finding.citation, finding.hint, f"{finding.rule_id}"]
        said.extend(location.text for location in finding.locations[:4])
        said.extend(url for _, url in finding.links)
        if (sentence := wording.carc_sentence(finding)) is not None:
            said.append(sentence)
    for words in said:
        assert _flat(words) in text, words
        assert _flat(words) in page or words.startswith("https://"), words
    for finding in decision.findings:
        for _, url in finding.links:
            assert f'href="{html.escape(url)}"' in review_page(decision)


# --------------------------------------------------------------------------- KX and the other modifiers


def test_kx_is_explained_on_diagnostic_lines_and_its_absence_on_rfa_and_therapeutic_lines() -> None:
    diagnostic = _example("medicare-lumbar-bilateral")
    for line in diagnostic.decision.lines:
        assert "KX" in line.line.modifiers and "diagnostic injection" in line.line.modifier_reasons["KX"]
        assert "bilateral" in line.line.modifier_reasons["50"] and not line.line.modifiers_left_off
    rfa = _example("medicare-lumbar-rfa-transaction")
    for line in rfa.decision.lines:
        assert "KX" not in line.line.modifiers
        assert line.line.modifiers_left_off["KX"].startswith("radiofrequency ablation")
    therapeutic = _run("44-therapeutic-from-code-text-after-two-blocks.json", payer="medicare")
    assert all(
        line.line.modifiers_left_off["KX"].startswith("therapeutic injection") for line in therapeutic.decision.lines
    )
    text = review_text(rfa.decision)
    assert "no KX: radiofrequency ablation; the payer asks for KX on diagnostic injections only" in text


def test_commercial_bilateral_lines_say_why_rt_and_lt() -> None:
    result = _run("119-searchset-commercial-third-level-lumbar-bilateral-rt-lt.json")
    reasons = [line.line.modifier_reasons for line in result.decision.lines]
    assert any("right side of a bilateral level" in r.get("RT", "") for r in reasons)
    assert any("left side of a bilateral level" in r.get("LT", "") for r in reasons)


def test_a_line_without_a_side_says_why_it_has_no_side_modifier() -> None:
    result = _run("28-missing-side-and-no-provider.json")
    assert "laterality-unknown" in result.decision.lines[0].line.modifiers_left_off["RT, LT or 50"]


# --------------------------------------------------------------------------- findings in a coder's words


def test_input_corrected_says_what_the_record_had_what_the_claim_uses_and_the_denial_avoided() -> None:
    finding = _finding(_run("65-input-corrected-64495-on-two-level-session.json"), "input-corrected")
    assert "the record codes L5-S1, L4-L5" in finding.message and "as 64493, 64495" in finding.message
    assert "the claim uses 64493, 64494" in finding.message and "not denied" in finding.message
    assert finding.avoids_denial
    sentence = wording.carc_sentence(finding)
    assert sentence is not None and sentence.startswith("Denial avoided") and "CARC 4 (" in sentence
    assert "would likely deny it with CARC 4" in sentence and "Payer would likely deny" not in review_text(
        _run("65-input-corrected-64495-on-two-level-session.json").decision
    )


def test_an_error_finding_expects_the_denial() -> None:
    finding = _finding(_run("28-missing-side-and-no-provider.json"), "laterality-unknown")
    assert wording.carc_sentence(finding) == (
        "A payer would likely deny it with CARC 4 (The procedure code is inconsistent with the modifier used, "
        "or a required modifier is missing)."
    )


def test_claim_data_missing_names_only_what_is_missing() -> None:
    coverage_only = _run("21-no-level-levels-unknown-no-coverage.json")
    finding = _finding(coverage_only, "claim-data-missing")
    assert "performer" not in finding.hint and "Coverage" in finding.hint
    provider_only = _finding(_run("28-missing-side-and-no-provider.json"), "claim-data-missing")
    assert "performer" in provider_only.hint and "Coverage" not in provider_only.hint
    assert "To fix: Record who performed the procedure" in json.dumps(
        _run("28-missing-side-and-no-provider.json").outcome()
    )


def test_pain_duration_reads_naturally() -> None:
    no_condition = _finding(_run("71-reasoncode-only-diagnosis-has-no-onset.json"), "pain-duration")
    assert no_condition.message.startswith("Pain duration cannot be checked: no Condition on record")
    assert "No Condition:" not in no_condition.message
    no_onset = _finding(_run("47-intent-both-words-unknown-and-no-onset.json"), "pain-duration")
    assert no_onset.message.startswith("Pain duration cannot be checked: Condition/cond1 has no onset date")


def test_citations_name_documents_not_the_contract() -> None:
    for name in available_packs():
        pack = load_pack(name)
        for rule_id in pack.rules:
            citation = pack.citation(rule_id)
            assert "contract" not in citation and "§" not in citation, (name, rule_id, citation)
        assert pack.citation("payer-defaulted").startswith("docs/cli.md")


def test_every_carc_a_pack_names_is_in_words() -> None:
    table = load_toml("carc.toml")["codes"]
    used = {spec.carc for name in available_packs() for spec in load_pack(name).rules.values() if spec.carc}
    assert used <= set(table), used - set(table)


def test_medicare_citations_link_the_lcd_and_article_pages() -> None:
    pack = load_pack("medicare")
    links = dict(pack.citation_links("diagnostic-block-prerequisite"))
    assert links == {
        "LCD L38773 Facet Joint Interventions for Pain Management (CGS J15)": (
            "https://www.cms.gov/medicare-coverage-database/view/lcd.aspx?lcdid=38773"
        )
    }
    assert dict(load_pack("medicare-noridian-jf").citation_links("dx-not-covered")) == {
        "Billing and Coding article A58405 (Noridian JF)": (
            "https://www.cms.gov/medicare-coverage-database/view/article.aspx?articleid=58405"
        )
    }
    assert load_pack("commercial").citation_links("dx-not-covered") == ()


@pytest.fixture
def site_packs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "packs").mkdir()
    monkeypatch.setenv("FACET_ADAPTER_PACKS", str(tmp_path))
    load_pack.cache_clear()
    load_toml.cache_clear()
    yield tmp_path / "packs"
    load_pack.cache_clear()
    load_toml.cache_clear()


def test_a_pack_that_names_another_document_does_not_inherit_its_address(site_packs: Path) -> None:
    head = 'version = "1"\nextends = "medicare"\ntitle = "site"\n'
    (site_packs / "site-a.toml").write_text(f'name = "site-a"\n{head}[documents]\nlcd = {{ title = "Our LCD" }}\n')
    (site_packs / "site-b.toml").write_text(f'name = "site-b"\n{head}[documents]\narticle = "Our article"\n')
    assert load_pack("site-a").citation_links("frequency-limit") == ()
    assert load_pack("site-b").citation_links("dx-not-covered") == ()
    # What it does not rename it inherits, with the address.
    assert load_pack("site-b").citation_links("frequency-limit")[0][1].endswith("lcdid=38773")


# --------------------------------------------------------------------------- locations


def test_locations_name_the_resource_and_the_element() -> None:
    finding = _finding(_run("28-missing-side-and-no-provider.json"), "laterality-unknown")
    assert [location.text for location in finding.locations] == ["Procedure/proc1 · body site 1"]
    assert finding.locations[0].expression == "Bundle.entry[10].resource.bodySite[0]"
    assert "At: Procedure/proc1 · body site 1" in review_text(_run("28-missing-side-and-no-provider.json").decision)
    assert "Bundle.entry[10]" not in review_text(_run("28-missing-side-and-no-provider.json").decision)


def test_ndjson_locations_come_from_the_resources_the_message_names() -> None:
    lines = [
        {"resourceType": "Procedure", "id": "a", "status": "completed"},
        {"resourceType": "Procedure", "id": "b", "status": "completed"},
        {"resourceType": "Patient", "id": "p"},
    ]
    index = parse_bytes(b"\n".join(json.dumps(r).encode() for r in lines), name="x.ndjson")
    locator = Locator(index)
    assert [loc.text for loc in locator.locate("Procedure.code.text", "Procedure/b: levels read from text")] == [
        "Procedure/b · code text"
    ]
    both = locator.locate("Procedure.bodySite[1]", "Procedure/b, Procedure/a: no side")
    assert [loc.text for loc in both] == ["Procedure/b · body site 2", "Procedure/a · body site 2"]
    assert [loc.text for loc in locator.locate("Procedure", "no one named")] == ["Procedure"]
    assert [loc.text for loc in locator.locate("Patient.birthDate")] == ["Patient/p · birth date"]


def test_element_words() -> None:
    assert element_words(".bodySite[0].coding[1].code") == "body site 1 › coding 2 › code"
    assert element_words(".onsetDateTime") == "onset date"
    assert element_words(".note[0].text") == "note 1 text"
    assert element_words("") == ""


# --------------------------------------------------------------------------- the HTML writer


def test_html_is_registered_and_escapes_the_record() -> None:
    raw = json.loads((REPO / "examples/medicare-hopd-prior-auth-missing/input.json").read_text())
    for entry in raw["entry"]:
        if entry["resource"]["resourceType"] == "Patient":
            entry["resource"]["name"] = [{"family": "<script>alert(1)</script>", "given": ['"quoted" & <i>']}]
    result = process(json.dumps(raw).encode(), Options(payer="medicare"))
    page = WRITERS["html"].write(result.decision, result.index).decode()
    assert WRITERS["html"].media_type.startswith("text/html")
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&#34;quoted&#34; &amp; &lt;i&gt;" in page
    # No asset from anywhere; the only addresses are the links to the cited policies.
    assert "src=" not in page and "url(" not in page and "@import" not in page
    assert all(url.startswith("https://www.cms.gov/") for url in re.findall(r'href="([^"]*)"', page))
    fragment = str(review_fragment(result.decision))
    assert fragment.startswith('<article class="decision"') and "<html" not in fragment
    assert fragment in page


def test_check_writes_the_page_to_a_file(tmp_path: Path) -> None:
    from conftest import run_cli

    out = tmp_path / "review.html"
    run = run_cli(
        "check", str(REPO / "examples/medicare-lumbar-rfa-transaction/input.json"), "--format", "html", "-o", str(out)
    )
    assert run.code == 0 and run.stdout == b"", run.stderr
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "READY: no error findings" in page
    assert "<style>" in page and "<script" not in page and "<link" not in page


# --------------------------------------------------------------------------- a held Bundle says why


def test_a_held_bundle_ends_with_its_reasons() -> None:
    result = _run("28-missing-side-and-no-provider.json")
    bundle = result.bundle
    assert bundle["entry"][0]["resource"]["resourceType"] == "Claim"
    last = bundle["entry"][-1]
    outcome = last["resource"]
    assert outcome["resourceType"] == "OperationOutcome" and last["fullUrl"] == f"urn:uuid:{outcome['id']}"
    assert {issue["details"]["coding"][0]["code"] for issue in outcome["issue"]} == {
        f.rule_id for f in result.decision.findings
    }
    assert {k: v for k, v in outcome.items() if k != "id"} == result.outcome()
    assert_valid_r4(bundle)


def test_a_ready_bundle_has_no_reasons_entry() -> None:
    result = process((REPO / "examples/medicare-lumbar-bilateral/input.json").read_bytes(), Options(payer="medicare"))
    assert all(e["resource"]["resourceType"] != "OperationOutcome" for e in result.bundle["entry"])


def test_a_held_prior_authorization_request_carries_its_reasons_too() -> None:
    result = _run("89-preauth-draft-servicerequest-plus-history-frequency.json")
    assert result.held
    assert result.bundle["entry"][0]["resource"]["status"] == "active"
    assert result.bundle["entry"][-1]["resource"]["resourceType"] == "OperationOutcome"
    assert_valid_r4(result.bundle)
