"""`facet-adapter serve` with its time measured, for `webhook_load.py --profile DIR`:

    python benchmarks/profiled_serve.py DIR serve ARGS...

Run with the measured checkout on PYTHONPATH (webhook_load.py does). When the service stops:

- `DIR/worker-N.prof`, `DIR/main.prof`: cProfile statistics of each worker thread and of the main
  thread (the event loop that answers notifications), for `python -m pstats`. cProfile slows
  Python code down, so these say where the time goes relative to the rest, not how long it takes;
- `DIR/phases.json`: wall and CPU time per phase of a sync (measured with the profiler off in
  another run: `--timers`): gathering from the server, coding, writing back, retiring, recording
  for /review, and the queue's claim and complete. CPU time is the thread's own
  (`time.thread_time`); wall time beyond it is waiting: for the FHIR server, the disk, or the
  interpreter lock held by another thread.

Nothing of the measured code is changed; its functions are wrapped where they are looked up.
"""

from __future__ import annotations

import cProfile
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
_phases: dict[str, list[float]] = {}  # name -> [calls, wall seconds, cpu seconds]


def _timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            took_wall, took_cpu = time.perf_counter() - wall, time.thread_time() - cpu
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
        (sync, ("gather", "server_index", "process_index", "write_back", "retire_others")),
        (queue.JobQueue, ("claim", "complete")),
        (queue.JobQueue, ("enqueue",)),
    ):
        for name in names:
            setattr(module, name, _timed(name, getattr(module, name)))
    ReviewStore.record_sync = _timed("record_sync", ReviewStore.record_sync)  # type: ignore[method-assign]
    handler.SyncHandler.__call__ = _timed("job", handler.SyncHandler.__call__)  # type: ignore[method-assign]
    worker.Worker.run_once = _timed("run_once", worker.Worker.run_once)  # type: ignore[method-assign]


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
            (out / "phases.json").write_text(json.dumps(_phases, indent=1))
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
    else:
        _profile_threads(out)
        profile.enable()
    try:
        cli()
    finally:
        write()


if __name__ == "__main__":
    main()
