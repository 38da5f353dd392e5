"""Load benchmark of `facet-adapter serve`: notifications in, Claims out, on this machine.

It starts the local FHIR test server (tools/fhir-test-server) and `serve` on loopback, loads a
population (the medicare-lumbar-bilateral example once per patient, two facet Procedures each),
offers rest-hook notifications (`PUT /notify/Procedure/{id}`, each a new version, so each is one
sync) at a fixed rate for a bounded time, waits for the queue to drain and prints one JSON
object last:

    offered_per_s, accept_p50_ms, accept_p99_ms, e2e_p50_s, e2e_p99_s, syncs_per_s, lost, duplicates

`accept` is the time `/notify` took to answer (the job is on disk then); `e2e` is from sending
the notification to its job being done (the Claim written); `syncs_per_s` is jobs done per
second from the first notification to the last job done; `lost` counts notified Procedures
without an open (active or draft) Claim of the adapter, `duplicates` those with more than one. Also in the object:
the settings and the machine's load average before and after (`uptime`), since the two cores
are shared.

    .venv/bin/python benchmarks/webhook_load.py --rate 200 --seconds 30
    .venv/bin/python benchmarks/webhook_load.py --rate 20 --seconds 60 --distinct   # e2e target
    .venv/bin/python benchmarks/webhook_load.py --rate 20 --soak-minutes 10         # memory, files

`--distinct` offers each second's notifications for different Procedures (the population must
hold rate procedures at least). `--soak-minutes` runs that long and samples the service's
resident memory and open files every 10 s (`soak` in the JSON). All traffic stays on 127.0.0.1;
every loop is bounded by the duration given. Not part of the test suite or CI.

`cpu_s` and `cpu_share` say how much CPU `serve`, the test server and this script's own client
used from the first notification until the queue was empty (share 1.0: one core the whole time;
this machine has two). Where the time goes:

    --phases DIR    wall and CPU time per phase of a sync (gather, coding, write-back, retirement,
                    the /review record, the queue's claim and complete, a notification's enqueue)
    --profile DIR   cProfile statistics of serve's threads and a CPU profile of the test server
                    (node --cpu-prof); cProfile slows serve down, so compare shares, not times

(benchmarks/profiled_serve.py runs `serve` for both.)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from fhirserver import start_fhir_test_server  # noqa: E402

from adapter.fhir.client import FhirClient  # noqa: E402
from adapter.server.loader import as_transaction  # noqa: E402
from adapter.server.retire import billed_procedures, is_ours  # noqa: E402
from adapter.service.queue import JobQueue  # noqa: E402

EXAMPLE = REPO / "examples" / "medicare-lumbar-bilateral" / "input.json"
TOKEN = "bench-" + os.urandom(8).hex()
FACET = ("mbb-l4l5", "mbb-l5s1")
_JOB_RE = re.compile(r"job (\d+) queued")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@contextmanager
def service(
    fhir_base: str, db: Path, workers: int, log_path: Path, repo: Path, measure: list[str] | None = None
) -> Iterator[tuple[str, int]]:
    """`serve` of `repo`; with `measure` (profiled_serve.py's arguments), under that script."""
    port = free_port()
    log = log_path.open("ab")
    env = {**os.environ, "PYTHONPATH": str(repo), "FACET_ADAPTER_LOG": "WARNING"}
    # --workers 0: a version of serve from before the pool (one worker, no sweep option).
    options = ["--workers", str(workers), "--reconcile-every", "off"] if workers else []
    process = subprocess.Popen(  # noqa: S603 (our own command line, no shell)
        [
            sys.executable,
            *([str(Path(__file__).with_name("profiled_serve.py")), *measure] if measure else ["-m", "adapter"]),
            *("serve", "--fhir-base", fhir_base, "--port", str(port)),
            *("--hook-token", TOKEN, "--db", str(db), "--payer", "medicare"),
            *options,
        ],
        cwd=repo,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise SystemExit(f"serve exited with {process.returncode}; see {log_path}")
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"serve did not start; see {log_path}")
            time.sleep(0.1)
        yield url, process.pid
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        log.close()


def load_population(client: FhirClient, patients: int, prefix: str) -> list[dict[str, Any]]:
    record = EXAMPLE.read_bytes()
    procedures: list[dict[str, Any]] = []
    for n in range(patients):
        tag = f"{prefix}{n}-"
        client.transaction(as_transaction(record, id_prefix=tag))
        procedures += [client.read("Procedure", f"{tag}{name}") for name in FACET]
    return procedures


def process_tree(pid: int) -> list[int]:
    """The process and its children (serve runs its sync workers in a child process on Linux)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += process_tree(int(child))
    return found


def process_sample(pid: int) -> dict[str, float]:
    """Resident memory and open files of the service (its processes summed)."""
    rss_kb = open_files = 0
    for member in process_tree(pid):
        status = Path(f"/proc/{member}/status").read_text()
        rss_kb += int(re.search(r"VmRSS:\s+(\d+)", status)[1])  # type: ignore[index]
        open_files += len(os.listdir(f"/proc/{member}/fd"))
    return {"rss_mb": round(rss_kb / 1024, 1), "open_files": open_files}


def cpu_seconds(pids: dict[str, int | None]) -> dict[str, float]:
    """CPU time (user + system) each process and its children have used so far (a None pid: this
    process; a child that ended before is not counted)."""
    used: dict[str, float] = {}
    for name, pid in pids.items():
        if pid is None:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            used[name] = usage.ru_utime + usage.ru_stime
        else:
            used[name] = 0.0
            for member in process_tree(pid):
                fields = Path(f"/proc/{member}/stat").read_text().rpartition(")")[2].split()
                used[name] += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def offer(
    url: str,
    procedures: list[dict[str, Any]],
    rate: float,
    seconds: float,
    distinct: bool,
    senders: int,
    on_tick: Any = None,
) -> list[tuple[float, float, int | None]]:
    """Open loop: notification k is due at start + k/rate, whatever the answers. Returns (sent at,
    accept seconds, job id) per notification."""
    total = int(rate * seconds)
    per_second = max(1, int(rate))
    if distinct and len(procedures) < per_second:
        raise SystemExit(f"--distinct at {rate}/s needs at least {per_second} procedures in the population")
    cycle = itertools.cycle(range(len(procedures)))
    local = threading.local()
    results: list[tuple[float, float, int | None]] = []
    lock = threading.Lock()
    started = time.monotonic() + 0.5
    stamp = f"{time.time_ns()}"

    def send(k: int, index: int) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        resource = dict(procedures[index])
        resource["meta"] = {**resource.get("meta", {}), "versionId": f"bench-{stamp}-{k}"}
        due = started + k / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        sent_wall = time.time()
        t0 = time.monotonic()
        answer = session.put(
            f"{url}/notify/Procedure/{resource['id']}",
            data=json.dumps(resource),
            headers={"Content-Type": "application/fhir+json", "Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        took = time.monotonic() - t0
        found = _JOB_RE.search(answer.text) if answer.status_code == 200 else None
        with lock:
            results.append((sent_wall, took, int(found[1]) if found else None))

    with ThreadPoolExecutor(max_workers=senders) as pool:
        futures = []
        for k in range(total):
            futures.append(pool.submit(send, k, next(cycle)))
            # Keep the backlog of scheduled sends short so memory stays flat on a soak.
            while len(futures) > senders * 4:
                futures.pop(0).result()
            if on_tick is not None and k % per_second == 0:
                on_tick(k // per_second)
        for future in futures:
            future.result()
    return results


def drain(db: Path, timeout: float) -> None:
    queue = JobQueue(db, create=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = queue.counts()
        if counts["pending"] + counts["working"] + counts["retry"] == 0:
            return
        time.sleep(0.5)
    raise SystemExit(f"the queue did not drain within {timeout:.0f} s: {queue.counts()}")


def claims_check(client: FhirClient, procedures: list[dict[str, Any]]) -> tuple[int, int]:
    patients = sorted({str(p["subject"]["reference"]) for p in procedures})
    open_claims: dict[str, int] = {f"Procedure/{p['id']}": 0 for p in procedures}
    for patient in patients:
        # Open: active, or draft (held for review); cancelled and entered-in-error are not.
        for claim in client.search("Claim", [("patient", patient), ("status", "active,draft"), ("_count", "100")]):
            if not is_ours(claim):
                continue
            for reference in billed_procedures(claim):
                key = client.relative(reference)
                if key in open_claims:
                    open_claims[key] += 1
    lost = sum(1 for n in open_claims.values() if n == 0)
    duplicates = sum(1 for n in open_claims.values() if n > 1)
    return lost, duplicates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="notifications offered per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to offer them")
    parser.add_argument("--patients", type=int, default=100, help="population size (two facet Procedures each)")
    parser.add_argument("--workers", type=int, default=4, help="serve --workers (0: a serve without the option)")
    parser.add_argument(
        "--serve-repo", type=Path, default=REPO, help="the checkout whose `serve` is measured (before/after)"
    )
    parser.add_argument("--senders", type=int, default=16, help="client threads sending notifications")
    parser.add_argument("--distinct", action="store_true", help="each second's notifications for different Procedures")
    parser.add_argument("--soak-minutes", type=float, default=None, help="soak: offer for this long, sample memory")
    parser.add_argument("--drain-timeout", type=float, default=600.0)
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="write cProfile statistics of serve's threads and a CPU profile of the test server here",
    )
    parser.add_argument(
        "--phases", type=Path, default=None, help="write the wall and CPU time of each phase of a sync here"
    )
    args = parser.parse_args()
    measure: list[str] | None = None
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        # Node writes the profile when the server exits (it exits on SIGTERM).
        os.environ["NODE_OPTIONS"] = f"--cpu-prof --cpu-prof-dir={args.profile.resolve()}"
        measure = [str(args.profile.resolve())]
    elif args.phases:
        measure = [str(args.phases.resolve()), "--timers"]
    seconds = args.soak_minutes * 60 if args.soak_minutes else args.seconds
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="webhook-load-") as folder, start_fhir_test_server() as fhir:
        db = Path(folder) / "queue.sqlite"
        client = FhirClient(fhir.base_url)
        prefix = f"w{os.urandom(3).hex()}-"
        procedures = load_population(client, args.patients, prefix)
        sys.stderr.write(f"loaded {args.patients} patients ({len(procedures)} facet procedures)\n")
        log_path = Path(folder) / "serve.log"
        with service(fhir.base_url, db, args.workers, log_path, args.serve_repo, measure) as (url, pid):
            samples: list[dict[str, float]] = []

            def sample(second: int) -> None:
                if args.soak_minutes and second % 10 == 0:
                    samples.append({"t": second, **process_sample(pid)})

            sys.stderr.write(f"offering {args.rate:g}/s for {seconds:g} s\n")
            pids: dict[str, int | None] = {"serve": pid, "client": None}
            if fhir.process is not None:  # not with FHIR_BASE_URL
                pids["fhir_server"] = fhir.process.pid
            cpu_before = cpu_seconds(pids)
            first_sent = time.time()
            sent = offer(url, procedures, args.rate, seconds, args.distinct, args.senders, sample)
            drain(db, args.drain_timeout)
            drained = time.time()
            cpu_after = cpu_seconds(pids)
            if args.soak_minutes:
                samples.append({"t": int(seconds), **process_sample(pid)})
        jobs = {job.id: job for job in JobQueue(db, create=False).jobs()}
        lost, duplicates = claims_check(client, procedures)
    accept_ms = [took * 1000 for _, took, _ in sent]
    e2e = [
        jobs[job_id].updated_at - sent_at
        for sent_at, _, job_id in sent
        if job_id is not None and job_id in jobs and jobs[job_id].state == "done"
    ]
    done = [job for job in jobs.values() if job.state == "done"]
    last_done = max((job.updated_at for job in done), default=first_sent)
    result: dict[str, Any] = {
        "offered_per_s": round(len(sent) / seconds, 1),
        "accept_p50_ms": round(percentile(accept_ms, 50) or 0, 1),
        "accept_p99_ms": round(percentile(accept_ms, 99) or 0, 1),
        "e2e_p50_s": round(percentile(e2e, 50) or 0, 2),
        "e2e_p99_s": round(percentile(e2e, 99) or 0, 2),
        "syncs_per_s": round(len(done) / max(0.001, last_done - first_sent), 1),
        "lost": lost,
        "duplicates": duplicates,
        "notifications": len(sent),
        "refused": sum(1 for _, _, job_id in sent if job_id is None),
        "jobs_done": len(done),
        "jobs_failed": sum(1 for job in jobs.values() if job.state != "done"),
        "workers": args.workers,
        "serve_repo": str(args.serve_repo),
        "patients": args.patients,
        "distinct": args.distinct,
        "seconds": seconds,
        "load_before": load_before,
        "load_after": load_average(),
        "accept_mean_ms": round(statistics.fmean(accept_ms), 1) if accept_ms else None,
        # From the first notification until the queue was empty: CPU seconds of each process, and
        # their share of that wall time (1.0 = one core busy the whole time).
        "cpu_s": {name: round(cpu_after[name] - cpu_before[name], 1) for name in cpu_before},
        "cpu_share": {
            name: round((cpu_after[name] - cpu_before[name]) / max(0.001, drained - first_sent), 2)
            for name in cpu_before
        },
    }
    if args.soak_minutes:
        result["soak"] = {
            "samples": samples,
            "rss_mb_first": samples[0]["rss_mb"] if samples else None,
            "rss_mb_last": samples[-1]["rss_mb"] if samples else None,
            "open_files_first": samples[0]["open_files"] if samples else None,
            "open_files_last": samples[-1]["open_files"] if samples else None,
        }
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
