"""The sync workers in a process of their own (`serve` on Linux): `WorkerProcess`.

Why: one Python process runs one thread at a time. With the workers in the process that answers
`/notify`, each notification's answer waited for the interpreter lock behind four workers
coding and parsing (every SQLite statement and socket call hands the lock over and back): at 200
notifications a second its p99 was 55-230 ms. Apart, the answering process holds the lock only
for the answers, and the workers no longer wait for it behind them either.

`serve` builds everything in one process; when the app starts (before it listens, while the
process has one thread), `WorkerProcess.start` forks. The child runs the worker pool and the
Subscription monitor; the parent answers HTTP, commits notifications to the queue and serves
`/healthz`. Both hold the queue's lock (the same open file), so no second `serve` can start while
either lives. They talk over a socket pair:

- parent → child: `wake N` (N new jobs), `stop`;
- child → parent, every quarter second: the pool's status (alive, when its slowest loop last came
  round, jobs done) and the Subscription problems its jobs recorded, for `/healthz`.

A closed socket means the other side is gone. The child then exits at once (a job in hand stays
`working` and is reclaimed at the next start, as after kill -9); the parent ends as the child did:
killed by a signal, it kills itself with the same signal (kill -9 of the workers is kill -9 of the
service); exited, it stops, so that a supervisor restarts the whole service.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

from ..errors import EXIT_INTERNAL
from .queue import JobQueue
from .subscriptions import Monitor, Subscriptions
from .worker import Worker

log = logging.getLogger(__name__)

STATUS_EVERY_SECONDS = 0.25


def available() -> bool:
    """Forking is how the process is split; only where it is safe for a Python process (Linux)."""
    return hasattr(os, "fork") and os.uname().sysname == "Linux"


class WorkerProcess:
    """What the app asks of its `Worker` (`wake`, `start`, `stop`, `alive`, `stalled` …), with the
    worker pool and the monitor running in a child process."""

    def __init__(self, worker: Worker, monitor: Monitor, subscriptions: Subscriptions) -> None:
        self.worker = worker
        self.monitor = monitor
        self.subscriptions = subscriptions
        self.threads = worker.threads
        self.stall_seconds = worker.stall_seconds
        self.pid: int | None = None
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._status: dict[str, Any] = {}
        self._stopping = False
        self._reported = threading.Event()
        self._exited = threading.Event()
        self._inline = False  # the pool runs here after all (see `start`)

    # ------------------------------------------------------------------ what the app reads

    @property
    def alive(self) -> bool:
        if self._inline:
            return self.worker.alive
        return self.pid is not None and not self._exited.is_set() and bool(self._status.get("alive"))

    @property
    def processed(self) -> int:
        return self.worker.processed if self._inline else int(self._status.get("processed") or 0)

    @property
    def last_loop_at(self) -> float | None:
        if self._inline:
            return self.worker.last_loop_at
        value = self._status.get("last_loop_at")
        return float(value) if value is not None else None

    def since_last_loop(self, now: float | None = None) -> float | None:
        if self.last_loop_at is None:
            return None
        return max(0.0, (time.monotonic() if now is None else now) - self.last_loop_at)

    def stalled(self, now: float | None = None) -> bool:
        waited = self.since_last_loop(now)
        return waited is not None and waited > self.stall_seconds

    def wake(self, jobs: int = 1) -> None:
        if self._inline:
            self.worker.wake(jobs)
        else:
            self._send(f"wake {max(1, jobs)}")

    # ------------------------------------------------------------------ the parent's side

    def start(self) -> None:
        """Fork, and return once the child's pool runs. Only while the process has one thread: a
        fork copies the calling thread, and a lock another thread held would stay locked in the
        child. With other threads about, the pool runs in this process (as without fork)."""
        if threading.active_count() != 1:
            log.warning("other threads are running; the sync workers run in this process")
            self._inline = True
            self.worker.start()
            self.monitor.start()
            return
        queue = self.worker.queue
        queue.close_connection()  # an SQLite connection must not be carried across a fork
        parent_end, child_end = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            code = EXIT_INTERNAL
            try:
                parent_end.close()
                code = _run_child(self.worker, self.monitor, self.subscriptions, queue, child_end)
            except BaseException as exc:
                log.error("the sync workers' process failed (%s)", type(exc).__name__)
            finally:
                os._exit(code)
        child_end.close()
        self.pid, self._sock = pid, parent_end
        listener = threading.Thread(target=self._listen, args=(parent_end, pid), name="facet-adapter-workers-status")
        listener.daemon = True
        listener.start()
        if not self._reported.wait(60.0):
            log.warning("the sync workers' process has not reported yet")
        log.info("sync workers started in process %d", pid)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the child to stop after the jobs in hand (up to `timeout`), then make sure it is gone."""
        self._stopping = True
        if self._inline:
            self.monitor.stop()
            self.worker.stop(timeout)
            return
        if self.pid is None:
            return
        self._send("stop")
        if not self._exited.wait(timeout + 5.0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._exited.wait(5.0)
        if self._sock is not None:
            self._sock.close()

    def _send(self, line: str) -> None:
        if self._sock is None:
            return
        with self._send_lock, contextlib.suppress(OSError):
            self._sock.sendall(line.encode() + b"\n")

    def _listen(self, sock: socket.socket, pid: int) -> None:
        with contextlib.suppress(OSError), sock.makefile("rb") as lines:
            for line in lines:
                with contextlib.suppress(ValueError):
                    self._status = json.loads(line)
                    # The monitor's jobs record what they found; /healthz shows them here.
                    self.subscriptions.problems[:] = self._status.get("problems") or []
                    self._reported.set()
        _, status = os.waitpid(pid, 0)
        self._reported.set()
        self._exited.set()
        if self._stopping:
            return
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            log.error("the sync workers' process was killed (signal %d); the service ends the same way", number)
            os.kill(os.getpid(), number)
        else:
            code = os.WEXITSTATUS(status)
            (log.error if code else log.info)("the sync workers' process exited (%d); the service stops", code)
            os.kill(os.getpid(), signal.SIGTERM)


# ---------------------------------------------------------------------- the child's side


def _run_child(
    worker: Worker, monitor: Monitor, subscriptions: Subscriptions, queue: JobQueue, sock: socket.socket
) -> int:
    signal.set_wakeup_fd(-1)  # the parent's event loop's; not this process's business
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())

    def listen() -> None:
        with contextlib.suppress(OSError), sock.makefile("rb") as lines:
            for line in lines:
                word, _, count = line.decode().partition(" ")
                if word == "wake":
                    worker.wake(int(count or 1))
                elif word.strip() == "stop":
                    stop.set()
                    return
        os._exit(EXIT_INTERNAL)  # the parent is gone: stop now, as it did

    worker.start()
    monitor.start()
    threading.Thread(target=listen, name="facet-adapter-parent", daemon=True).start()
    _report(sock, worker, subscriptions)
    while not stop.wait(STATUS_EVERY_SECONDS):
        _report(sock, worker, subscriptions)
    monitor.stop()
    worker.stop()
    _report(sock, worker, subscriptions)
    queue.close_connection()
    return 0


def _report(sock: socket.socket, worker: Worker, subscriptions: Subscriptions) -> None:
    status = {
        "alive": worker.alive,
        "last_loop_at": worker.last_loop_at,
        "processed": worker.processed,
        "problems": list(subscriptions.problems),
    }
    with contextlib.suppress(OSError):
        sock.sendall(json.dumps(status).encode() + b"\n")
