"""The CDS Hooks service reaches the same decision `check` does, and reads what a call lacks from
the EHR's FHIR server (the local FHIR test server here).

For every golden case with a planned session (tests/cases and the shared public cases), the
draft facet ServiceRequests are sent as a hook's draft orders and the rest of the record as its
prefetch (in memory); with the record loaded into the test server, the prefetch is what running
the service's templates on the server returns, and then no prefetch at all (the service gathers
the record itself). Each time the decision is `check --use preauthorization`'s for the record.
"""

from __future__ import annotations

import json
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from builders import CaseBuilder
from cdshooks import BASE, ISSUER, Ehr, extension_of, hook_request, prefetch_from, prefetch_from_server, service_url
from fhirserver import FhirTestServer
from golden import CASES_DIR, case_files

from adapter.cds.hooks import answer
from adapter.cds.record import ServerAccess
from adapter.cds.request import parse_hook
from adapter.cds.settings import CdsSettings
from adapter.decision import NAMESPACE, ClaimDecision
from adapter.errors import InputError
from adapter.fhir.client import FhirClient
from adapter.fhir.ingest import parse_bytes
from adapter.pipeline import Options, Result, list_sessions, process
from adapter.server.loader import load_file, prefixed_id
from adapter.service.app import create_app
from adapter.service.settings import Settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

OWN_CASES = Path(__file__).resolve().parent / "cases"


def _planned_cases() -> list[Path]:
    found = []
    for path in [*case_files(OWN_CASES), *case_files(CASES_DIR)]:
        raw = orjson.dumps(json.loads(path.read_text())["input"])
        try:
            if list_sessions(parse_bytes(raw), "preauthorization"):
                found.append(path)
        except InputError:
            continue
    return found


PLANNED = _planned_cases()


def facts(decision: ClaimDecision, prefix: str = "") -> dict[str, Any]:
    """What the decision says, with the server's id prefix taken out."""

    def plain(text: str | None) -> str | None:
        return text.replace(prefix, "") if text and prefix else text

    return {
        "status": decision.status,
        "pack": (decision.pack, decision.pack_version),
        "procedures": [plain(p) for p in decision.procedures],
        "lines": decision.line_texts,
        "diagnoses": [d.code for d in decision.diagnoses],
        "findings": [(f.rule_id, f.severity, plain(f.message)) for f in decision.findings],
        "prior_auth": decision.prior_auth,
        "place_of_service": (decision.place_of_service, decision.place_of_service_source),
        "coverage": plain(decision.coverage),
        "evidence": [(e.kind, plain(e.source)) for e in decision.evidence],
    }


def checked(path: Path) -> tuple[bytes, Result]:
    """The record and what `check --use preauthorization` decides for it (no --payer, no --pos:
    the service has neither; the pack comes from the Coverage)."""
    raw = orjson.dumps(json.loads(path.read_text())["input"])
    return raw, process(raw, Options(use="preauthorization"))


def served(body: dict[str, Any], access: ServerAccess | None = None) -> dict[str, Result]:
    return answer(parse_hook(orjson.dumps(body), body["hook"]), access or ServerAccess()).results


@pytest.mark.parametrize("path", PLANNED, ids=[p.stem[:40] for p in PLANNED])
def test_the_hook_decides_what_check_decides_for_every_planned_golden_case(path: Path) -> None:
    raw, check = checked(path)
    index = parse_bytes(raw)
    record = [r.data for r in index.resources if r.container is None and r.type != "Bundle"]
    keys = set(check.decision.procedures)
    drafts = [r for r in record if f"{r['resourceType']}/{r.get('id')}" in keys]
    rest = [r for r in record if f"{r['resourceType']}/{r.get('id')}" not in keys]
    patient = check.decision.patient.split("/", 1)[1]
    for hook in ("order-sign", "order-select"):
        results = served(hook_request(drafts, patient, hook=hook, prefetch=prefetch_from(rest, patient)))
        assert set(results) == keys
        for result in results.values():
            assert result.decision.identifier == check.decision.identifier
            assert facts(result.decision) == facts(check.decision)


def test_a_planned_session_is_among_the_golden_cases() -> None:
    assert len(PLANNED) >= 6


# --------------------------------------------------------------------------- against the FHIR test server


@pytest.fixture
def client(fhir_server: FhirTestServer) -> Iterator[FhirClient]:
    with FhirClient(fhir_server.base_url, retries=1, backoff=0.01) as c:
        yield c


