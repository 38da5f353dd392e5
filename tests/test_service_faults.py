"""The service under faults it must answer plainly: an unusable `--db`, a queue another process
holds locked, ids that are not usable path segments, `serve` saying it listens only once it does,
Backport notifications for Subscriptions the service does not know, gaps in event numbers, and
`subscribe` without a hook token.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, run_cli
from test_service import TOKEN, MakeClient, jobs, post, procedure, put, status_parameters

from adapter.service.app import create_app
from adapter.service.notifications import parse_post, parse_put, valid_id
from adapter.service.queue import JobQueue
from adapter.service.settings import Settings
from adapter.service.subscriptions import Monitor, Subscriptions
from adapter.service.web import ServiceError


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[MakeClient]:
    """Services without workers (jobs stay queued, for the test to look at)."""
    from fastapi.testclient import TestClient

    opened: list[TestClient] = []

    def make(**options: Any) -> TestClient:
        settings = Settings(
            fhir_base="http://fhir.invalid/fhir", db_path=tmp_path / f"q{len(opened)}.sqlite", **options
        )
        client = TestClient(create_app(settings, handler=lambda job: "ok", run_worker=False))
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def notification(kind: str, *, subscription: str = "admission", since: str = "2", **extra: Any) -> dict[str, Any]:
    status = status_parameters(kind, **extra)
    for parameter in status["parameter"]:
        if parameter["name"] == "subscription":
            parameter["valueReference"]["reference"] = f"https://example.org/fhir/Subscription/{subscription}"
        if parameter["name"] == "events-since-subscription-start":
            parameter["valueString"] = since
    entries: list[dict[str, Any]] = [{"fullUrl": "urn:uuid:1", "resource": status}]
    return {"resourceType": "Bundle", "type": "history", "entry": entries}


def event(number: int) -> dict[str, Any]:
    return {"number": str(number), "focus": f"https://example.org/fhir/Procedure/p{number}"}


# --------------------------------------------------------------------------- --db


@pytest.mark.parametrize("where", ["parent-is-a-file", "a-directory"])
def test_an_unusable_db_path_is_exit_2_naming_it(tmp_path: Path, where: str) -> None:
    if where == "parent-is-a-file":
        (tmp_path / "file").write_text("x")
        db = tmp_path / "file" / "queue.sqlite"
    else:
        db = tmp_path / "folder.sqlite"
        db.mkdir()
    run = run_cli("serve", "--fhir-base", "http://127.0.0.1:9/fhir", "--port", "0", "--db", str(db))
    assert run.code == 2, run.stderr
    text = run.error_outcome()["issue"][0]["details"]["text"]
    assert str(db) in text
    assert b"bug" not in run.stderr


# --------------------------------------------------------------------------- a locked queue


def test_a_locked_queue_answers_503_within_about_a_second(app_client: MakeClient) -> None:
    client = app_client(token=TOKEN)
    holder = sqlite3.connect(client.app.state.queue.path, isolation_level=None)  # type: ignore[attr-defined]
    try:
        holder.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        answer = put(client, procedure("locked"))
        took = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert answer.status_code == 503, answer.text
    assert answer.json()["resourceType"] == "OperationOutcome"
    assert took < 2.5
    assert put(client, procedure("locked")).status_code == 200  # the redelivery is taken


# --------------------------------------------------------------------------- ids


@pytest.mark.parametrize("value", [".", ".."])
def test_dot_ids_are_not_ids(value: str) -> None:
    assert not valid_id(value)
    assert valid_id("a.b") and valid_id("...") and valid_id("x-1")
    with pytest.raises(ServiceError) as raised:
        parse_put("Procedure", value, json.dumps(procedure(value)).encode())
    assert raised.value.status == 400


@pytest.mark.parametrize("encoded", ["%2E", "%2E%2E"])
def test_a_dot_id_in_the_url_is_refused_400(app_client: MakeClient, encoded: str) -> None:
    client = app_client(token=TOKEN)
    answer = put(client, procedure(".."), path=f"/notify/Procedure/{encoded}")
    assert answer.status_code == 400, answer.text
    assert "not a valid FHIR id" in answer.json()["issue"][0]["details"]["text"]
    assert jobs(client) == []


def test_a_dot_dot_focus_is_refused_400(app_client: MakeClient) -> None:
    client = app_client(token=TOKEN)
    bundle = notification("event-notification", events=[{"number": "1", "focus": "Procedure/.."}])
    answer = post(client, bundle)
    assert answer.status_code == 400, answer.text
    assert jobs(client) == []
    with pytest.raises(ServiceError):
        parse_post(json.dumps(bundle).encode())


def test_sync_refuses_dot_ids() -> None:
    run = run_cli("sync", "--fhir-base", "http://127.0.0.1:9/fhir", "--procedure", "Procedure/..")
    assert run.code == 2, run.stderr


# --------------------------------------------------------------------------- serve says when it listens


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_does_not_say_listening_when_the_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = run_cli(
            "serve", "--fhir-base", "http://127.0.0.1:9/fhir", "--port", str(port), "--db", str(tmp_path / "q.sqlite")
        )
    assert run.code == 2
    assert b"listening on" not in run.stderr


def test_serve_says_listening_once_it_answers(tmp_path: Path) -> None:
    import requests

    port = _free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "adapter", "serve", "--fhir-base", "http://127.0.0.1:9/fhir", "--port", str(port)),
            *("--db", str(tmp_path / "q.sqlite"), "--reconcile-every", "off"),
        ],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 30
        line = b""
        while b"listening on" not in line and time.monotonic() < deadline:
            line = process.stderr.readline()
            assert line or process.poll() is None, "serve exited before it listened"
        assert b"listening on" in line
        # Said once bound: the port answers right away.
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        process.terminate()
        process.wait(15)
        if process.stderr is not None:
            process.stderr.close()


# --------------------------------------------------------------------------- known Subscriptions


def test_deliveries_for_an_unknown_subscription_are_refused_and_counted(app_client: MakeClient) -> None:
    client = app_client(token=TOKEN, subscriptions=("known",))
    refused = post(client, notification("event-notification", subscription="other", events=[event(1)]))
    assert refused.status_code == 403, refused.text
    assert "Subscription/other" in refused.json()["issue"][0]["details"]["text"]
    assert jobs(client) == []
    accepted = post(client, notification("event-notification", subscription="known", since="1", events=[event(1)]))
    assert accepted.status_code == 200
    health = client.get("/healthz").json()["subscriptions"]
    assert health["refused_deliveries"] == 1
    assert [s["id"] for s in health["known"]] == ["known"]


def test_knowing_none_any_subscription_is_accepted_and_tracked(app_client: MakeClient) -> None:
    client = app_client(token=TOKEN)
    for name in ("a", "b"):
        assert post(client, notification("heartbeat", subscription=name, since="0")).status_code == 200
    known = client.get("/healthz").json()["subscriptions"]["known"]
    assert [(s["id"], s["origin"]) for s in known] == [("a", "seen"), ("b", "seen")]


# --------------------------------------------------------------------------- gaps


def _recoveries(client: Any) -> list[tuple[int, int | None]]:
    found = []
    for job in jobs(client):
        if job.source == "recovery":
            detail = json.loads(job.detail or "{}")
            found.append((detail["after"], detail["until"]))
    return found


def test_a_gap_in_event_numbers_queues_one_recovery(app_client: MakeClient) -> None:
    client = app_client(token=TOKEN)
    assert post(client, notification("event-notification", since="1", events=[event(1)])).status_code == 200
    assert _recoveries(client) == []
    assert post(client, notification("event-notification", since="4", events=[event(4)])).status_code == 200
    assert _recoveries(client) == [(1, 3)]
    # The same notification again (a redelivery) finds no new gap; the next number neither.
    post(client, notification("event-notification", since="4", events=[event(4)]))
    post(client, notification("event-notification", since="5", events=[event(5)]))
    assert _recoveries(client) == [(1, 3)]


def test_a_heartbeat_whose_count_is_ahead_queues_a_recovery(app_client: MakeClient) -> None:
    client = app_client(token=TOKEN)
    post(client, notification("event-notification", since="2", events=[event(2)]))
    post(client, notification("heartbeat", since="2"))
    assert _recoveries(client) == []
    post(client, notification("heartbeat", since="6"))
    assert _recoveries(client) == [(2, 6)]


def test_a_status_of_error_queues_a_check(app_client: MakeClient) -> None:
    client = app_client(token=TOKEN)
    post(client, notification("heartbeat", since="0", status="error"))
    checks = [j for j in jobs(client) if j.source == "check"]
    assert len(checks) == 1 and json.loads(checks[0].detail or "{}") == {"subscription": "admission"}


def test_a_refused_notification_leaves_no_trace_so_its_redelivery_finds_the_gap(app_client: MakeClient) -> None:
    client = app_client(token=TOKEN)
    post(client, notification("event-notification", since="1", events=[event(1)]))
    holder = sqlite3.connect(client.app.state.queue.path, isolation_level=None)  # type: ignore[attr-defined]
    holder.execute("BEGIN EXCLUSIVE")
    try:
        assert post(client, notification("event-notification", since="3", events=[event(3)])).status_code == 503
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert post(client, notification("event-notification", since="3", events=[event(3)])).status_code == 200
    assert _recoveries(client) == [(1, 2)]


# --------------------------------------------------------------------------- the monitor


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_monitor_checks_a_subscription_whose_heartbeat_is_overdue(tmp_path: Path) -> None:
    clock = _Clock()
    queue = JobQueue(tmp_path / "q.sqlite", clock=clock)
    subscriptions = Subscriptions(queue)
    woken: list[int] = []
    monitor = Monitor(subscriptions, reconcile_seconds=None, wake=woken.append)
    subscriptions.register(["s1"], "option")
    subscriptions.update("s1", heartbeat_seconds=60.0, last_seen_at=clock.now, status="active", status_at=clock.now)
    assert monitor.tick(1.0) == 0
    clock.now += 60 + 29  # within the period plus its margin (half a period, at least 10 s)
    assert monitor.tick(2.0) == 0
    clock.now += 2
    assert monitor.tick(3.0) == 1
    assert [j.source for j in queue.jobs()] == ["check"]
    clock.now += 5
    assert monitor.tick(4.0) == 0  # at most one check per heartbeat period
    health = subscriptions.all()[0].as_dict(clock.now)
    assert health["heartbeat_missed"] is True


def test_the_monitor_queues_the_sweep_every_period(tmp_path: Path) -> None:
    queue = JobQueue(tmp_path / "q.sqlite")
    monitor = Monitor(Subscriptions(queue), reconcile_seconds=60.0, wake=lambda n: None)
    assert monitor.tick(30.0) == 0
    assert monitor.tick(61.0) == 1
    assert monitor.tick(100.0) == 0
    assert monitor.tick(125.0) == 1
    assert [(j.kind, j.source, j.state) for j in queue.jobs()] == [("requery", "sweep", "pending")]  # coalesced


# --------------------------------------------------------------------------- subscribe and the channel header


@pytest.mark.server
def test_subscribe_without_a_hook_token_never_drops_a_channel_header(
    fhir_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests

    monkeypatch.delenv("FACET_ADAPTER_HOOK_TOKEN", raising=False)
    endpoint = f"http://127.0.0.1:9/hook-{time.monotonic_ns()}"
    base = ["subscribe", "--fhir-base", fhir_server.base_url, "--endpoint", endpoint]
    db = tmp_path / "q.sqlite"
    first = run_cli(*base, "--hook-token", "secret", "--db", str(db))
    assert first.code == 0, first.stderr
    sid = first.stdout.decode().split("Subscription/")[1].split()[0]
    again = run_cli(*base)
    assert again.code == 2
    text = again.error_outcome()["issue"][0]["details"]["text"]
    assert "channel header" in text and "--hook-token" in text and "nothing was changed" in text
    stored = requests.get(f"{fhir_server.base_url}/Subscription/{sid}", timeout=10).json()
    try:
        assert stored["channel"]["header"] == ["Authorization: Bearer secret"]
        assert [(s.id, s.origin) for s in Subscriptions(JobQueue(db)).all()] == [(sid, "subscribe")]
    finally:
        requests.delete(f"{fhir_server.base_url}/Subscription/{sid}", timeout=10)


@pytest.mark.server
def test_subscribe_warns_when_it_creates_a_subscription_without_a_header(
    fhir_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests

    monkeypatch.delenv("FACET_ADAPTER_HOOK_TOKEN", raising=False)
    endpoint = f"http://127.0.0.1:9/hook-{time.monotonic_ns()}"
    run = run_cli("subscribe", "--fhir-base", fhir_server.base_url, "--endpoint", endpoint)
    assert run.code == 0, run.stderr
    assert b"warning" in run.stderr and b"no channel header" in run.stderr
    sid = run.stdout.decode().split("Subscription/")[1].split()[0]
    requests.delete(f"{fhir_server.base_url}/Subscription/{sid}", timeout=10)
