"""A coder's override on the local FHIR test server (adapter.server.override): the held Claim
becomes active with the override tag, its Task is completed with the reason, a Provenance names
the coder; later syncs of the same content keep it active; a change to the claim lapses it (draft
again, the Task reopened); what the coder did not see is refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from conftest import REPO
from fhir.resources.R4B.provenance import Provenance
from fhir.resources.R4B.task import Task
from fhirserver import FhirTestServer

from adapter.fhir.client import FhirClient
from adapter.pipeline import Options
from adapter.review.store import ReviewStore
from adapter.server.override import USER_SYSTEM, OverrideRefused, fingerprint_of, override_claim, recode
from adapter.server.sync import sync_procedure
from adapter.server.writeback import OVERRIDE_TAG_SYSTEM
from adapter.service.queue import JobQueue

pytestmark = pytest.mark.server

EXAMPLES = REPO / "examples"
MEDICARE = Options(payer="medicare")
REASON = "Prior authorization PA-77 confirmed by phone; <script>x</script> stays text"


@pytest.fixture
def client(fhir_server: FhirTestServer) -> Iterator[FhirClient]:
    with FhirClient(fhir_server.base_url, retries=1, backoff=0.01) as c:
        yield c


def held_session(client: FhirClient) -> str:
    from adapter.server.loader import load_file

    prefix = f"o{uuid.uuid4().hex[:8]}-"
    source = EXAMPLES / "medicare-hopd-prior-auth-missing" / "input.json"
    load_file(client, source.read_bytes(), id_prefix=prefix, name=source.name)
    return f"Procedure/{prefix}mbb-dora"


def provenances(client: FhirClient, claim_id: str) -> list[dict[str, object]]:
    found = client.search("Provenance", {"target": f"Claim/{claim_id}"})
    return [r for r in found if r["resourceType"] == "Provenance"]


def test_override_then_resync_then_a_change_that_lapses_it(client: FhirClient, tmp_path: object) -> None:
    focus = held_session(client)
    store = ReviewStore(JobQueue(f"{tmp_path}/q.sqlite"))
    held = sync_procedure(client, focus, MEDICARE)
    assert store.record_sync(held) == "needs-review"
    result = recode(client, focus, MEDICARE)
    assert result.held and fingerprint_of(client, result) == held.fingerprint

    done = override_claim(client, result, user="alice", reason=REASON, fingerprint=str(held.fingerprint))
    claim = client.read("Claim", done.claim_id)
    assert claim["status"] == "active" and claim["meta"]["versionId"] == done.claim_version
    assert {"system": OVERRIDE_TAG_SYSTEM, "code": held.fingerprint} in [
        {k: t[k] for k in ("system", "code")} for t in claim["meta"]["tag"]
    ]
    task = client.read("Task", str(held.task_id))
    Task.model_validate(task)
    assert (task["status"], task["businessStatus"]["text"]) == ("completed", "overridden")
    assert task["output"][-1]["valueString"] == REASON and task["note"][-1]["authorString"] == "alice"
    [provenance] = provenances(client, done.claim_id)
    Provenance.model_validate(provenance)
    assert provenance["id"] == done.provenance_id
    assert {t["reference"] for t in provenance["target"]} == {f"Claim/{done.claim_id}", f"Task/{held.task_id}"}
    assert provenance["reason"][0]["text"] == REASON
    agent = provenance["agent"][0]
    assert agent["who"]["identifier"] == {"system": USER_SYSTEM, "value": "alice"}
    assert agent["type"]["coding"][0]["code"] == "verifier"
    assert provenance["entity"][0]["what"]["reference"].startswith(f"Claim/{done.claim_id}/_history/")
    store.record_override(result.decision.identifier, user="alice", reason=REASON, fingerprint=done.fingerprint,
                          findings=result.findings, claim=f"Claim/{done.claim_id}", claim_version=done.claim_version,
                          task=f"Task/{done.task_id}", provenance=done.provenance_id)  # fmt: skip

    # Later syncs of the same record leave the Claim as the coder left it: active, Task closed.
    again = sync_procedure(client, focus, MEDICARE)
    assert (again.claim_action, again.claim_status, again.task_action) == ("overridden", "active", "none")
    assert client.read("Claim", done.claim_id)["meta"]["versionId"] == done.claim_version
    assert client.read("Task", str(held.task_id))["status"] == "completed"
    assert store.record_sync(again) == "overridden"
    # A change to the record that the Claim does not carry changes nothing either.
    procedure = client.read("Procedure", focus.split("/")[1])
    client.update({**procedure, "note": [{"text": "Tolerated well."}]})
    assert sync_procedure(client, focus, MEDICARE).claim_action == "overridden"

    # The claim changes (another place of service): the override has lapsed.
    changed = sync_procedure(client, focus, Options(payer="medicare", pos="19"))
    assert changed.exit_code == 1 and changed.fingerprint != held.fingerprint
    assert (changed.claim_action, changed.claim_status, changed.task_action) == ("updated", "draft", "updated")
    assert client.read("Claim", done.claim_id)["status"] == "draft"
    assert client.read("Task", str(held.task_id))["status"] == "requested"
    assert store.record_sync(changed) == "needs-review"
    assert store.events(result.decision.identifier)[-1].detail.get("lapsed") is True


def test_what_the_coder_did_not_see_is_refused(client: FhirClient) -> None:
    focus = held_session(client)
    held = sync_procedure(client, focus, MEDICARE)
    result = recode(client, focus, MEDICARE)
    with pytest.raises(OverrideRefused, match="record changed"):
        override_claim(client, result, user="alice", reason="ok", fingerprint="0" * 32)
    # The server holds another coding of the session than the one overridden: re-check first.
    sync_procedure(client, focus, Options(payer="medicare", pos="19"))
    with pytest.raises(OverrideRefused, match="re-check it first"):
        override_claim(client, result, user="alice", reason="ok", fingerprint=str(held.fingerprint))
    # A claim that is not held has nothing to override.
    ready = recode(client, focus, Options(payer="medicare", prior_auth="PA-1"))
    with pytest.raises(OverrideRefused, match="not held"):
        override_claim(client, ready, user="alice", reason="ok", fingerprint="x")
    assert provenances(client, str(held.claim_id)) == []
