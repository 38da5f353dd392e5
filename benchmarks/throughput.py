"""Throughput of `facet-adapter bulk` against the JSON floor, peak memory, and cold start.

    .venv/bin/python benchmarks/throughput.py --sessions 20000 [--jobs N] [--engine local|spark]

Builds a deterministic synthetic population (benchmarks/population.py) in a temporary folder, runs
`facet-adapter bulk` over it in a child process, and measures in the same run:

- the floor: orjson-load every input line and orjson-dump one claim-sized dict per session, in one
  process (what any tool that reads the export and writes a claim a session must do);
- the adapter: wall time of the `bulk` command, and the peak of the summed resident memory of its
  process tree (sampled every 20 ms from /proc);
- cold start: median wall time of `facet-adapter claim` on one example, and of `python -c pass`.

Its last line is one JSON object: sessions, sessions_per_s, floor_sessions_per_s, ratio (floor /
adapter), peak_rss_mb, cold_start_s, python_start_s. See benchmarks/README.md for the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from population import write_population  # noqa: E402


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


BIN = Path(sys.executable).parent
EXAMPLE = REPO / "examples" / "medicare-lumbar-bilateral" / "input.json"
# A Claim of the size the adapter writes for a two-level session (without the Bundle's copies).
CLAIM = json.loads((REPO / "examples" / "medicare-lumbar-bilateral" / "expected-bundle.json").read_text())["entry"][0][
    "resource"
]


def floor(folder: Path, sessions: int) -> float:
    started = time.perf_counter()
    for path in sorted(folder.glob("*.ndjson")):
        with path.open("rb") as handle:
            for line in handle:
                orjson.loads(line)
    for _ in range(sessions):
        orjson.dumps(CLAIM)
    return time.perf_counter() - started


def _tree_rss(root: int) -> int:
    """Summed resident memory (bytes) of `root` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        total += rss.get(pid, 0)
        pending.extend(children.get(pid, []))
    return total


def run_bulk(folder: Path, outdir: Path, jobs: int | None, engine: str) -> tuple[float, int, int]:
    command = [str(BIN / "facet-adapter"), "bulk", str(folder), "-o", str(outdir), "--engine", engine]
    if jobs:
        command += ["--jobs", str(jobs)]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(process.pid))
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    _, stderr = process.communicate()
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # CPU seconds are less disturbed than wall time when other work shares the machine.
    say(f"bulk CPU: {cpu:.2f} s (user + system, all its processes)")
    done.set()
    sampler.join()
    if process.returncode not in (0, 1):
        sys.stderr.write(stderr.decode(errors="replace"))
        raise SystemExit(f"bulk failed with exit status {process.returncode}")
    return elapsed, peak, process.returncode


def median_wall(command: list[str], runs: int = 7) -> float:
    """Median wall time of `runs` new processes, after one that is not counted: an installed adapter
    has its bytecode compiled and its validated tables kept (adapter.tablecache), so the first run
    writes them; PYTHONDONTWRITEBYTECODE is dropped for the same reason."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    times = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)  # noqa: S603
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--jobs", type=int, default=None, help="bulk --jobs (default: bulk's own default)")
    parser.add_argument("--engine", choices=["local", "spark"], default="local")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--keep", type=Path, help="keep the population and output in this folder")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="facet-bench-") as scratch:
        base = args.keep or Path(scratch)
        folder, outdir = base / "population", base / "out"
        started = time.perf_counter()
        sessions = write_population(folder, args.sessions, args.seed)
        lines = sum(1 for path in folder.glob("*.ndjson") for _ in path.open("rb"))
        size = sum(path.stat().st_size for path in folder.glob("*.ndjson"))
        took = time.perf_counter() - started
        say(f"population: {sessions} sessions, {lines} lines, {size / 1e6:.1f} MB in {took:.1f} s")
        floor_s = floor(folder, sessions)
        say(f"floor: {floor_s:.2f} s")
        bulk_s, peak, status = run_bulk(folder, outdir, args.jobs, args.engine)
        written = sum(1 for _ in (outdir / "claims.ndjson").open("rb"))
        say(f"bulk: {bulk_s:.2f} s, exit {status}, {written} claims, peak RSS {peak / 2**20:.0f} MiB")
        cold = median_wall([str(BIN / "facet-adapter"), "claim", str(EXAMPLE), "--payer", "medicare"])
        python_start = median_wall([sys.executable, "-c", "pass"])
        say(f"cold start: claim {cold:.3f} s, python {python_start:.3f} s; load {os.getloadavg()[0]:.2f}")
    result = {
        "sessions": sessions,
        "sessions_per_s": round(sessions / bulk_s, 1),
        "floor_sessions_per_s": round(sessions / floor_s, 1),
        "ratio": round(bulk_s / floor_s, 2),
        "peak_rss_mb": round(peak / 2**20, 1),
        "cold_start_s": round(cold, 3),
        "python_start_s": round(python_start, 3),
    }
    say(json.dumps(result))


if __name__ == "__main__":
    main()
