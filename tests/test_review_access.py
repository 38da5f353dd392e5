"""/review without a browser or a FHIR server: the users file and its command, what the service
records for the worklist (and the queue database's migration to it), signing in, sessions, CSRF,
roles, the single sign-on header, rate limits, and the line between /review and the hook token.

The FHIR base points at a closed port, so the claim page shows the claim as last coded (the
browser test, tests/test_review_browser.py, has the real server)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import sqlite3
import stat
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli

from adapter.review.settings import ReviewSettings
from adapter.review.store import Filters, ReviewStore
from adapter.review.users import User, hash_password, load_users, save_users
from adapter.rules.findings import Finding
from adapter.server.outcome import SyncOutcome
from adapter.service.app import create_app
from adapter.service.queue import SCHEMA_VERSION, JobQueue, Notice
from adapter.service.settings import Settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

TOKEN = "hook-token-0123456789"
CODER, VIEWER = ("alice", "alice password 1"), ("victor", "victor password 1")
HELD = "0b8c5c1e-0000-5000-8000-000000000001"
READY = "0b8c5c1e-0000-5000-8000-000000000002"
CLOSED = "http://127.0.0.1:9/fhir"  # nothing listens: the FHIR server cannot be read


def finding(rule_id: str, severity: str = "error") -> Finding:
    return Finding(
        rule_id=rule_id,
        rule_version=1,
        pack="medicare",
        pack_version="2026.1",
        severity=severity,  # type: ignore[arg-type]
        issue="business-rule",
        title=f"{rule_id} title",
        message=f"{rule_id} message",
        citation="",
        carc=None,
        hint="",
        expressions=(),
    )


def outcome(ident: str, *, held: bool, fingerprint: str = "f1", action: str = "created", **extra: Any) -> SyncOutcome:
    return SyncOutcome(
        procedure=f"Procedure/p-{ident[-1]}",
        dry_run=False,
        exit_code=1 if held else 0,
        findings=[finding("prior-auth-required")] if held else [finding("payer-defaulted", "information")],
        patient=f"Patient/pt-{ident[-1]}",
        date="2026-03-0" + ident[-1],
        claim_identifier=ident,
        claim_id=f"c{ident[-1]}",
        claim_status="draft" if held else "active",
        claim_action=action,
        lines=["64493-LT-KX"],
        use="claim",
        pack="medicare",
        pack_version="2026.1",
        fingerprint=fingerprint,
        **extra,
    )


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("users") / "users.json"
    save_users(
        path,
        {
            CODER[0]: User(CODER[0], "coder", hash_password(CODER[1])),
            VIEWER[0]: User(VIEWER[0], "viewer", hash_password(VIEWER[1])),
            "sso-coder": User("sso-coder", "coder", None),
        },
    )
    return path


MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(tmp_path: Path, users_file: Path) -> Iterator[MakeClient]:
    opened: list[TestClient] = []

    def make(peer: str = "testclient", **review: Any) -> TestClient:
        settings = Settings(
            fhir_base=CLOSED,
            db_path=tmp_path / "queue.sqlite",
            token=TOKEN,
            fhir_retries=0,
            fhir_timeout=2.0,
            review=ReviewSettings(**{"users_file": users_file, **review}),
        )
        app = create_app(settings, handler=lambda job: "ok", run_worker=False)
        store = ReviewStore(app.state.queue)
        store.record_sync(outcome(READY, held=False))
        store.record_sync(outcome(HELD, held=True))
        client = TestClient(app, raise_server_exceptions=False, client=(peer, 50000), follow_redirects=False)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found[1]


def sign_in(client: TestClient, who: tuple[str, str]) -> str:
    form = client.get("/review/login")
    assert form.status_code == 200
    answer = client.post("/review/login", data={"csrf": csrf_of(form.text), "username": who[0], "password": who[1]})
    assert (answer.status_code, answer.headers["location"]) == (303, "/review"), answer.text
    page = client.get("/review")
    assert page.status_code == 200
    return csrf_of(page.text)


# ---------------------------------------------------------------------- the users file and command


def test_users_command_adds_lists_and_removes(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    added = run_cli("users", "add", "carol", "--role", "coder", "--file", str(path), "--password-stdin",
                    stdin=b"carol's long password\n")  # fmt: skip
    assert added.code == 0, added.stderr.decode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(path.read_text())["users"]["carol"]
    assert stored["role"] == "coder" and stored["password"].startswith("$argon2id$")
    assert "carol's long password" not in path.read_text()
    sso = run_cli("users", "add", "dan", "--role", "viewer", "--no-password", "--file", str(path))
    assert sso.code == 0
    listed = run_cli("users", "list", "--file", str(path)).stdout.decode()
    assert re.search(r"carol\s+coder\s+yes", listed) and re.search(r"dan\s+viewer\s+no", listed)
    assert run_cli("users", "remove", "dan", "--file", str(path)).code == 0
    assert set(load_users(path)) == {"carol"}
    # Refused, with exit 2: a short password, a bad name, an unknown user, no terminal to ask on.
    short = run_cli("users", "add", "erin", "--role", "coder", "--file", str(path), "--password-stdin", stdin=b"x\n")
    assert short.code == 2 and set(load_users(path)) == {"carol"}
    assert run_cli("users", "add", "bad name", "--role", "coder", "--file", str(path), "--no-password").code == 2
    assert run_cli("users", "remove", "nobody", "--file", str(path)).code == 2
    assert run_cli("users", "add", "erin", "--role", "coder", "--file", str(path), stdin=b"").code == 2
    (tmp_path / "other.json").write_text('{"something": "else"}')
    assert run_cli("users", "list", "--file", str(tmp_path / "other.json")).code == 2


def test_serve_refuses_a_file_that_is_not_a_users_file_and_a_bad_proxy(tmp_path: Path) -> None:
    bad = tmp_path / "users.json"
    bad.write_text("[]")
    base = ["serve", "--fhir-base", CLOSED, "--port", "0", "--db", str(tmp_path / "q.sqlite")]
    run = run_cli(*base, "--review-users", str(bad))
    assert run.code == 2 and b"not a facet-adapter users file" in run.stderr
    run = run_cli(*base, "--review-trusted-proxy", "proxy.example")
    assert run.code == 2 and b"--review-trusted-proxy" in run.stderr


# ---------------------------------------------------------------------- what the service records


def test_the_store_keeps_status_and_history(tmp_path: Path) -> None:
    store = ReviewStore(JobQueue(tmp_path / "q.sqlite"))
    assert store.record_sync(outcome(HELD, held=True)) == "needs-review"
    assert store.record_sync(outcome(HELD, held=True, action="unchanged")) == "needs-review"  # no new event
    store.record_override(HELD, user="alice", reason="ok", fingerprint="f1", findings=[finding("prior-auth-required")],
                          claim="Claim/c1", claim_version="2", task="Task/t1", provenance="pv1")  # fmt: skip
    # A later sync of the same fingerprint keeps the override, even one that saw the Claim before it.
    assert store.record_sync(outcome(HELD, held=True, action="unchanged")) == "overridden"
    assert store.record_sync(outcome(HELD, held=True, action="overridden"), rechecked_by="alice") == "overridden"
    # The record changed: the override has lapsed.
    assert store.record_sync(outcome(HELD, held=True, fingerprint="f2", action="updated")) == "needs-review"
    assert store.record_sync(outcome(HELD, held=False, fingerprint="f3", action="updated")) == "passed"
    events = store.events(HELD)
    assert [e.event for e in events] == ["needs-review", "overridden", "re-checked", "needs-review", "passed"]
    assert (events[1].actor, events[1].reason) == ("alice", "ok")
    assert events[1].detail["findings"] == [{"rule_id": "prior-auth-required", "rule_version": 1, "severity": "error"}]
    assert events[2].detail["status"] == "overridden" and events[3].detail.get("lapsed") is True
    # Retired by a later sync: cancelled on the server, listed last.
    store.record_sync(outcome(READY, held=True))
    store.record_sync(outcome(READY, held=False, retired=["Claim/c1"], action="unchanged"))
    row = store.claim(HELD)
    assert row is not None and row.claim_status == "cancelled"
    # Nothing patient-identifying beyond resource ids, and no finding message, in the tables.
    dump = "\n".join(str(tuple(r)) for r in store.queue.read("SELECT * FROM review_claims"))
    assert "message" not in dump


def test_the_worklist_order_and_filters(tmp_path: Path) -> None:
    store = ReviewStore(JobQueue(tmp_path / "q.sqlite"))
    store.record_sync(outcome(READY, held=False))
    store.record_sync(outcome(HELD, held=True))
    rows, total = store.claims(Filters())
    assert [r.identifier for r in rows] == [HELD, READY] and total == 2
    assert [r.identifier for r in store.claims(Filters(status="passed"))[0]] == [READY]
    assert [r.identifier for r in store.claims(Filters(rule="prior-auth-required"))[0]] == [HELD]
    assert store.claims(Filters(pack="uhc"))[1] == 0
    assert [r.identifier for r in store.claims(Filters(date_from=dt.date(2026, 3, 2)))[0]] == [READY]
    assert [r.identifier for r in store.claims(Filters(date_to=dt.date(2026, 3, 1)))[0]] == [HELD]
    assert store.choices() == (["payer-defaulted", "prior-auth-required"], ["medicare"])


def test_a_queue_database_of_schema_2_gains_the_worklist_tables(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    queue = JobQueue(path)
    [queued] = queue.enqueue([Notice(kind="resource", source="rest-hook", resource_type="Procedure", resource_id="p1")])
    conn = sqlite3.connect(path)
    conn.executescript(
        "DROP TABLE review_claims; DROP TABLE review_rules; DROP TABLE review_events; PRAGMA user_version = 2;"
    )
    conn.close()
    reopened = JobQueue(path)
    assert [j.id for j in reopened.jobs()] == [queued.job_id]
    assert ReviewStore(reopened).record_sync(outcome(HELD, held=True)) == "needs-review"
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    conn.close()


# ---------------------------------------------------------------------- signing in


def test_sign_in_sets_a_strict_http_only_cookie_and_replaces_the_session(make_client: MakeClient) -> None:
    client = make_client()
    assert client.get("/review").headers["location"] == "/review/login"
    form = client.get("/review/login")
    before = form.cookies["facet_review"]
    cookie = form.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/review" in cookie
    assert "Secure" not in cookie  # plain http here
    for header in ("content-security-policy", "cache-control", "x-frame-options", "referrer-policy"):
        assert header in form.headers
    assert form.headers["cache-control"] == "no-store"
    answer = client.post("/review/login", data={"csrf": csrf_of(form.text), "username": "alice",
                                                 "password": CODER[1]})  # fmt: skip
    assert answer.status_code == 303
    assert answer.cookies["facet_review"] != before
    page = client.get("/review")
    assert page.status_code == 200 and "Signed in as <strong>alice</strong> (coder)" in page.text
    # The worklist: held first, links by the claim identifier only.
    links = re.findall(r'href="(/review/claims/[^"]+)"', page.text)
    assert links == [f"/review/claims/{HELD}", f"/review/claims/{READY}"]
    # Signing out ends the session.
    client.post("/review/logout", data={"csrf": csrf_of(page.text)})
    assert client.get("/review").status_code == 303


def test_a_cookie_is_secure_behind_https(make_client: MakeClient) -> None:
    direct = make_client()
    direct.base_url = direct.base_url.copy_with(scheme="https")  # type: ignore[assignment]
    assert "Secure" in direct.get("/review/login").headers["set-cookie"]
    proxied = make_client(peer="10.0.0.5", trusted_proxies=(ipaddress.ip_network("10.0.0.0/24"),))
    answer = proxied.get("/review/login", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in answer.headers["set-cookie"]
    untrusted = make_client(peer="192.0.2.7", trusted_proxies=(ipaddress.ip_network("10.0.0.0/24"),))
    assert "Secure" not in untrusted.get("/review/login", headers={"X-Forwarded-Proto": "https"}).headers["set-cookie"]


def test_wrong_passwords_and_the_rate_limit(make_client: MakeClient) -> None:
    client = make_client(login_failures=3)
    csrf = csrf_of(client.get("/review/login").text)
    for _ in range(3):
        wrong = client.post("/review/login", data={"csrf": csrf, "username": "alice", "password": "not it at all"})
        assert wrong.status_code == 401 and "The user name or password is wrong." in wrong.text
    unknown = client.post("/review/login", data={"csrf": csrf, "username": "nobody", "password": "not it at all"})
    assert unknown.status_code == 429 and int(unknown.headers["retry-after"]) > 0  # the address is over the limit
    right = client.post("/review/login", data={"csrf": csrf, "username": "alice", "password": CODER[1]})
    assert right.status_code == 429  # even the right password waits


def test_forms_without_the_csrf_token_are_refused(make_client: MakeClient) -> None:
    client = make_client()
    form = client.get("/review/login")
    assert client.post("/review/login", data={"username": "alice", "password": CODER[1]}).status_code == 403
    assert client.post("/review/login", data={"csrf": "forged", "username": "alice",
                                              "password": CODER[1]}).status_code == 403  # fmt: skip
    csrf = sign_in(client, CODER)
    assert csrf != csrf_of(form.text)
    for action in ("override", "recheck"):
        refused = client.post(f"/review/claims/{HELD}/{action}", data={"reason": "fine", "fingerprint": "f1"})
        assert refused.status_code == 403 and "security token" in refused.text
    assert client.post("/review/logout", data={}).status_code == 403
    assert len(client.app.state.queue.jobs()) == 0  # type: ignore[attr-defined]


def test_a_viewer_reads_but_cannot_override_or_recheck(make_client: MakeClient) -> None:
    client = make_client()
    csrf = sign_in(client, VIEWER)
    page = client.get(f"/review/claims/{HELD}")
    assert page.status_code == 200
    assert "only a coder can override or re-check" in page.text
    assert "/override" not in page.text and "/recheck" not in page.text
    # The FHIR server is down here: the findings as last coded, said so.
    assert "The FHIR server could not be read" in page.text and "prior-auth-required" in page.text
    for action in ("override", "recheck"):
        forged = client.post(f"/review/claims/{HELD}/{action}", data={"csrf": csrf, "reason": "x", "fingerprint": "f1"})
        assert forged.status_code == 403 and "Only a coder" in forged.text
    assert len(client.app.state.queue.jobs()) == 0  # type: ignore[attr-defined]


def test_a_coder_rechecks_through_the_queue(make_client: MakeClient) -> None:
    client = make_client(recheck_wait_seconds=0.3)
    csrf = sign_in(client, CODER)
    answer = client.post(f"/review/claims/{HELD}/recheck", data={"csrf": csrf})
    assert (answer.status_code, answer.headers["location"]) == (303, f"/review/claims/{HELD}")
    [job] = client.app.state.queue.jobs()  # type: ignore[attr-defined]
    assert (job.source, job.reference, job.lane) == ("review", "Procedure/p-1", "Patient/pt-1")
    assert json.loads(job.detail)["user"] == "alice"
    page = client.get(answer.headers["location"])
    assert "The re-check is queued (job 1)" in page.text  # no worker runs here
    # The override needs a reason (and is refused without one before anything is read).
    missing = client.post(f"/review/claims/{HELD}/override", data={"csrf": csrf, "reason": "  ", "fingerprint": "f1"})
    assert missing.status_code == 400 and "Give a reason for the override." in missing.text
    assert client.get("/review/claims/not-a-claim").status_code == 404
    assert client.get("/review/claims/" + READY.replace("2", "9")).status_code == 404


def test_single_sign_on_header_only_from_a_trusted_proxy(make_client: MakeClient) -> None:
    proxies = (ipaddress.ip_network("10.0.0.5/32"),)
    trusted = make_client(peer="10.0.0.5", trusted_proxies=proxies)
    page = trusted.get("/review", headers={"X-Remote-User": "sso-coder"})
    assert page.status_code == 200 and "Signed in as <strong>sso-coder</strong> (coder)" in page.text
    stranger = trusted.get("/review", headers={"X-Remote-User": "someone"})  # not in the file: a viewer
    assert "Signed in as <strong>someone</strong> (viewer)" in stranger.text
    assert trusted.get("/review", headers={"X-Remote-User": "bad name<"}).status_code == 303
    # The same header from any other address is ignored.
    other = make_client(peer="10.0.0.6", trusted_proxies=proxies)
    assert other.get("/review", headers={"X-Remote-User": "sso-coder"}).status_code == 303
    # A user with no password cannot sign in with one.
    csrf = csrf_of(other.get("/review/login").text)
    assert other.post("/review/login", data={"csrf": csrf, "username": "sso-coder", "password": ""}).status_code == 401


def test_the_hook_token_and_a_review_session_do_not_open_each_other(make_client: MakeClient) -> None:
    client = make_client()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/review", headers=bearer).status_code == 303
    assert client.post(f"/review/claims/{HELD}/recheck", headers=bearer, data={}).status_code == 401
    sign_in(client, CODER)
    assert client.post("/notify").status_code == 401
    assert client.post("/check", content=b"{}").status_code == 401
    assert client.get("/review").status_code == 200


def test_a_removed_user_is_signed_out(make_client: MakeClient, users_file: Path, tmp_path: Path) -> None:
    copy = tmp_path / "users.json"
    copy.write_bytes(users_file.read_bytes())
    client = make_client(users_file=copy)
    sign_in(client, VIEWER)
    users = load_users(copy)
    del users[VIEWER[0]]
    save_users(copy, users)
    assert client.get("/review").status_code == 303


def test_review_is_not_served_without_users(tmp_path: Path) -> None:
    settings = Settings(fhir_base=CLOSED, db_path=tmp_path / "q.sqlite")
    app = create_app(settings, handler=lambda job: "ok", run_worker=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/review", follow_redirects=False).status_code == 404
        assert "/review" not in json.dumps(client.get("/openapi.json").json()["paths"])
