"""The sandbox payer (`adapter.payer.app`) on a real port, in a thread of the test process, for the
tests that drive `facet-adapter submit` and `sync --payer-url` as subprocesses."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import uvicorn

from adapter.payer.adjudicate import PayerSettings
from adapter.payer.app import create_payer_app


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SandboxPayer:
    def __init__(self, port: int, settings: PayerSettings) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}/fhir"
        self.server = uvicorn.Server(
            uvicorn.Config(create_payer_app(settings), host="127.0.0.1", port=port, log_config=None, access_log=False)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout: float = 15.0) -> SandboxPayer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(urllib.error.URLError, OSError):
                with urllib.request.urlopen(self.base_url + "/metadata", timeout=1) as answer:
                    if answer.status == 200:
                        return self
            time.sleep(0.05)
        raise RuntimeError(f"the sandbox payer did not start on port {self.port}")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextlib.contextmanager
def sandbox_payer(port: int | None = None, **settings: object) -> Iterator[SandboxPayer]:
    payer = SandboxPayer(port or free_port(), PayerSettings(**settings)).start()  # type: ignore[arg-type]
    try:
        yield payer
    finally:
        payer.stop()
