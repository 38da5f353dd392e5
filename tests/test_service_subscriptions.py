"""No lost event when the FHIR server gives up: a real `serve` process and a test server of this
module's own (its switch that drops deliveries and its event counters are server-wide).

- Backport topic-based Subscription: deliveries dropped, then a later event shows the gap, and
  the service recovers the missing events with `Subscription/$events`.
- Rest-hook Subscription: a delivery dropped for good (as HAPI drops one after its retries); the
  sweep (`--reconcile-every`) finds the Procedure without a current Claim and syncs it.
- A Subscription the server has set to `error` is reported on /healthz and re-activated.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import run_cli
from fhirserver import FhirTestServer, start_fhir_test_server
from test_service_e2e import EXPECTED_LINES, TOKEN, Fhir, Service, free_port, line_multiset, wait_for

from adapter.server.commands import subscription_criteria

pytestmark = [pytest.mark.server, pytest.mark.slow]

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
TOPIC = "http://facet-adapter.invalid/SubscriptionTopic/facet-procedure"


@pytest.fixture(scope="module")
def own_server() -> Iterator[FhirTestServer]:
    with start_fhir_test_server() as server:
        yield server


@pytest.fixture
def fhir(own_server: FhirTestServer) -> Iterator[Fhir]:
    client = Fhir(own_server.base_url)
    yield client
    drop(client, False)
    client.session.close()


def drop(fhir: Fhir, on: bool) -> int:
    """The test server's switch; returns how many deliveries it has dropped so far."""
    body = {"resourceType": "Parameters", "parameter": [{"name": "drop", "valueBoolean": on}]}
    answer = fhir.request("POST", "$test-deliveries", body)
    return int(next(p["valueInteger"] for p in answer["parameter"] if p["name"] == "dropped"))


def dropped(fhir: Fhir) -> int:
    answer = fhir.request("GET", "$test-deliveries")
    return int(next(p["valueInteger"] for p in answer["parameter"] if p["name"] == "dropped"))


def topic_subscription(endpoint: str) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "meta": {"profile": [f"{BACKPORT}/backport-subscription"]},
        "status": "requested",
        "reason": "facet-adapter test",
        "criteria": TOPIC,
        "_criteria": {
            "extension": [{"url": f"{BACKPORT}/backport-filter-criteria", "valueString": subscription_criteria()}]
        },
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": f"{BACKPORT}/backport-payload-content", "valueCode": "id-only"}]},
            "extension": [{"url": f"{BACKPORT}/backport-heartbeat-period", "valueUnsignedInt": 3600}],
            "header": [f"Authorization: Bearer {TOKEN}"],
        },
    }


def one_current_claim(fhir: Fhir, patient: str) -> dict[str, Any] | None:
    claims = [c for c in fhir.claims(patient) if c.get("status") == "active"]
    if len(claims) == 1 and line_multiset(claims[0]) == sorted(EXPECTED_LINES):
        return claims[0]
    return None


def test_a_gap_in_event_numbers_is_recovered_with_events(fhir: Fhir, tmp_path: Path) -> None:
    port = free_port()
    subscription = fhir.request("POST", "Subscription", topic_subscription(f"http://127.0.0.1:{port}/notify"))
    sid = subscription["id"]
    assert subscription["status"] == "active"
    service = Service(
        fhir.base_url,
        tmp_path / "q.sqlite",
        tmp_path / "service.log",
        port=port,
        extra=["--subscription", sid, "--reconcile-every", "off", "--workers", "2"],
    )
    try:
        # Events 1 and 2 arrive: the service has seen the Subscription count to 2.
        first = fhir.load_example("gap0-")
        wait_for(lambda: one_current_claim(fhir, first), 30, "the first patient's Claim")
        # The server drops events 3 and 4 (the second patient's two facet Procedures)...
        before = drop(fhir, True)
        lost = fhir.load_example("gap1-")
        wait_for(lambda: dropped(fhir) >= before + 2, 10, "the dropped deliveries")
        drop(fhir, False)
        assert fhir.claims(lost) == []
        # ...and event 5 shows the gap: the service asks $events for 3..4.
        third = fhir.load_example("gap2-")
        wait_for(lambda: one_current_claim(fhir, third), 30, "the third patient's Claim")
        wait_for(lambda: one_current_claim(fhir, lost), 30, "the Claim of the patient whose events were dropped")
        jobs = service.jobs()
        recoveries = [j for j in jobs if j.source == "recovery" and j.kind == "requery"]
        assert [json.loads(j.detail or "{}")["after"] for j in recoveries] == [2]
        assert all(j.state == "done" and "$events" in (j.result or "") for j in recoveries)
        recovered = {j.reference for j in jobs if j.source == "recovery" and j.kind == "resource"}
        assert recovered == {
            f"Procedure/{lost[: -len('pt-ana')]}mbb-l4l5",
            f"Procedure/{lost[: -len('pt-ana')]}mbb-l5s1",
        }
        health = requests.get(service.url + "/healthz", timeout=5).json()["subscriptions"]
        assert [(s["id"], s["last_event"]) for s in health["known"]] == [(sid, 6)]
    finally:
        service.stop()
        fhir.request("DELETE", f"Subscription/{sid}")


