"""One set of FHIR-server options for `sync`, `sandbox`, `subscribe` and `serve`: the new names,
the old spellings as hidden aliases, and `serve` building its client as `sync` does (SMART
Backend Services included). No network: the commands are parsed, not run, except where noted."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from conftest import run_cli
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from adapter.errors import UsageError
from adapter.fhir.auth import BearerToken, SmartBackendServices
from adapter.fhir.client import make_client
from adapter.server.commands import sandbox, subscribe, sync
from adapter.server.options import server_options_from
from adapter.service.cli import serve
from adapter.service.handler import SyncHandler
from adapter.service.queue import JobQueue
from adapter.service.settings import Settings

SERVER_PARAMS = {
    "fhir_base",
    "fhir_token",
    "smart_token_url",
    "smart_client_id",
    "smart_key",
    "smart_kid",
    "smart_scope",
    "smart_alg",
    "timeout",
    "retries",
}
BASE = "http://127.0.0.1:9/fhir"
# What each command needs besides the server options to parse.
REQUIRED: dict[str, list[str]] = {
    "sync": [],
    "sandbox": [],
    "subscribe": ["--endpoint", "http://h/hook"],
    "serve": ["--port", "0"],
}
COMMANDS = {"sync": sync, "sandbox": sandbox, "subscribe": subscribe, "serve": serve}
# The spellings of the previous release, and the parameter each one fills now.
OLD_SPELLINGS = [
    ("sync", "--token", "fhir_token"),
    ("sandbox", "--token", "fhir_token"),
    ("subscribe", "--server-token", "fhir_token"),
    ("subscribe", "--token", "hook_token"),
    ("serve", "--token", "hook_token"),
]


@pytest.fixture(autouse=True)
def no_token_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FACET_ADAPTER_FHIR_TOKEN", "FACET_ADAPTER_HOOK_TOKEN", "FACET_ADAPTER_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def parse(name: str, *args: str) -> dict[str, Any]:
    command = COMMANDS[name]
    context = command.make_context(name, ["--fhir-base", BASE, *REQUIRED[name], *args])
    return dict(context.params)


def help_text(name: str) -> str:
    command = COMMANDS[name]
    return command.get_help(click.Context(command, info_name=name))


def _spelled(option: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_server_command_has_the_same_server_options(name: str) -> None:
    params = parse(name)
    assert SERVER_PARAMS <= set(params)
    assert params["fhir_token"] is None and params["timeout"] == 30.0 and params["retries"] == 4
    shown = help_text(name)
    for option in ("--fhir-base", "--fhir-token", "--smart-token-url", "--smart-key", "--timeout", "--retries"):
        assert _spelled(option, shown), (name, option)
    assert parse(name, "--fhir-token", "t-1")["fhir_token"] == "t-1"


@pytest.mark.parametrize("name", ["subscribe", "serve"])
def test_the_hook_token_is_hook_token(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _spelled("--hook-token", help_text(name))
    assert parse(name, "--hook-token", "h-1")["hook_token"] == "h-1"
    monkeypatch.setenv("FACET_ADAPTER_HOOK_TOKEN", "from-env")
    assert parse(name)["hook_token"] == "from-env"


@pytest.mark.parametrize(("name", "old", "target"), OLD_SPELLINGS)
def test_old_spellings_are_hidden_aliases(name: str, old: str, target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not _spelled(old, help_text(name))
    params = parse(name, old, "old-1")
    assert params[target] == "old-1"
    assert not [key for key in params if key.startswith(f"{target}_as_")]  # the alias has no parameter of its own
    # On the command line the old spelling wins over the variable, as the option did before.
    monkeypatch.setenv("FACET_ADAPTER_FHIR_TOKEN", "env-fhir")
    monkeypatch.setenv("FACET_ADAPTER_HOOK_TOKEN", "env-hook")
    assert parse(name, old, "old-2")[target] == "old-2"
    # Both spellings: the later one, as for a repeated option.
    new = "--fhir-token" if target == "fhir_token" else "--hook-token"
    assert parse(name, new, "new-3", old, "old-3")[target] == "old-3"
    assert parse(name, old, "old-4", new, "new-4")[target] == "new-4"


def test_subscribe_keeps_its_two_tokens_apart() -> None:
    params = parse("subscribe", "--token", "hook", "--server-token", "server")
    assert (params["hook_token"], params["fhir_token"]) == ("hook", "server")
    params = parse("subscribe", "--hook-token", "hook", "--fhir-token", "server")
    assert (params["hook_token"], params["fhir_token"]) == ("hook", "server")


def test_an_old_spelling_still_reaches_the_server_from_the_command_line() -> None:
    # Nothing listens on port 9: exit 4 (server unreachable) shows the options were accepted.
    run = run_cli("sync", "--fhir-base", BASE, "--token", "old", "--procedure", "p1", "--retries", "0")
    assert run.code == 4, run.stderr
    assert run.error_outcome()["issue"][0]["code"] == "transient"
    assert BASE in run.error_outcome()["issue"][0]["details"]["text"]


# --------------------------------------------------------------------------- serve builds its client as sync does


class _Started(Exception):
    pass


@pytest.fixture
def serve_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Run `serve` up to where uvicorn would start; returns the Settings it built."""
    import uvicorn

    started: list[Settings] = []

    def fake_run(self: Any, *args: Any, **kwargs: Any) -> None:
        started.append(self.config.app.state.settings)
        raise _Started

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    monkeypatch.setenv("FACET_ADAPTER_LOG", "WARNING")

    def start(*args: str) -> Settings:
        argv = ["--port", "0", "--db", str(tmp_path / "q.sqlite"), "--fhir-base", BASE, *args]
        with pytest.raises(_Started):
            serve.main(argv, prog_name="serve", standalone_mode=False)
        return started[-1]

    return start


