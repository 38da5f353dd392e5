"""`facet-adapter serve` with its time measured, for `webhook_load.py --profile DIR`:

    python benchmarks/profiled_serve.py DIR serve ARGS...

Run with the measured checkout on PYTHONPATH (webhook_load.py does). When the service stops:

- `DIR/worker-N.prof`, `DIR/main.prof`: cProfile statistics of each worker thread and of the main
  thread (the event loop that answers notifications), for `python -m pstats`. cProfile slows
  Python code down, so these say where the time goes relative to the rest, not how long it takes;
- `DIR/phases.json` (`--timers`, without the profiler; with the workers in a process of their own,
  theirs in `DIR/phases-workers.json`): wall and CPU time per phase of a sync
  (`phases`: gathering from the server, the write-back's lookups, coding, writing back, retiring,
  recording for /review, the queue's claim and complete, a notification's enqueue; CPU time is
  the thread's own, `time.thread_time`, and wall time beyond it is waiting: for the FHIR server,
  the disk, or the interpreter lock held by another thread); the time the app took per /notify
  answer (`notify_ms`), a notification's enqueue and a group commit (`enqueue_ms`, `commit_ms`);
  how late the event loop woke a task sleeping 5 ms (`loop_lag_ms`); the garbage collections by
  generation (`gc`: count, total ms, longest ms; `gen2_objects`: what each full one walked).

Nothing of the measured code is changed; its functions are wrapped where they are looked up.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_lock = threading.Lock()
_spread = ("enqueue", "commit")  # phases whose every duration is kept (p50, p99, max)
_phases: dict[str, list[float]] = {}  # name -> [calls, wall seconds, cpu seconds]


def _timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            took_wall, took_cpu = time.perf_counter() - wall, time.thread_time() - cpu
            if name in _spread:
                _samples.setdefault(f"{name}_ms", []).append(took_wall * 1000)
            with _lock:
                kept = _phases.setdefault(name, [0, 0.0, 0.0])
                kept[0] += 1
                kept[1] += took_wall
                kept[2] += took_cpu

    return wrapper


def _time_phases() -> None:
    from adapter.review.store import ReviewStore
    from adapter.server import sync
    from adapter.service import handler, queue, worker

    for module, names in (
        (sync, ("gather", "server_index", "process_index", "look_up", "write_back", "retire_others")),
        (queue.JobQueue, ("claim", "complete")),
        (queue.JobQueue, ("enqueue",)),
    ):
        for name in names:
            setattr(module, name, _timed(name, getattr(module, name)))
    ReviewStore.record_sync = _timed("record_sync", ReviewStore.record_sync)  # type: ignore[method-assign]
    queue.JobQueue._commit = _timed("commit", queue.JobQueue._commit)  # type: ignore[method-assign]
    handler.SyncHandler.__call__ = _timed("job", handler.SyncHandler.__call__)  # type: ignore[method-assign]
    worker.Worker.run_once = _timed("run_once", worker.Worker.run_once)  # type: ignore[method-assign]


_samples: dict[str, list[float]] = {"notify_ms": [], "loop_lag_ms": []}
_collections: dict[str, list[float]] = {}  # generation -> [collections, total ms, longest ms]


def _watch_gc() -> None:
    started: list[float] = []

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            if info["generation"] == 2:
                _samples.setdefault("gen2_objects", []).append(float(len(gc.get_objects(generation=2))))
            started[:] = [time.perf_counter()]
        elif started:
            took = (time.perf_counter() - started[0]) * 1000
            kept = _collections.setdefault(str(info["generation"]), [0, 0.0, 0.0])
            kept[0] += 1
            kept[1] += took
            kept[2] = max(kept[2], took)

    gc.callbacks.append(callback)


async def _watch_loop() -> None:
    """How late the event loop wakes a task that sleeps 5 ms: what a notification waits before
    the loop gets to it (the interpreter lock held by the workers, a garbage collection)."""
    while True:
        before = time.perf_counter()
        await asyncio.sleep(0.005)
        _samples["loop_lag_ms"].append((time.perf_counter() - before) * 1000 - 5)


def _time_requests() -> None:
    """The time from the app being called to the last byte of a /notify answer handed to uvicorn
    (what the client sees also holds reading and parsing the request, and the socket)."""
    from adapter.service import app as service_app

    create = service_app.create_app

    def create_timed(*args: Any, **kwargs: Any) -> Any:
        inner = create(*args, **kwargs)
        watching: list[Any] = []

        async def timed(scope: Any, receive: Any, send: Any) -> None:
            if not watching:
                watching.append(asyncio.get_running_loop().create_task(_watch_loop()))
            if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/notify"):
                await inner(scope, receive, send)
                return
            started = time.perf_counter()

            async def sending(message: Any) -> None:
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    _samples["notify_ms"].append((time.perf_counter() - started) * 1000)
                await send(message)

            await inner(scope, receive, sending)

        return timed

    service_app.create_app = create_timed


def _summary() -> dict[str, Any]:
    def spread(values: list[float]) -> dict[str, float]:
        ordered = sorted(values) or [0.0]
        return {
            "n": len(values),
            "p50": round(ordered[len(ordered) // 2], 2),
            "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
            "max": round(ordered[-1], 2),
        }

    return {
        "phases": _phases,
        **{name: spread(values) for name, values in _samples.items()},
        "gc": {gen: [n, round(total, 1), round(longest, 1)] for gen, (n, total, longest) in _collections.items()},
    }


def _time_worker_process(out: Path) -> None:
    """With the workers in a process of their own (adapter.service.apart), theirs are written to
    `phases-workers.json` when that process stops."""
    from adapter.service import apart

    run = apart._run_child

    def timed(*args: Any) -> int:
        try:
            return run(*args)
        finally:
            (out / "phases-workers.json").write_text(json.dumps(_summary(), indent=1))

    apart._run_child = timed


def _profile_threads(out: Path) -> None:
    from adapter.service import worker

    loop = worker.Worker._loop

    def profiled(self: Any, number: int) -> None:
        profile = cProfile.Profile()
        try:
            profile.runcall(loop, self, number)
        finally:
            profile.dump_stats(out / f"worker-{number}.prof")

    worker.Worker._loop = profiled  # type: ignore[method-assign]


def main() -> None:
    out = Path(sys.argv[1])
    timers = sys.argv[2] == "--timers"
    args = sys.argv[3:] if timers else sys.argv[2:]
    out.mkdir(parents=True, exist_ok=True)
    from adapter.cli import main as cli

    sys.argv = ["facet-adapter", *args]
    profile = cProfile.Profile()

    def write() -> None:
        if timers:
            (out / "phases.json").write_text(json.dumps(_summary(), indent=1))
        else:
            profile.disable()
            profile.dump_stats(out / "main.prof")

    def stopped(*_: object) -> None:
        # uvicorn re-raises SIGTERM once it has shut down (the workers have stopped by then).
        write()
        os._exit(0)

    signal.signal(signal.SIGTERM, stopped)
    if timers:
        _time_phases()
        _time_requests()
        _watch_gc()
        _time_worker_process(out)
    else:
        _profile_threads(out)
        profile.enable()
    try:
        cli()
    finally:
        write()


if __name__ == "__main__":
    main()
