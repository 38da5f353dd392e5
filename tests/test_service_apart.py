"""`serve` runs its sync workers in a process of its own on Linux (adapter.service.apart): the two
processes live and die together, and the app falls back to in-process workers where it cannot
fork safely. (The end-to-end tests, kill and restart among them, run `serve` in this mode.)"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import REPO

from adapter.service import apart
from adapter.service.app import create_app
from adapter.service.settings import Settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

linux_only = pytest.mark.skipif(not apart.available(), reason="the workers get a process of their own on Linux only")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def _gone(pid: int) -> bool:
    """Exited (a zombie waiting for init to reap it counts: it holds no file any more)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state == "Z"


def _wait(check: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


@contextlib.contextmanager
def _serve(db: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = _free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "adapter", "serve", "--fhir-base", "http://127.0.0.1:9/fhir"),
            *("--port", str(port), "--db", str(db), "--reconcile-every", "off"),
        ],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        with contextlib.suppress(requests.RequestException):
            return requests.get(url + "/healthz", timeout=1).status_code == 200
        return False

    try:
        assert _wait(healthy, 30), "serve did not become healthy"
        yield process, url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@linux_only
def test_killing_serve_ends_its_workers_so_it_can_start_again(tmp_path: Path) -> None:
    db = tmp_path / "q.sqlite"
    with _serve(db) as (process, url):
        [workers] = _children(process.pid)
        assert requests.get(url + "/healthz", timeout=5).json()["worker"]["alive"] is True
        process.kill()  # kill -9 of serve alone, not of its process group
        process.wait(10)
        assert _wait(lambda: _gone(workers), 2), "the workers' process outlived serve"
    with _serve(db) as (again, _):  # the queue's lock was released with both
        assert again.poll() is None


@linux_only
@pytest.mark.parametrize("sent", [signal.SIGKILL, signal.SIGTERM])
def test_serve_ends_when_its_workers_process_does(tmp_path: Path, sent: signal.Signals) -> None:
    """Killed, the service dies the same way (a supervisor restarts it; the job in hand is
    reclaimed); stopped, it stops."""
    with _serve(tmp_path / "q.sqlite") as (process, _):
        [workers] = _children(process.pid)
        os.kill(workers, sent)
        assert process.wait(15) == -sent


def test_the_pool_runs_in_process_when_other_threads_are_running(tmp_path: Path) -> None:
    """TestClient runs the app in a thread of its own: forking then would copy one thread of many."""
    app = create_app(Settings(fhir_base="http://127.0.0.1:9/fhir", db_path=tmp_path / "q.sqlite"), apart=True)
    with TestClient(app) as client:
        health = client.get("/healthz").json()
        assert health["worker"]["alive"] is True and health["status"] == "ok"
        assert app.state.worker.pid is None
