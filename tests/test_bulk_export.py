"""`bulk --fhir-base`: the Bulk Data `$export` client, against the local test server's `$export`
(the real protocol end to end) and against scripted answers for what that server does not do."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import responses
from conftest import REPO, run_cli
from fhirserver import FhirTestServer

from adapter.bulk import export as export_module
from adapter.bulk.export import ExportRequest, export_types, run_export
from adapter.errors import FhirError, FhirProtocolError
from adapter.fhir.auth import AuthOptions
from adapter.fhir.client import FhirClient, ServerOptions
from adapter.read.uses import DECLARED_TYPES
from adapter.server.loader import as_transaction, load_file

sys.path.insert(0, str(REPO / "benchmarks"))
from population import write_population


def _claims(path: Path) -> set[str]:
    found = set()
    for line in path.read_text().splitlines():
        claim = json.loads(line)["entry"][0]["resource"]
        claim.pop("created")
        found.add(json.dumps(claim, sort_keys=True))
    return found


@pytest.fixture(scope="module")
def loaded(fhir_server: FhirTestServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A small population on the server under a unique id prefix, a Group of its patients, and the
    same resources as a local NDJSON file."""
    folder = tmp_path_factory.mktemp("population")
    write_population(folder, 12, seed=21)
    raw = b"".join(path.read_bytes() for path in sorted(folder.glob("*.ndjson")))
    prefix = f"bx{uuid.uuid4().hex[:6]}-"
    transaction = as_transaction(raw, id_prefix=prefix, name="population.ndjson")
    local = tmp_path_factory.mktemp("local") / "population.ndjson"
    local.write_bytes(b"".join(orjson.dumps(e["resource"]) + b"\n" for e in transaction["entry"]))
    with FhirClient(fhir_server.base_url, retries=1, backoff=0.01) as client:
        load_file(client, raw, id_prefix=prefix, name="population.ndjson")
        members = [
            {"entity": {"reference": e["request"]["url"]}}
            for e in transaction["entry"]
            if e["resource"]["resourceType"] == "Patient"
        ]
        group = {"resourceType": "Group", "id": f"{prefix}group", "type": "person", "actual": True, "member": members}
        client.update(group)
    return f"{prefix}group", local


@pytest.mark.server
def test_group_export_end_to_end_codes_what_the_files_code(
    fhir_server: FhirTestServer, loaded: tuple[str, Path], tmp_path: Path
) -> None:
    group, local = loaded
    exported = run_cli("bulk", "--fhir-base", fhir_server.base_url, "--group", group, "-o", str(tmp_path / "x"))
    assert exported.code in (0, 1), exported.stderr
    from_files = run_cli("bulk", str(local), "-o", str(tmp_path / "y"))
    assert exported.code == from_files.code
    assert _claims(tmp_path / "x" / "claims.ndjson") == _claims(tmp_path / "y" / "claims.ndjson")
    summary = json.loads((tmp_path / "x" / "summary.json").read_text())
    assert summary["sessions"] == 12 and summary["export"]["files"] >= 5 and not summary["export"]["resumed"]
    state = json.loads((tmp_path / "x" / "export" / "state.json").read_text())
    assert state["finished"] and state["identity"]["request"]["group"] == group
    types = {path.name.split("-", 1)[1].split(".")[0] for path in (tmp_path / "x" / "export" / "files").iterdir()}
    assert types <= DECLARED_TYPES  # _type kept the export to what the reader uses
    assert "AllergyIntolerance" not in types