@pytest.fixture(scope="module")
def smart_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("smart") / "private.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[JobQueue]:
    yield JobQueue(tmp_path / "handler.sqlite")


def smart_args(key: Path) -> list[str]:
    return [
        "--smart-token-url",
        "https://auth.test/token",
        "--smart-client-id",
        "facet-client",
        "--smart-key",
        str(key),
        "--smart-kid",
        "kid-7",
        "--smart-scope",
        "system/*.read system/Claim.write",
        "--smart-alg",
        "RS384",
        "--timeout",
        "12",
        "--retries",
        "2",
    ]


def test_serve_builds_a_smart_backend_services_client_from_its_options(
    serve_settings: Any, smart_key: Path, queue: JobQueue
) -> None:
    settings = serve_settings(*smart_args(smart_key))
    client = SyncHandler(settings, queue).client()
    auth = client.auth
    assert isinstance(auth, SmartBackendServices)
    assert (auth.token_url, auth.client_id, auth.key_id, auth.scope, auth.algorithm) == (
        "https://auth.test/token",
        "facet-client",
        "kid-7",
        "system/*.read system/Claim.write",
        "RS384",
    )
    assert client.base_url == BASE
    assert (client.transport.timeout, client.transport.retries) == ((5.0, 12.0), 2)

    # The same options given to `sync` make the same client.
    from_sync = make_client(
        server_options_from(**{k: v for k, v in parse("sync", *smart_args(smart_key)).items() if k in SERVER_PARAMS})
    )
    assert isinstance(from_sync.auth, SmartBackendServices)
    assert (from_sync.auth.token_url, from_sync.auth.client_id, from_sync.auth.key_id, from_sync.auth.scope) == (
        auth.token_url,
        auth.client_id,
        auth.key_id,
        auth.scope,
    )
    assert (from_sync.transport.timeout, from_sync.transport.retries) == ((5.0, 12.0), 2)


def test_serve_builds_a_bearer_client_and_keeps_the_hook_token_apart(serve_settings: Any, queue: JobQueue) -> None:
    settings = serve_settings("--fhir-token", "fhir-secret", "--hook-token", "hook-secret")
    assert settings.token == "hook-secret"
    auth = SyncHandler(settings, queue).client().auth
    assert isinstance(auth, BearerToken) and auth.token == "fhir-secret"
    assert "fhir-secret" not in repr(settings)
    without = serve_settings()
    assert SyncHandler(without, queue).client().auth is None


def test_serve_refuses_an_incomplete_smart_set_before_starting(serve_settings: Any, smart_key: Path) -> None:
    with pytest.raises(UsageError) as caught:
        serve_settings("--smart-token-url", "https://auth.test/token", "--smart-key", str(smart_key))
    assert "--smart-client-id" in caught.value.message
    with pytest.raises(UsageError):
        serve_settings(*smart_args(smart_key), "--fhir-token", "also-a-bearer")
