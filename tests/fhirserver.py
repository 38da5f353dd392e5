"""Start the local FHIR R4 test server (tools/fhir-test-server) from Python.

Pytest-independent core::

    from fhirserver import start_fhir_test_server

    with start_fhir_test_server() as server:
        requests.get(server.base_url + "/metadata")

and a pytest fixture factory (one server per pytest session)::

    # in a test module or conftest.py
    from fhirserver import make_fhir_server_fixture
    fhir_server = make_fhir_server_fixture()

    def test_something(fhir_server): ...

If the environment variable ``FHIR_BASE_URL`` is set (e.g. ``http://127.0.0.1:8080/fhir``), that
server is used and nothing is started. Otherwise ``tools/fhir-test-server/start PORT`` is spawned on
a free loopback port in its own process group, which is killed on exit. The first start runs
``npm ci`` (pinned Node 22 + Medplum), so allow up to a minute.

When Node.js/npm are missing, :class:`FhirTestServerUnavailable` (a ``RuntimeError``) is raised;
the fixture turns that into a skip, except under ``CI=true`` where it fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVER_DIR = REPO_ROOT / "tools" / "fhir-test-server"
START_SCRIPT = SERVER_DIR / "start"
STARTUP_TIMEOUT_S = 60.0


class FhirTestServerUnavailable(RuntimeError):
    """Node.js/npm (needed to install and run the test server) are not available."""


class FhirTestServer:
    """A running (or external) FHIR test server. ``base_url`` has no trailing slash."""

    def __init__(
        self,
        base_url: str,
        process: subprocess.Popen[bytes] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.process = process
        self.log_path = log_path

    @property
    def external(self) -> bool:
        """True when the server came from ``FHIR_BASE_URL`` and was not started here."""
        return self.process is None

    def log_tail(self, max_chars: int = 4000) -> str:
        """The end of the server's stdout/stderr (request log), for diagnostics."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-max_chars:]

    def __repr__(self) -> str:
        return f"FhirTestServer({self.base_url!r}, external={self.external})"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metadata_ok(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(base_url + "/metadata", timeout=2) as resp:
            resp.read()
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _check_prerequisites() -> None:
    installed = (SERVER_DIR / "node_modules" / ".fhir-test-server-installed").exists()
    if not START_SCRIPT.exists():
        raise FhirTestServerUnavailable(f"{START_SCRIPT} is missing")
    if shutil.which("bash") is None:
        raise FhirTestServerUnavailable("bash is needed to run tools/fhir-test-server/start")
    if not installed and shutil.which("npm") is None:
        raise FhirTestServerUnavailable(
            "the FHIR test server needs Node.js/npm for its one-time install (npm ci in "
            f"{SERVER_DIR}); npm was not found on PATH. Install Node.js 20+ with npm, or set "
            "FHIR_BASE_URL to a running FHIR R4 server."
        )
    if installed and shutil.which("node") is None and not (SERVER_DIR / "node_modules" / ".bin" / "node").exists():
        raise FhirTestServerUnavailable("no Node.js binary found (neither the pinned one nor node on PATH)")


def _stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Terminate the whole process group (start script, npm, node) and reap it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)
    # children left in the group (e.g. an npm ci interrupted mid-way)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def start_fhir_test_server(
    timeout: float = STARTUP_TIMEOUT_S, *, profiles: list[Path] | None = None
) -> Iterator[FhirTestServer]:
    """Start the local FHIR test server (or use ``FHIR_BASE_URL``) and stop it on exit.

    ``profiles`` (files, folders or FHIR package ``.tgz`` files) are loaded through
    ``FHIR_PROFILES``; such a server is always started here, never taken from ``FHIR_BASE_URL``."""
    external = "" if profiles else os.environ.get("FHIR_BASE_URL", "").strip()
    if external:
        yield FhirTestServer(external)
        return

    _check_prerequisites()
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}/fhir"
    log_dir = Path(tempfile.mkdtemp(prefix="fhir-test-server-"))
    log_path = log_dir / "server.log"
    log_file: IO[bytes] = open(log_path, "wb")
    process: subprocess.Popen[bytes] | None = None
    try:
        env = dict(os.environ)
        if profiles:
            env["FHIR_PROFILES"] = ",".join(str(p) for p in profiles)
        process = subprocess.Popen(
            ["bash", str(START_SCRIPT), str(port)],
            env=env,
            cwd=SERVER_DIR,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group, killed as a whole on exit
        )
        server = FhirTestServer(base_url, process, log_path)
        deadline = time.monotonic() + timeout
        while not _metadata_ok(base_url):
            code = process.poll()
            if code is not None:
                tail = server.log_tail()
                if code == 127:
                    raise FhirTestServerUnavailable(f"FHIR test server could not start (exit 127):\n{tail}")
                raise RuntimeError(f"FHIR test server exited with code {code} before it was ready:\n{tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"FHIR test server did not answer {base_url}/metadata within {timeout:.0f} s:\n{server.log_tail()}"
                )
            time.sleep(0.1)
        yield server
    finally:
        if process is not None:
            _stop(process)
        log_file.close()
        shutil.rmtree(log_dir, ignore_errors=True)


def make_fhir_server_fixture(
    name: str = "fhir_server", scope: Any = "session", *, profiles: list[Path] | None = None
) -> Callable[..., Any]:
    """Return a pytest fixture (session-scoped by default) that yields a :class:`FhirTestServer`
    (with ``profiles`` loaded, see :func:`start_fhir_test_server`).

    Missing Node.js/npm skips the dependent tests, except under ``CI=true`` where it fails them.
    """
    import pytest

    @pytest.fixture(scope=scope, name=name)
    def _fhir_server() -> Iterator[FhirTestServer]:
        stack = contextlib.ExitStack()
        try:
            server = stack.enter_context(start_fhir_test_server(profiles=profiles))
        except FhirTestServerUnavailable as exc:
            stack.close()
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"FHIR test server unavailable under CI=true: {exc}")
            pytest.skip(f"FHIR test server unavailable: {exc}")
        with stack:
            yield server

    return _fhir_server


def node_command() -> list[str]:
    """The Node.js command line the start script runs server.mjs with, for other scripts of the
    test server's folder (its packages must be installed: start the server once first): the pinned
    Node 22, else the system node (Node 20/21 with --experimental-websocket, as the script does)."""
    pinned = SERVER_DIR / "node_modules" / ".bin" / "node"
    candidates = [os.environ.get("FHIR_TEST_SERVER_NODE", ""), str(pinned), shutil.which("node") or ""]
    for node in filter(None, candidates):
        try:
            version = subprocess.run(
                [node, "-p", "process.versions.node"], capture_output=True, text=True, timeout=30, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
        if major >= 22:
            return [node]
        if major >= 20:
            return [node, "--experimental-websocket"]
    raise FhirTestServerUnavailable("no usable Node.js found (neither the pinned Node 22 nor a system node >= 20)")
