"""The whole round trip against the local FHIR test server and the sandbox payer (issue 10, items 5
and 6; docs/payer.md, write-back): a prior authorization approved and its number carried into the
performed session's claim, which is paid with amounts; a request denied for an uncovered diagnosis;
a claim whose third level is denied; a pended request completed later; the payer down, then up."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from builders import CaseBuilder, with_pas_parties
from conftest import run_cli
from fhirserver import FhirTestServer
from payerserver import SandboxPayer, free_port, sandbox_payer

from adapter.claimresponse.answer import authorization, read_answer
from adapter.fhir.client import FhirClient
from adapter.server.loader import as_transaction
from adapter.writers.fhir_claim import IDENTIFIER_SYSTEM

pytestmark = pytest.mark.server

DOS = "2026-12-15"


@pytest.fixture(scope="module")
def client(fhir_server: FhirTestServer) -> Iterator[FhirClient]:
    with FhirClient(fhir_server.base_url, retries=1, backoff=0.01) as c:
        yield c


@pytest.fixture(scope="module")
def payer() -> Iterator[SandboxPayer]:
    with sandbox_payer(review_seconds=2) as running:
        yield running


def load(client: FhirClient, case: CaseBuilder) -> str:
    prefix = f"rt{uuid.uuid4().hex[:8]}-"
    client.transaction(as_transaction(orjson.dumps(case.bundle()), id_prefix=prefix))
    return prefix


def sync(fhir: FhirTestServer, *args: str) -> Any:
    run = run_cli("sync", "--fhir-base", fhir.base_url, "--format", "json", *args)
    assert b"Traceback" not in run.stderr
    return run


def claim_responses(client: FhirClient, patient: str) -> list[dict[str, Any]]:
    return [r for r in client.search("ClaimResponse", {"patient": patient}) if r["resourceType"] == "ClaimResponse"]


def task_of(client: FhirClient, claim_id: str) -> dict[str, Any] | None:
    found = [r for r in client.search("Task", {"focus": f"Claim/{claim_id}"}) if r["resourceType"] == "Task"]
    return found[0] if found else None


def planned_case(**builder: Any) -> tuple[CaseBuilder, str, str]:
    """An HOPD (POS 22) lumbar block: planned (ServiceRequest) and, later, performed (Procedure)."""
    case = CaseBuilder(DOS, pos="22", **builder)
    order = case.procedure(["L4-L5", "L5-S1"], intent="diagnostic", resource_type="ServiceRequest", status="active")
    performed = case.procedure(["L4-L5", "L5-S1"], intent="diagnostic")
    with_pas_parties(case)
    return case, order, performed


def test_an_approved_authorization_is_carried_into_the_claim_which_is_paid(
    client: FhirClient, fhir_server: FhirTestServer, payer: SandboxPayer
) -> None:
    case, order, performed = planned_case()
    prefix = load(client, case)
    patient = f"Patient/{prefix}p1"
    # Without the authorization the hospital outpatient claim is held (prior-auth-required).
    before = sync(fhir_server, "--procedure", performed.replace("/", f"/{prefix}"), "--dry-run")
    assert before.code == 1 and "prior-auth-required" in before.stdout.decode()

    requested = sync(
        fhir_server,
        "--use",
        "preauthorization",
        "--pos",
        "22",
        "--procedure",
        order.replace("/", f"/{prefix}"),
        "--payer-url",
        payer.base_url,
    )
    assert requested.code == 0, requested.stderr
    outcome = requested.json()["results"][0]
    assert outcome["payer"]["result"] == "APPROVED"
    number = outcome["payer"]["authorization"]
    assert number.startswith("FA20261215")
    (stored,) = claim_responses(client, patient)
    assert stored["request"] == {"reference": f"Claim/{outcome['claimId']}"}
    assert (stored["use"], stored["outcome"], stored["preAuthRef"]) == ("preauthorization", "complete", number)
    assert authorization(stored) is not None  # what the reader will find

    claimed = sync(fhir_server, "--procedure", performed.replace("/", f"/{prefix}"), "--payer-url", payer.base_url)
    assert claimed.code == 0, claimed.stderr
    result = claimed.json()["results"][0]
    claim = client.read("Claim", result["claimId"])
    assert claim["status"] == "active" and claim["insurance"][0]["preAuthRef"] == [number]
    assert result["payer"]["result"] == "APPROVED"
    paid = [r for r in claim_responses(client, patient) if r["use"] == "claim"]
    assert len(paid) == 1 and paid[0]["request"] == {"reference": f"Claim/{result['claimId']}"}
    answer = read_answer(paid[0])
    assert answer.approved and {t.category for t in answer.totals} == {"submitted", "eligible", "benefit"}
    assert all(item.amount("benefit").value > 0 for item in answer.items)  # type: ignore[union-attr]
    # Synced again: nothing new on the server.
    again = sync(fhir_server, "--procedure", performed.replace("/", f"/{prefix}"), "--payer-url", payer.base_url)
    assert again.json()["results"][0]["payer"]["claimResponseAction"] == "unchanged"
    assert len([r for r in claim_responses(client, patient) if r["use"] == "claim"]) == 1


def test_a_request_for_an_uncovered_diagnosis_is_denied_and_its_task_says_why(
    client: FhirClient, fhir_server: FhirTestServer, payer: SandboxPayer
) -> None:
    case, order, _ = planned_case(dx="M54.16")
    prefix = load(client, case)
    key = order.replace("/", f"/{prefix}")
    args = ("--use", "preauthorization", "--pos", "22", "--procedure", key, "--payer-url", payer.base_url)
    held = sync(fhir_server, *args)
    assert held.code == 1 and held.json()["results"][0]["payer"] == {"action": "not-submitted", "why": "held"}
    run = sync(fhir_server, *args, "--force-submit")
    assert run.code == 1
    outcome = run.json()["results"][0]
    assert outcome["payer"]["result"] == "DENIED" and outcome["payer"]["authorization"] is None
    (stored,) = claim_responses(client, f"Patient/{prefix}p1")
    parsed = read_answer(stored)
    assert [(i.review_code, [r.code for r in i.reasons]) for i in parsed.items] == [("A3", ["50"])] * 2
    assert authorization(stored) is None
    task = task_of(client, outcome["claimId"])
    assert task is not None and task["status"] == "requested"
    assert task["businessStatus"]["text"] == "payer-denied"
    texts = [i["type"]["text"] for i in task["input"]]
    assert "error: dx-not-covered" in texts and "CARC 50" in texts  # the held findings and the payer's reason


def test_a_third_level_is_denied_on_the_claim_and_the_other_levels_paid(
    client: FhirClient, fhir_server: FhirTestServer, payer: SandboxPayer
) -> None:
    case = CaseBuilder(DOS)
    performed = case.block(["L3-L4", "L4-L5", "L5-S1"], intent="diagnostic")
    with_pas_parties(case)
    prefix = load(client, case)
    run = sync(
        fhir_server,
        "--procedure",
        performed.replace("/", f"/{prefix}"),
        "--payer-url",
        payer.base_url,
        "--force-submit",
    )
    assert run.code == 1
    outcome = run.json()["results"][0]
    assert outcome["lines"] == ["64493-50-KX", "64494-50-KX", "64495-50-KX"]
    (stored,) = claim_responses(client, f"Patient/{prefix}p1")
    parsed = read_answer(stored)
    assert [(i.decision, [r.code for r in i.reasons]) for i in parsed.items] == [
        ("approved", []),
        ("approved", []),
        ("denied", ["119"]),
    ]
    assert stored["outcome"] == "complete" and stored["payment"]["amount"]["value"] > 0
    assert task_of(client, outcome["claimId"])["businessStatus"]["text"] == "payer-denied"  # type: ignore[index]


def test_a_pended_request_is_completed_later(
    client: FhirClient, fhir_server: FhirTestServer, payer: SandboxPayer
) -> None:
    case, order, _ = planned_case(pain_score=None)
    prefix = load(client, case)
    key = order.replace("/", f"/{prefix}")
    args = ("--use", "preauthorization", "--pos", "22", "--procedure", key, "--payer-url", payer.base_url)
    first = sync(fhir_server, *args, "--payer-wait", "0")
    assert first.code == 1
    outcome = first.json()["results"][0]
    assert outcome["payer"]["result"] == "PENDED"
    (pended,) = claim_responses(client, f"Patient/{prefix}p1")
    assert read_answer(pended).pended and authorization(pended) is None
    task = task_of(client, outcome["claimId"])
    assert task is not None and (task["status"], task["businessStatus"]["text"]) == ("on-hold", "payer-pended")

    later = sync(fhir_server, *args, "--payer-wait", "20")
    assert later.code == 0, later.stderr
    assert later.json()["results"][0]["payer"]["result"] == "APPROVED"
    (decided,) = claim_responses(client, f"Patient/{prefix}p1")  # the same ClaimResponse, updated
    assert decided["id"] == pended["id"] and authorization(decided) is not None
    task = task_of(client, outcome["claimId"])
    assert task is not None and (task["status"], task["businessStatus"]["text"]) == ("completed", "payer-approved")


def test_the_payer_down_then_up(client: FhirClient, fhir_server: FhirTestServer) -> None:
    case = CaseBuilder(DOS)
    performed = case.block(["L4-L5"], intent="diagnostic")
    with_pas_parties(case)
    prefix = load(client, case)
    port = free_port()
    args = ("--procedure", performed.replace("/", f"/{prefix}"), "--payer-url", f"http://127.0.0.1:{port}/fhir")
    down = sync(fhir_server, *args, "--payer-budget", "2")
    assert down.code == 4 and b"could not be reached" in down.stderr
    identifier = f"{IDENTIFIER_SYSTEM}|urn:uuid:"
    written = [c for c in client.search("Claim", {"patient": f"Patient/{prefix}p1"}) if c["resourceType"] == "Claim"]
    assert len(written) == 1 and written[0]["identifier"][0]["value"].startswith(identifier.split("|")[1])
    assert claim_responses(client, f"Patient/{prefix}p1") == []
    with sandbox_payer(port):
        up = sync(fhir_server, *args)
    assert up.code == 0, up.stderr
    assert up.json()["results"][0]["payer"]["result"] == "APPROVED"
    assert len(claim_responses(client, f"Patient/{prefix}p1")) == 1
