"""The review page (`check --format html`) in a real headless Chromium: Debian's /usr/bin/chromium,
driven by Playwright as the system browser (never a downloaded one), installed by `make browser`
(tools/browser-test/setup). Screenshots go to test-artifacts/review-page/ for a person to look at.

The page is written by the real command line, opened from a file with every network request
refused, read as a coder reads it (findings, verdict, the FHIRPath behind its disclosure), checked
for markup from the record (a `<script>` in a name shows as text), and checked by axe-core for
accessibility (labels, heading order, contrast).
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, run_cli
from golden import CASES_DIR, write_input

CHROMIUM = Path("/usr/bin/chromium")
AXE = REPO / "tools" / "browser-test" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = REPO / "test-artifacts" / "review-page"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HELD_PUBLIC = CASES_DIR / "public-06-medicare-frequency-limit.json"
HELD_OWN = REPO / "tests" / "cases" / "28-missing-side-and-no-provider.json"
EXAMPLE = REPO / "examples" / "medicare-hopd-prior-auth-missing" / "input.json"
SCRIPT = "<script>window.__injected = 1</script>"

pytestmark = pytest.mark.slow


def _missing(what: str) -> None:
    # CI installs the browser and axe-core (`make test` runs `make browser`): there a missing one is
    # a failure, not a skip. A developer without them is told how to get them.
    message = f"{what} is missing: run `make browser` (as root for Debian's chromium)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        _missing(str(CHROMIUM))
    playwright_api = pytest.importorskip("playwright.sync_api")
    with tempfile.TemporaryDirectory(prefix="facet-chromium-") as profile, playwright_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            viewport={"width": 1200, "height": 900},
            java_script_enabled=True,  # for the test's own probes (axe); the page has no script
        )
        requests: list[str] = []
        context.route("**/*", lambda route: _only_files(route, requests))
        context.requests = requests  # type: ignore[attr-defined]
        try:
            yield context
        finally:
            context.close()


def _only_files(route: Any, requests: list[str]) -> None:
    url = route.request.url
    requests.append(url)
    if url.startswith("file://"):
        route.continue_()
    else:
        route.abort()


def _page_for(case_file: Path, tmp_path: Path) -> Path:
    case = json.loads(case_file.read_text())
    source = write_input(case, tmp_path)
    out = tmp_path / "review.html"
    argv = ["check", str(source), "--payer", case["payer"], "--use", case["use"], "--format", "html", "-o", str(out)]
    if case.get("pos") is not None:
        argv += ["--pos", str(case["pos"])]
    run = run_cli(*argv)
    assert run.code == case["expect"]["exit"], run.stderr.decode()
    assert run.stdout == b""
    return out


def _save(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _open(browser: Any, path: Path) -> Any:
    page = browser.new_page()
    browser.requests.clear()
    page.goto(path.as_uri())
    return page


def _read_held_case(browser: Any, case_file: Path, tmp_path: Path, name: str) -> None:
    case = json.loads(case_file.read_text())
    page = _open(browser, _page_for(case_file, tmp_path))
    try:
        assert page.locator("h1").inner_text().startswith("Pre-claim review: HOLD")
        verdict = page.locator(".verdict").inner_text()
        assert verdict.startswith("HOLD:") and "exit status 1" in verdict
        shown = set(page.locator(".finding").evaluate_all("nodes => nodes.map(n => n.dataset.rule)"))
        assert set(case["expect"]["findings_present"]) <= shown
        assert not set(case["expect"].get("findings_absent", [])) & shown
        errors = page.locator("section:has(> h4:text-matches('^Errors')) .finding")
        assert errors.count() >= 1
        first = errors.first
        for label in ("Cause", "Rule", "Fix"):
            assert first.locator(f"dt:text-is('{label}')").count() == 1
        # A coder's location, with the FHIRPath behind the disclosure until it is opened.
        disclosure = page.locator(".finding details").first
        if disclosure.count():
            path = disclosure.locator("code")
            assert not path.is_visible()
            disclosure.locator("summary").click()
            assert path.is_visible() and path.inner_text().split(".", 1)[0] in ("Bundle", "Procedure", "Condition")
        assert page.locator("script").count() == 0
        assert all(url.startswith("file://") for url in browser.requests), browser.requests
        _save(page, name)
        page.emulate_media(media="print")
        _save(page, f"{name}-print")
    finally:
        page.close()


def test_a_held_public_golden_case_reads_as_held_with_its_findings(browser: Any, tmp_path: Path) -> None:
    if not HELD_PUBLIC.is_file():
        pytest.skip(f"{HELD_PUBLIC} is not present")
    _read_held_case(browser, HELD_PUBLIC, tmp_path, "held-frequency-limit")


def test_a_held_case_without_side_or_provider(browser: Any, tmp_path: Path) -> None:
    _read_held_case(browser, HELD_OWN, tmp_path, "held-no-side-no-provider")
    page = _open(browser, tmp_path / "review.html")
    try:
        # The line without a side says why it has no side modifier.
        assert "No RT, LT or 50" in page.locator("table").first.inner_text()
        fixes = page.locator(".finding[data-rule='claim-data-missing'] dd").all_inner_texts()
        assert any("Record who performed the procedure" in text for text in fixes)
    finally:
        page.close()


def _with_markup_in_the_record() -> bytes:
    bundle = json.loads(EXAMPLE.read_text())
    bundle = copy.deepcopy(bundle)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            resource["name"] = [{"family": SCRIPT, "given": ["<b>Dora</b>"]}]
        if resource["resourceType"] == "Location":
            resource["name"] = f"Clinic {SCRIPT}"
    return json.dumps(bundle).encode()


def test_markup_in_the_record_shows_as_text(browser: Any, tmp_path: Path) -> None:
    source = tmp_path / "input.json"
    source.write_bytes(_with_markup_in_the_record())
    out = tmp_path / "review.html"
    run = run_cli("check", str(source), "--payer", "medicare", "--format", "html", "-o", str(out))
    assert run.code == 1, run.stderr.decode()
    assert SCRIPT not in out.read_text() and "&lt;script&gt;" in out.read_text()
    page = _open(browser, out)
    try:
        assert page.evaluate("() => window.__injected") is None
        assert page.locator("script").count() == 0 and page.locator("main b").count() == 0
        session = page.locator("section:has(> h3:text-is('Session'))").inner_text()
        assert SCRIPT in session and "<b>Dora</b>" in session
        _save(page, "markup-as-text")
    finally:
        page.close()


def test_the_page_passes_the_accessibility_checker(browser: Any, tmp_path: Path) -> None:
    if not AXE.is_file():
        _missing(str(AXE))
    page = _open(browser, _page_for(HELD_OWN, tmp_path))
    try:
        # Headings in order: one h1, and no level skipped on the way down.
        levels = page.locator("h1, h2, h3, h4, h5, h6").evaluate_all("hs => hs.map(h => Number(h.tagName[1]))")
        assert levels[0] == 1 and levels.count(1) == 1
        assert all(b - a <= 1 for a, b in itertools.pairwise(levels)), levels
        # Every control is labelled: the page's only controls are disclosures, named by their summary.
        for summary in page.locator("summary").all_inner_texts():
            assert summary.strip()
        page.add_script_tag(path=str(AXE))
        results = page.evaluate(
            """async () => await axe.run(document, {
                runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']},
                resultTypes: ['violations']
            })"""
        )
        violations = [
            f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
            for v in results["violations"]
        ]
        assert not violations, "\n".join(violations)
        checked = {rule["id"] for rule in results["passes"]} | {rule["id"] for rule in results["incomplete"]}
        assert {"color-contrast", "heading-order", "document-title", "html-has-lang"} <= checked | {
            rule["id"] for rule in results["inapplicable"]
        }
        assert "color-contrast" in {rule["id"] for rule in results["passes"]}
    finally:
        page.close()