@pytest.mark.server
def test_an_interrupted_export_resumes_where_it_stopped(
    fhir_server: FhirTestServer, loaded: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group, _ = loaded
    options = ServerOptions(fhir_server.base_url)
    real = export_module._download
    calls: list[str] = []

    def flaky(client: Any, url: str, target: Path, secured: bool) -> None:
        calls.append(url)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the operator pressed Ctrl-C during the third file
        real(client, url, target, secured)

    monkeypatch.setattr(export_module, "_download", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_export(options, ExportRequest(group=group), tmp_path)
    state = json.loads((tmp_path / "export" / "state.json").read_text())
    assert len(state["done"]) == 2 and state["manifest"] is not None
    monkeypatch.setattr(export_module, "_download", real)
    calls.clear()
    again = run_export(options, ExportRequest(group=group), tmp_path)
    assert again.resumed
    after = json.loads((tmp_path / "export" / "state.json").read_text())
    assert after["status_url"] == state["status_url"]  # no second kick-off
    assert len(after["done"]) == again.files == len(state["manifest"]["output"])


BASE = "https://fhir.example.org/r4"
STATUS = f"{BASE}/$export-poll/job-1"


@responses.activate
def test_client_follows_the_protocol_with_a_token_retry_after_and_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(export_module.time, "sleep", slept.append)
    kick = responses.get(f"{BASE}/$export", status=202, headers={"Content-Location": STATUS})
    responses.get(STATUS, status=202, headers={"Retry-After": "3", "X-Progress": "12% done"})
    responses.get(STATUS, status=202, headers={"X-Progress": "80% done"})
    manifest = {
        "transactionTime": "2026-11-27T12:00:00Z",
        "request": f"{BASE}/$export",
        "requiresAccessToken": True,
        "output": [{"type": "Patient", "url": "https://files.example.org/1.ndjson", "count": 1}],
        "error": [{"type": "OperationOutcome", "url": "https://files.example.org/err.ndjson"}],
    }
    responses.get(STATUS, status=200, json=manifest)
    patient = responses.get("https://files.example.org/1.ndjson", body='{"resourceType":"Patient","id":"a"}\n')
    responses.get("https://files.example.org/err.ndjson", body='{"resourceType":"OperationOutcome","issue":[]}\n')
    delete = responses.delete(STATUS, status=202)
    options = ServerOptions(BASE, AuthOptions(bearer_token="s3cret"))
    done = run_export(options, ExportRequest(), tmp_path)
    assert slept == [3.0, export_module.DEFAULT_WAIT_S]
    request = kick.calls[0].request
    assert request.headers["Prefer"] == "respond-async"
    assert request.headers["Authorization"] == "Bearer s3cret"
    query = request.url.split("?", 1)[1]
    assert "_type=" + "%2C".join(export_types()) in query and "_outputFormat=application%2Ffhir%2Bndjson" in query
    assert patient.calls[0].request.headers["Authorization"] == "Bearer s3cret"
    assert delete.call_count == 1
    assert done.files == 1 and done.error_files == 1
    assert (tmp_path / "export" / "files" / "00000-Patient.ndjson").read_text().startswith('{"resourceType":"Patient"')


@responses.activate
def test_files_that_need_no_token_get_none(tmp_path: Path) -> None:
    responses.get(f"{BASE}/Group/g1/$export", status=202, headers={"Content-Location": STATUS})
    responses.get(
        STATUS,
        status=200,
        json={"requiresAccessToken": False, "output": [{"type": "Patient", "url": "https://s3.example.org/p"}]},
    )
    download = responses.get("https://s3.example.org/p", body="")
    responses.delete(STATUS, status=404)
    run_export(ServerOptions(BASE, AuthOptions(bearer_token="s3cret")), ExportRequest(group="g1"), tmp_path)
    assert "Authorization" not in download.calls[0].request.headers


@responses.activate
def test_a_refused_or_odd_kick_off_is_an_upstream_error(tmp_path: Path) -> None:
    responses.get(
        f"{BASE}/$export",
        status=400,
        json={"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-supported"}]},
    )
    with pytest.raises(FhirError) as refused:
        run_export(ServerOptions(BASE), ExportRequest(), tmp_path)
    assert refused.value.exit_code == 4
    responses.replace(responses.GET, f"{BASE}/$export", status=202)
    with pytest.raises(FhirProtocolError, match="Content-Location"):
        run_export(ServerOptions(BASE), ExportRequest(), tmp_path / "again")


@pytest.mark.server
def test_the_test_servers_export_follows_the_ig(fhir_server: FhirTestServer, loaded: tuple[str, Path]) -> None:
    import requests

    group, _ = loaded
    base = fhir_server.base_url
    assert requests.get(f"{base}/$export", timeout=10).status_code == 400  # no Prefer: respond-async
    async_ = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
    assert requests.get(f"{base}/$export?_type=Nope", headers=async_, timeout=10).status_code == 400
    assert requests.get(f"{base}/$export?_outputFormat=text/csv", headers=async_, timeout=10).status_code == 400
    assert requests.get(f"{base}/Group/no-such-group/$export", headers=async_, timeout=10).status_code == 404
    kick = requests.get(f"{base}/Group/{group}/$export?_type=Patient", headers=async_, timeout=10)
    assert kick.status_code == 202
    status_url = kick.headers["Content-Location"]
    pending = requests.get(status_url, timeout=10)
    assert pending.status_code == 202 and pending.headers["Retry-After"] and pending.headers["X-Progress"]
    done = requests.get(status_url, timeout=10)
    manifest = done.json()
    assert done.status_code == 200 and manifest["output"] and {o["type"] for o in manifest["output"]} == {"Patient"}
    lines = requests.get(manifest["output"][0]["url"], timeout=10).text.splitlines()
    members = requests.get(f"{base}/Group/{group}", timeout=10).json()["member"]
    assert len(lines) == len(members)  # every member patient, one a line
    assert all(json.loads(line)["resourceType"] == "Patient" for line in lines)
    assert requests.delete(status_url, timeout=10).status_code == 202
    assert requests.get(status_url, timeout=10).status_code == 404