def load(client: FhirClient, raw: bytes) -> str:
    prefix = f"c{uuid.uuid4().hex[:8]}-"
    loaded = orjson.loads(raw)
    # The test server checks the core profiles a resource claims; the adapter reads base R4.
    for entry in loaded.get("entry", []) if isinstance(loaded, dict) else []:
        entry.get("resource", {}).get("meta", {}).pop("profile", None)
    load_file(client, orjson.dumps(loaded), id_prefix=prefix)
    return prefix


def drafts_on_server(client: FhirClient, check: Result, prefix: str) -> list[dict[str, Any]]:
    found = []
    for key in check.decision.procedures:
        res = check.index.get(key)
        assert res is not None
        id_ = res.id or str(uuid.uuid5(NAMESPACE, res.full_url or res.path))
        stored = client.read("ServiceRequest", prefixed_id(prefix, id_))
        stored.pop("meta", None)
        found.append(stored)
    return found


def _encounter_of(drafts: list[dict[str, Any]]) -> str | None:
    for draft in drafts:
        reference = (draft.get("encounter") or {}).get("reference", "")
        if reference.startswith("Encounter/"):
            return str(reference.split("/", 1)[1])
    return None


@pytest.mark.server
@pytest.mark.parametrize("path", PLANNED, ids=[p.stem[:40] for p in PLANNED])
def test_prefetch_from_the_templates_and_no_prefetch_at_all_decide_like_check(
    client: FhirClient, fhir_server: FhirTestServer, path: Path
) -> None:
    raw, check = checked(path)
    prefix = load(client, raw)
    drafts = drafts_on_server(client, check, prefix)
    patient = prefixed_id(prefix, check.decision.patient.split("/", 1)[1])
    encounter = _encounter_of(drafts)
    access = ServerAccess((fhir_server.base_url,), timeout=30, retries=1)
    prefetch = prefetch_from_server(client, patient, encounter)
    templated = served(hook_request(drafts, patient, prefetch=prefetch, encounter_id=encounter), access)
    gathered = served(
        hook_request(drafts, patient, hook="order-select", encounter_id=encounter, fhir_server=fhir_server.base_url),
        access,
    )
    for results in (templated, gathered):
        assert len(results) == len(drafts)
        for result in results.values():
            assert facts(result.decision, prefix) == facts(check.decision)


@pytest.mark.server
def test_order_select_without_prefetch_reads_the_record_from_the_fhir_server(
    client: FhirClient, fhir_server: FhirTestServer, tmp_path: Path
) -> None:
    case = CaseBuilder(dos="2026-12-15", pos="22", pain_score=None)
    case.block("L4-L5", date="2026-09-01", relief=90)
    key = case.procedure("L4-L5", resource_type="ServiceRequest", status="draft")
    prefix = load(client, case.raw())
    order = client.read("ServiceRequest", prefix + key.split("/", 1)[1])
    order.pop("meta", None)
    patient = f"{prefix}p1"
    ehr = Ehr(tmp_path)
    settings = Settings(
        fhir_base="http://fhir.invalid/fhir",
        db_path=tmp_path / "queue.sqlite",
        cds=CdsSettings(
            base_url=BASE,
            jwks_sources=(str(ehr.jwks_path),),
            issuers=(ISSUER,),
            allowed_fhir_bases=(fhir_server.base_url,),
        ),
    )
    with TestClient(create_app(settings, handler=lambda job: "ok", run_worker=False)) as http:
        url = "/cds-services/facet-order-select"

        def call(body: dict[str, Any]) -> dict[str, Any]:
            response = http.post(url, json=body, headers=ehr.auth(service_url("facet-order-select")))
            assert response.status_code == 200, response.text
            return dict(response.json())

        # The EHR calls from the encounter the procedure is planned in (its Location says POS 22).
        encounter = f"{prefix}enc"
        gathered = call(
            hook_request(
                [order], patient, hook="order-select", encounter_id=encounter, fhir_server=fhir_server.base_url
            )
        )
        prefetched = call(
            hook_request(
                [order],
                patient,
                hook="order-select",
                encounter_id=encounter,
                prefetch=prefetch_from_server(client, patient, encounter),
                fhir_server="https://not-allowed.example.org/fhir",
            )
        )
    extension = extension_of(gathered["systemActions"][0]["resource"])
    assert extension == extension_of(prefetched["systemActions"][0]["resource"])
    by_url = {part["url"]: part for part in extension["extension"]}
    assert by_url["covered"]["valueCode"] == "covered"
    assert by_url["pa-needed"]["valueCode"] == "auth-needed"  # POS 22 from the Encounter's Location on the server
    assert "doc-needed" not in by_url  # order-select asks for no documentation
    assert gathered["cards"][0]["summary"].startswith("Prior authorization needed")