def test_a_dropped_rest_hook_delivery_is_recovered_by_the_sweep(fhir: Fhir, tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "q.sqlite"
    endpoint = f"http://127.0.0.1:{port}/notify"
    made = run_cli(
        "subscribe", "--endpoint", endpoint, "--hook-token", TOKEN, "--fhir-base", fhir.base_url, "--db", str(db)
    )
    assert made.code == 0, made.stderr.decode()
    sid = made.stdout.decode().split("Subscription/")[1].split()[0]
    service = Service(fhir.base_url, db, tmp_path / "service.log", port=port, extra=["--reconcile-every", "2s"])
    try:
        before = drop(fhir, True)
        patient = fhir.load_example("swept-")
        wait_for(lambda: dropped(fhir) >= before + 2, 10, "the dropped deliveries")
        drop(fhir, False)
        wait_for(lambda: one_current_claim(fhir, patient), 40, "the swept patient's Claim")
        jobs = service.jobs()
        assert any(j.source == "sweep" and j.kind == "requery" and j.state == "done" for j in jobs)
        prefix = patient[: -len("pt-ana")]
        swept = {j.reference for j in jobs if j.source == "sweep" and j.kind == "resource"}
        assert swept == {f"Procedure/{prefix}mbb-l4l5", f"Procedure/{prefix}mbb-l5s1"}
    finally:
        service.stop()
        fhir.request("DELETE", f"Subscription/{sid}")


def test_a_subscription_set_to_error_is_reported_and_reactivated(fhir: Fhir, tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "q.sqlite"
    endpoint = f"http://127.0.0.1:{port}/notify"
    made = run_cli(
        "subscribe", "--endpoint", endpoint, "--hook-token", TOKEN, "--fhir-base", fhir.base_url, "--db", str(db)
    )
    assert made.code == 0, made.stderr.decode()
    sid = made.stdout.decode().split("Subscription/")[1].split()[0]
    service = Service(fhir.base_url, db, tmp_path / "service.log", port=port, extra=["--reconcile-every", "2s"])
    try:
        stored = fhir.request("GET", f"Subscription/{sid}")
        fhir.request("PUT", f"Subscription/{sid}", {**stored, "status": "error", "error": "test: endpoint failing"})
        assert fhir.request("GET", f"Subscription/{sid}")["status"] == "error"

        def reported() -> Any:
            health = requests.get(service.url + "/healthz", timeout=5).json()["subscriptions"]
            return [p for p in health["recent_problems"] if p["subscription"] == sid and "re-activated" in p["what"]]

        wait_for(reported, 30, "the re-activation on /healthz")
        again = fhir.request("GET", f"Subscription/{sid}")
        assert again["status"] == "active"
        assert again["channel"]["header"] == [f"Authorization: Bearer {TOKEN}"]
        # Notifications flow again.
        patient = fhir.load_example("react-")
        wait_for(lambda: one_current_claim(fhir, patient), 30, "a Claim after the re-activation")
    finally:
        service.stop()
        fhir.request("DELETE", f"Subscription/{sid}")
