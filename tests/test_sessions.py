"""The public session API: list every facet session of an input and code any one of them, in time
linear in the input; and an index built from resources already in memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from adapter.fhir.ingest import index_resources, parse_bytes
from adapter.model import SessionRef
from adapter.pipeline import Options, code_session, list_sessions, process, process_index
from adapter.read import catalog, procedures

EXAMPLES = REPO / "examples"
THREE_PATIENTS = REPO / "tests" / "cases" / "124-ndjson-bulk-three-patients-latest-session-patient-c.json"


def _case_ndjson(path: Path) -> bytes:
    case = json.loads(path.read_text())
    return b"\n".join(json.dumps(e["resource"]).encode() for e in case["input"]["entry"])


def test_list_sessions_names_every_session_of_every_patient_sorted() -> None:
    index = parse_bytes(_case_ndjson(THREE_PATIENTS), name="export.ndjson")
    sessions = list_sessions(index)
    assert sessions == sorted(sessions, key=lambda s: (s.patient, s.date))
    assert len({s.patient for s in sessions}) == 3
    for ref in sessions:
        assert ref.use == "claim"
        assert list(ref.procedures) == sorted(ref.procedures)


def test_each_listed_session_codes_its_own_patient_and_date() -> None:
    index = parse_bytes(_case_ndjson(THREE_PATIENTS), name="export.ndjson")
    for ref in list_sessions(index):
        result = code_session(index, ref, Options(payer="medicare"))
        claim = result.bundle["entry"][0]["resource"]
        assert result.decision.patient == ref.patient
        assert claim["billablePeriod"]["start"] == ref.date.isoformat()
        assert tuple(result.case.session.keys) == ref.procedures
        # History is the patient's own sessions before this one, never another patient's.
        assert all(s.patient == ref.patient and s.date <= ref.date for s in result.case.history)


def test_the_latest_session_is_the_one_process_codes() -> None:
    raw = _case_ndjson(THREE_PATIENTS)
    whole = process(raw, Options(payer="medicare"), name="export.ndjson")
    index = parse_bytes(raw, name="export.ndjson")
    latest = max(list_sessions(index), key=lambda s: (s.date, s.patient))
    alone = code_session(index, latest, Options(payer="medicare"))
    assert alone.decision.identifier == whole.decision.identifier
    assert alone.decision.line_texts == whole.decision.line_texts


def test_coding_every_session_reads_each_facet_procedure_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Linear, not quadratic: the catalog reads every facet procedure once per input, however many
    sessions are coded from it."""
    calls: list[str] = []
    real = procedures.read_procedure

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append("read")
        return real(*args, **kwargs)

    monkeypatch.setattr(catalog, "read_procedure", counting)
    index = parse_bytes(_case_ndjson(THREE_PATIENTS), name="export.ndjson")
    sessions = list_sessions(index)
    assert len(sessions) > 3
    first_pass = len(calls)
    for ref in sessions:
        code_session(index, ref, Options(payer="medicare"))
    assert len(calls) == first_pass == len(catalog.facet_catalog(index).entries)


def test_a_session_that_is_not_in_the_input_is_an_input_error() -> None:
    from adapter.errors import NoFacetProcedureError

    index = parse_bytes(_case_ndjson(THREE_PATIENTS), name="export.ndjson")
    ref = list_sessions(index)[0]
    missing = SessionRef(ref.patient, ref.date, ref.use, ("Procedure/not-there",))
    with pytest.raises(NoFacetProcedureError):
        code_session(index, missing, Options(payer="medicare"))


def test_preauthorization_sessions_are_the_planned_service_requests() -> None:
    raw = (EXAMPLES / "medicare-preauthorization-pas" / "input.json").read_bytes()
    index = parse_bytes(raw)
    planned = list_sessions(index, "preauthorization")
    assert planned and all(key.startswith("ServiceRequest/") for ref in planned for key in ref.procedures)
    assert all(key.startswith("Procedure/") for ref in list_sessions(index, "claim") for key in ref.procedures)


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()))
def test_an_index_of_resources_in_memory_codes_like_the_file(example: str) -> None:
    folder = EXAMPLES / example
    source = next(iter(sorted(folder.glob("input.*"))))
    args = json.loads((folder / "args.json").read_text()) if (folder / "args.json").exists() else {}
    options = Options(**args)
    from_file = process(source.read_bytes(), options, name=source.name)
    resources = [res.data for res in from_file.index.resources if res.type != "Bundle"]
    in_memory = process_index(index_resources(resources, base_url="http://fhir.example/r4"), options)
    assert in_memory.decision.line_texts == from_file.decision.line_texts
    assert [d.code for d in in_memory.decision.diagnoses] == [d.code for d in from_file.decision.diagnoses]
    assert sorted(f.rule_id for f in in_memory.decision.findings) == sorted(
        f.rule_id for f in from_file.decision.findings
    )


def test_index_resources_gives_server_addresses_and_resolves_absolute_references() -> None:
    resources = [
        {"resourceType": "Patient", "id": "p1"},
        {"resourceType": "Condition", "id": "c1", "subject": {"reference": "http://fhir.example/r4/Patient/p1"}},
        {"resourceType": "Condition", "subject": {"reference": "Patient/p1"}},  # no id: no server address
    ]
    index = index_resources(resources, base_url="http://fhir.example/r4/")
    condition = index.get("Condition/c1")
    assert condition is not None and condition.full_url == "http://fhir.example/r4/Condition/c1"
    assert index.resolve(condition.data["subject"], condition) is index.get("Patient/p1")
    assert len(index.of_type("Condition")) == 1
