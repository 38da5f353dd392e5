"""The /review worklist in a real headless Chromium (Debian's /usr/bin/chromium driven by
Playwright, as tests/test_review_page.py drives it), against a real `facet-adapter serve` and the
local FHIR test server.

A coder signs in, sees the worklist (held claims first), opens a held claim, reads its findings,
overrides it with a reason, and sees the status change; on the FHIR server the Claim is active,
its Task completed with the reason and a Provenance names the coder. A re-check of the same
record keeps it active. A viewer sees no override or re-check button and a forged POST is 403; a
form without its CSRF token is 403; a `<script>` in a patient's name and in a reason is text.
axe-core finds no violation on the sign-in, worklist and claim pages. Screenshots go to
test-artifacts/review-worklist/.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import REPO
from fhirserver import FhirTestServer
from test_review_page import AXE, CHROMIUM, FLAGS, _missing
from test_service_e2e import TOKEN, Fhir, Service, wait_for

from adapter.review.store import Filters, ReviewStore
from adapter.review.users import User, hash_password, save_users
from adapter.server.loader import as_transaction
from adapter.service.queue import JobQueue

pytestmark = [pytest.mark.server, pytest.mark.slow]

ARTIFACTS = REPO / "test-artifacts" / "review-worklist"
HELD_EXAMPLE = REPO / "examples" / "medicare-hopd-prior-auth-missing" / "input.json"
READY_EXAMPLE = REPO / "examples" / "medicare-lumbar-bilateral" / "input.json"
CODER = ("alice", "alice's password 1")
VIEWER = ("victor", "victor's password 1")
SCRIPT = "<script>window.__injected = 1</script>"
REASON = "Prior authorization PA-2026-77 confirmed by phone. <script>window.__injected = 2</script>"
PATIENT_DATA = ["Kowalski", "Rivera", "3QJ7TR2MF41", "1955-12-11", "PA-2026-77"]


@dataclass
class Review:
    service: Service
    fhir: Fhir
    coder_claim: str  # the identifier of the held claim the coder overrides
    viewer_claim: str  # another held claim, left held
    ready_claim: str

    @property
    def url(self) -> str:
        return self.service.url


def _load(fhir: Fhir, source: Path, prefix: str, *, patient_name: list[dict[str, Any]] | None = None) -> list[str]:
    bundle = json.loads(source.read_text())
    if patient_name is not None:
        bundle = copy.deepcopy(bundle)
        for entry in bundle["entry"]:
            if entry["resource"]["resourceType"] == "Patient":
                entry["resource"]["name"] = patient_name
    transaction = as_transaction(json.dumps(bundle).encode(), id_prefix=prefix)
    fhir.request("POST", "", transaction)
    return [e["resource"]["id"] for e in transaction["entry"] if e["resource"]["resourceType"] == "Procedure"]


def _notify(service: Service, fhir: Fhir, procedure_ids: list[str]) -> None:
    for procedure_id in procedure_ids:
        body = fhir.request("GET", f"Procedure/{procedure_id}")
        answer = requests.put(
            f"{service.url}/notify/Procedure/{procedure_id}",
            data=json.dumps(body),
            headers={"Content-Type": "application/fhir+json", "Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text


def _rows(db: Path) -> dict[str, Any]:
    return {row.patient: row for row in ReviewStore(JobQueue(db, create=False)).claims(Filters())[0]}


@pytest.fixture(scope="module")
def review(fhir_server: FhirTestServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Review]:
    folder = tmp_path_factory.mktemp("review")
    users = folder / "users.json"
    save_users(
        users,
        {
            CODER[0]: User(CODER[0], "coder", hash_password(CODER[1])),
            VIEWER[0]: User(VIEWER[0], "viewer", hash_password(VIEWER[1])),
        },
    )
    service = Service(
        fhir_server.base_url, folder / "queue.sqlite", folder / "service.log", extra=["--review-users", str(users)]
    )
    fhir = Fhir(fhir_server.base_url)
    try:
        run = uuid.uuid4().hex[:6]
        coder, viewer, ready = f"rc{run}-", f"rv{run}-", f"rr{run}-"
        procedures = _load(fhir, HELD_EXAMPLE, coder, patient_name=[{"family": SCRIPT, "given": ["<b>Dora</b>"]}])
        procedures += _load(fhir, HELD_EXAMPLE, viewer)
        procedures += _load(fhir, READY_EXAMPLE, ready)
        _notify(service, fhir, procedures)
        wait_for(lambda: len(_rows(service.db)) == 3, 30, "three claims coded by the service")
        rows = _rows(service.db)
        yield Review(
            service,
            fhir,
            rows[f"Patient/{coder}pt-dora"].identifier,
            rows[f"Patient/{viewer}pt-dora"].identifier,
            rows[f"Patient/{ready}pt-ana"].identifier,
        )
    finally:
        service.stop()
        fhir.session.close()
    log = service.log()
    for value in [*PATIENT_DATA, SCRIPT, "Dora"]:
        assert value not in log, f"patient data or a reason ({value!r}) in the service log"


@pytest.fixture(scope="module")
def chromium(review: Review) -> Iterator[Any]:
    if not CHROMIUM.is_file():
        _missing(str(CHROMIUM))
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def context(chromium: Any, review: Review) -> Iterator[Any]:
    """A fresh browser context (its own cookies) that reaches the service only. The page's CSP
    is bypassed so that the test can inject axe-core; the policy itself is checked below."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    seen: list[str] = []

    def only_the_service(route: Any) -> None:
        seen.append(route.request.url)
        if route.request.url.startswith(review.url + "/"):
            route.continue_()
        else:
            route.abort()

    context.route("**/*", only_the_service)
    try:
        yield context
    finally:
        context.close()
        assert all(url.startswith(review.url + "/") for url in seen), seen


