"""What the reader uses is declared once (adapter.read.uses): the reader cannot reach further, its
accessors check what they hand out, and `sync` gathers from a server exactly what is declared."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from builders import CaseBuilder
from conftest import REPO

from adapter.errors import InvalidR4Error, UndeclaredUseError
from adapter.fhir.ingest import parse_bytes
from adapter.read import uses
from adapter.read.access import Access

READ = REPO / "adapter" / "read"


def test_an_undeclared_type_is_refused() -> None:
    index = parse_bytes(b'{"resourceType": "Basic", "id": "b1", "code": {"text": "x"}}')
    with pytest.raises(UndeclaredUseError):
        Access(index).scan("Basic")
    with pytest.raises(UndeclaredUseError):
        Access(index).own("Patient/p1", "Basic")


def test_an_undeclared_reference_is_refused() -> None:
    raw = (
        b'{"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},'
        b' "asserter": {"reference": "Practitioner/x"}}'
    )
    index = parse_bytes(raw)
    condition = index.get("Condition/c1")
    assert condition is not None
    with pytest.raises(UndeclaredUseError):
        Access(index).follow(condition, "asserter")


def test_a_declared_reference_to_an_undeclared_target_type_is_not_followed() -> None:
    raw = (
        b'{"resourceType": "Bundle", "type": "collection", "entry": ['
        b'{"resource": {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},'
        b' "encounter": {"reference": "Patient/p1"}}},'
        b'{"resource": {"resourceType": "Patient", "id": "p1"}}]}'
    )
    index = parse_bytes(raw)
    condition = index.get("Condition/c1")
    assert condition is not None
    assert Access(index).follow(condition, "encounter") == []


def test_what_the_access_layer_hands_out_is_checked_as_r4() -> None:
    raw = (
        b'{"resourceType": "Bundle", "type": "collection", "entry": ['
        b'{"resource": {"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"code": "AMB"},'
        b' "location": [{"location": {"reference": "Location/l1"}}]}},'
        b'{"resource": {"resourceType": "Location", "id": "l1", "name": 12}}]}'
    )
    index = parse_bytes(raw)
    encounter = index.get("Encounter/e1")
    assert encounter is not None
    with pytest.raises(InvalidR4Error):
        Access(index).follow(encounter, "location.location")
    # Peeking at identity reads nothing and checks nothing; a deferring door records instead.
    assert Access(index).follow_unchecked(encounter, "location.location")[0].key == "Location/l1"
    touched: list[Any] = []
    Access(index).deferring(touched).follow(encounter, "location.location")
    assert [res.key for res in touched] == ["Location/l1"]


def _calls(path: Path) -> Iterator[tuple[str, str, int]]:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
            owner = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
            yield owner, node.func.attr, node.lineno


def test_only_the_access_layer_reaches_into_the_index() -> None:
    """Every reader module goes through `Access`, so the declaration and the R4 check cannot be
    bypassed by a direct index call."""
    direct = {"resolve", "of_type", "get", "validate_used", "is_valid"}
    offenders = [
        f"{path.name}:{line} index.{name}()"
        for path in sorted(READ.glob("*.py"))
        if path.name != "access.py"
        for owner, name, line in _calls(path)
        if owner == "index" and name in direct
    ]
    assert offenders == []


def test_every_followed_target_and_source_is_a_declared_type() -> None:
    for follow in uses.FOLLOWED:
        assert follow.source in uses.DECLARED_TYPES, follow
        assert set(follow.targets) <= uses.DECLARED_TYPES, follow
    for reverse in uses.REVERSE:
        assert reverse.source in uses.DECLARED_TYPES and reverse.target in uses.DECLARED_TYPES


class _RecordingClient:
    """Just enough of a FHIR client to watch what `gather` asks for (no HTTP)."""

    base_url = "http://fhir.example/r4"

    def __init__(self, focus: dict[str, Any]) -> None:
        self.focus = focus
        self.searches: list[tuple[str, list[tuple[str, str]]]] = []

    def read(self, type_: str, id_: str) -> dict[str, Any]:
        if f"{type_}/{id_}" == f"{self.focus['resourceType']}/{self.focus['id']}":
            return self.focus
        return {"resourceType": type_, "id": id_}

    def search(self, type_: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        self.searches.append((type_, list(params)))
        return []

    def supports_include(self, type_: str, include: str, *, reverse: bool = False) -> bool:
        return True

    def supports_batch(self) -> bool:
        return False  # each search on its own, as recorded; the batch path: tests/test_service_pool.py

    def relative(self, reference: str) -> str:
        return reference.removeprefix(self.base_url + "/")


def test_gather_searches_every_declared_type_with_its_declared_includes() -> None:
    from adapter.server.gather import gather

    focus = {
        "resourceType": "Procedure",
        "id": "p1",
        "status": "completed",
        "subject": {"reference": "Patient/pt"},
        "performedDateTime": "2026-10-15",
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "64493"}]},
    }
    client = _RecordingClient(focus)
    gather(client, "Procedure/p1")  # type: ignore[arg-type]
    searched = {type_: params for type_, params in client.searches}
    for wanted in uses.PATIENT_TYPES:
        assert wanted.type in searched, wanted.type
        params = searched[wanted.type]
        assert (wanted.search_param, "Patient/pt") in params
        includes = {value for name, value in params if name == "_include"}
        assert includes == {f.include for f in uses.FOLLOWED if f.source == wanted.type and f.include}
        if wanted.codes is not None:
            assert ("code", uses.code_tokens(wanted.codes)) in params
    revincludes = {value for name, value in searched["Procedure"] if name == "_revinclude"}
    assert revincludes == {r.revinclude for r in uses.REVERSE if r.target == "Procedure"}


def test_a_medication_read_for_conservative_care_must_be_valid_r4() -> None:
    case = CaseBuilder(therapy=None)
    case.block("L4-L5", side="bilateral", intent="diagnostic")
    case.resources.append({"resourceType": "Medication", "id": "nsaid", "code": {"text": "ibuprofen"}, "status": 7})
    case.resources.append(
        {
            "resourceType": "MedicationStatement",
            "id": "ms1",
            "status": "active",
            "subject": {"reference": "Patient/p1"},
            "medicationReference": {"reference": "Medication/nsaid"},
            "effectivePeriod": {"start": "2026-01-01"},
        }
    )
    with pytest.raises(InvalidR4Error):
        case.run(payer="medicare")


def test_another_patients_invalid_body_structure_is_passed_over() -> None:
    case = CaseBuilder()
    case.block("L4-L5", side="bilateral", intent="diagnostic")
    case.resources.append({"resourceType": "Patient", "id": "p2"})
    case.resources.append(
        {"resourceType": "BodyStructure", "id": "bs2", "patient": {"reference": "Patient/p2"}, "active": "yes"}
    )
    case.resources.append(
        {
            "resourceType": "Procedure",
            "id": "other",
            "status": "completed",
            "subject": {"reference": "Patient/p2"},
            "performedDateTime": "2026-01-05",
            "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "64493"}]},
            "extension": [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/procedure-targetBodyStructure",
                    "valueReference": {"reference": "BodyStructure/bs2"},
                }
            ],
        }
    )
    result = case.run(payer="medicare")
    assert result.decision.patient == "Patient/p1"