def _sign_in(page: Any, review: Review, who: tuple[str, str]) -> None:
    page.goto(review.url + "/review")
    assert page.url == review.url + "/review/login"
    page.get_by_label("User name").fill(who[0])
    page.get_by_label("Password").fill(who[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(review.url + "/review")


def _save(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _headings_in_order(page: Any) -> None:
    levels = page.locator("h1, h2, h3, h4, h5, h6").evaluate_all("hs => hs.map(h => Number(h.tagName[1]))")
    assert levels[0] == 1 and levels.count(1) == 1
    assert all(b - a <= 1 for a, b in itertools.pairwise(levels)), levels


def _axe(page: Any) -> None:
    if not AXE.is_file():
        _missing(str(AXE))
    _headings_in_order(page)
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
    assert not violations, f"{page.url}:\n" + "\n".join(violations)
    assert "color-contrast" in {rule["id"] for rule in results["passes"]}


def test_a_coder_overrides_a_held_claim(context: Any, review: Review) -> None:
    page = context.new_page()
    _sign_in(page, review, CODER)
    assert page.locator("h1").inner_text() == "Worklist"
    statuses = page.locator("table.worklist tbody tr").evaluate_all("rows => rows.map(r => r.dataset.status)")
    assert statuses[:2] == ["needs-review", "needs-review"] and statuses[-1] == "passed"  # held first
    links = page.locator("table.worklist a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert all(re.fullmatch(r"/review/claims/[0-9a-f-]{36}", link) for link in links), links
    _save(page, "worklist")

    page.locator(f"tr[data-claim='{review.coder_claim}'] a").click()
    page.wait_for_url(f"{review.url}/review/claims/{review.coder_claim}")
    assert page.locator("h1").inner_text().endswith("needs review")
    finding = page.locator(".finding[data-rule='prior-auth-required']")
    assert finding.count() == 1 and "error" in finding.inner_text().lower()
    for label in ("Cause", "Fix"):
        assert finding.locator(f"dt:text-is('{label}')").count() == 1
    # The patient's name, markup and all, is text on the page.
    session = page.locator("section:has(> h3:text-is('Session'))").inner_text()
    assert SCRIPT in session and "<b>Dora</b>" in session
    assert page.evaluate("() => window.__injected") is None
    _save(page, "claim-held")

    page.get_by_label("Reason for accepting the claim (required)").fill(REASON)
    page.get_by_role("button", name="Override and set the claim active").click()
    page.wait_for_url(f"{review.url}/review/claims/{review.coder_claim}")
    assert page.locator("#review-status").inner_text() == "overridden"
    assert "Overridden: Claim/" in page.locator(".notice").first.inner_text()
    overridden = page.locator("tr[data-event='overridden']")
    assert REASON in overridden.inner_text() and "alice" in overridden.inner_text()
    assert "prior-auth-required v1 (error)" in overridden.inner_text()
    assert page.evaluate("() => window.__injected") is None and page.locator("main script").count() == 0
    assert page.get_by_role("button", name="Override and set the claim active").count() == 0
    _save(page, "claim-overridden")

    # On the FHIR server: the Claim active, its Task completed with the reason, a Provenance.
    row = ReviewStore(JobQueue(review.service.db, create=False)).claim(review.coder_claim)
    assert row is not None and row.status == "overridden"
    claim = review.fhir.request("GET", f"Claim/{row.claim_id}")
    assert claim["status"] == "active"
    task = review.fhir.request("GET", f"Task/{row.task_id}")
    assert (task["status"], task["output"][-1]["valueString"]) == ("completed", REASON)
    found = review.fhir.request("GET", f"Provenance?target=Claim/{row.claim_id}")
    [provenance] = [e["resource"] for e in found.get("entry", [])]
    assert provenance["agent"][0]["who"]["display"] == "alice" and provenance["reason"][0]["text"] == REASON

    # A re-check of the same record keeps the override: still active, not written again.
    page.get_by_role("button", name="Re-check now").click()
    page.wait_for_url(f"{review.url}/review/claims/{review.coder_claim}")
    assert "overridden" in page.locator(".notice").first.inner_text()
    assert page.locator("#review-status").inner_text() == "overridden"
    assert page.locator("tr[data-event='re-checked']").count() == 1
    again = review.fhir.request("GET", f"Claim/{row.claim_id}")
    assert (again["status"], again["meta"]["versionId"]) == ("active", claim["meta"]["versionId"])

    # A form without its CSRF token is refused, whoever is signed in.
    forged = context.request.post(
        f"{review.url}/review/claims/{review.viewer_claim}/override", form={"reason": "x", "fingerprint": "x"}
    )
    assert forged.status == 403
    page.close()


def test_a_viewer_cannot_override(context: Any, review: Review) -> None:
    page = context.new_page()
    _sign_in(page, review, VIEWER)
    page.goto(f"{review.url}/review/claims/{review.viewer_claim}")
    assert page.locator("h1").inner_text().endswith("needs review")
    assert page.locator(".finding[data-rule='prior-auth-required']").count() == 1
    assert page.get_by_role("button", name="Override and set the claim active").count() == 0
    assert page.get_by_role("button", name="Re-check now").count() == 0
    assert page.locator("textarea").count() == 0
    assert "only a coder can override or re-check" in page.locator("main").inner_text()
    csrf = page.locator("input[name='csrf']").first.get_attribute("value")
    forged = context.request.post(
        f"{review.url}/review/claims/{review.viewer_claim}/override",
        form={"csrf": csrf, "reason": "I am not a coder", "fingerprint": "x"},
    )
    assert forged.status == 403
    row = ReviewStore(JobQueue(review.service.db, create=False)).claim(review.viewer_claim)
    assert row is not None and row.status == "needs-review"
    assert review.fhir.request("GET", f"Claim/{row.claim_id}")["status"] == "draft"
    page.close()


def test_the_pages_pass_the_accessibility_checker(context: Any, review: Review) -> None:
    page = context.new_page()
    page.goto(review.url + "/review/login")
    _axe(page)
    _save(page, "login")
    _sign_in(page, review, CODER)
    _axe(page)
    page.goto(f"{review.url}/review/claims/{review.viewer_claim}")  # held: with the override form
    assert page.get_by_role("button", name="Override and set the claim active").count() == 1
    _axe(page)
    page.close()


def test_the_pages_keep_a_strict_content_security_policy(review: Review) -> None:
    answer = requests.get(review.url + "/review/login", timeout=10)
    policy = answer.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy and "frame-ancestors 'none'" in policy
    nonce = re.search(r"'nonce-([^']+)'", policy)
    assert nonce and f'<style nonce="{nonce[1]}">' in answer.text
    assert answer.headers["Cache-Control"] == "no-store"
