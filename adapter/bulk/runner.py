"""The local engine: route every line once, then code the partitions in `--jobs` worker
processes, one bucket at a time, one patient at a time (docs/bulk.md).

1. Routing pass (this process): every line of every input file is read once and routed
   (`routing.route`): to its patient's bucket file, to the shared store (SQLite), or reported.
2. Coding pass (the workers): each worker takes a bucket, reads it grouped by patient and calls
   the pure per-patient function (`patient.code_patient`) for each; what it writes is sorted.
3. Closing: the sorted parts are merged into the output files; summary.json is written.

The work folder (`OUTDIR/.bulk-work`) is removed at the end.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson

from ..errors import UsageError
from . import outputs
from .inputs import InputFile, discover, read_lines
from .outputs import SortedParts, Tally
from .partition import GZIP_RATIO, BucketWriter, bucket_count, bucket_path, read_bucket
from .patient import BLANK, SHARED_NOT_REFERENCED, Settings, code_patient
from .routing import route
from .store import SqliteStore

log = logging.getLogger(__name__)

WORK = ".bulk-work"


@dataclass(frozen=True, slots=True)
class BulkJob:
    inputs: tuple[str, ...]
    outdir: Path
    settings: Settings
    jobs: int = 1
    progress: bool = False  # a progress bar on standard error
    summary_extra: dict[str, Any] = field(default_factory=dict)


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def prepare_outdir(outdir: Path) -> Path:
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        work = outdir / WORK
        if work.exists():
            shutil.rmtree(work)
        work.mkdir()
    except OSError as exc:
        raise UsageError(f"Cannot write to {outdir} ({exc.strerror}).") from None
    return work


def run_local(job: BulkJob) -> Tally:
    files, passed_over = discover(job.inputs, outdir=job.outdir)
    work = prepare_outdir(job.outdir)
    try:
        tally = Tally()
        store = SqliteStore(work / "shared.sqlite", write=True)
        estimate = sum(f.size * (GZIP_RATIO if f.compressed else 1) for f in files)
        writer = BucketWriter(work / "buckets", bucket_count(estimate))
        parts = work / "parts"
        parts.mkdir()
        started = time.monotonic()
        with _Bar(job.progress, sum(f.size for f in files), "routing", "B") as bar:
            route_all(files, writer, store, tally, parts, bar.advance)
        writer.flush()
        store.finish()
        buckets = writer.buckets()
        log.info(
            "routed %d line(s) to %d bucket(s) in %.1f s", tally.lines_read, len(buckets), time.monotonic() - started
        )
        started = time.monotonic()
        tasks = [(bucket_path(writer.folder, b), parts, f"{b:04d}", store.path, job.settings) for b in buckets]
        with _Bar(job.progress, len(tasks), "coding", "bucket") as bar:
            for result in _map(code_bucket, tasks, job.jobs):
                tally.merge(result)
                bar.advance(1)
        log.info("coded %d session(s) in %.1f s with %d job(s)", tally.sessions, time.monotonic() - started, job.jobs)
        started = time.monotonic()
        close_accounts(tally, store.count - store.partitioned)
        finish_outputs(job.outdir, parts, tally, files, passed_over, job)
        log.info("wrote the output files in %.1f s", time.monotonic() - started)
        return tally
    finally:
        shutil.rmtree(work, ignore_errors=True)


def route_all(
    files: list[InputFile],
    writer: BucketWriter,
    store: SqliteStore,
    tally: Tally,
    parts: Path,
    advance: Callable[[int], None],
) -> None:
    """The routing pass; bad lines go straight to a sorted part file (they come in file order)."""
    with (parts / "errors-0000-lines.part").open("wb") as bad:

        def report(file: InputFile, line: int, reason: str, kind: str = "line") -> None:
            tally.bad_lines += 1
            record = orjson.dumps({"kind": kind, "file": file.shown, "line": line, "reason": reason})
            bad.write(b"%b\t%b\n" % (orjson.dumps(outputs.line_key(file.number, line)), record))

        for file in files:
            number = 0
            try:
                for number, raw in read_lines(file):
                    tally.lines_read += 1
                    if not file.compressed:
                        advance(len(raw) + 1)
                    routed = route(raw)
                    if routed.kind == "patient":
                        writer.add(routed.patient or "", file.number, number, raw)
                        if routed.shared:
                            store.add(routed.key, file.number, number, raw, partitioned=True)
                    elif routed.kind == "shared":
                        store.add(routed.key, file.number, number, raw, routed.about)
                    elif routed.kind == "blank":
                        tally.irrelevant[BLANK] += 1
                    else:
                        report(file, number, routed.reason or "bad line")
            except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
                tally.lines_read += 1
                reason = f"the file cannot be read past line {number} ({type(exc).__name__}: cut short or damaged)"
                report(file, number + 1, reason, "file")
            if file.compressed:
                advance(file.size)


_worker_store: SqliteStore | None = None


def code_bucket(task: tuple[Path, Path, str, Path, Settings]) -> Tally:
    """One bucket, in a worker process: every patient in it, through the per-patient function."""
    global _worker_store
    path, parts_folder, name, store_path, settings = task
    if _worker_store is None or _worker_store.path != store_path:
        _worker_store = SqliteStore(store_path)
    tally = Tally()
    claims: list[tuple[str, bytes]] = []
    results: list[tuple[str, bytes]] = []
    errors: list[tuple[str, bytes]] = []
    for patient, lines in read_bucket(path):
        out = code_patient(patient, lines, _worker_store, settings)
        tally.add_patient(out)
        claims.extend(out.claims)
        results.extend(out.outcomes)
        errors.extend((outputs.session_error_key(key), line) for key, line in out.errors)
    parts = SortedParts(parts_folder, name)
    parts.write("claims", claims)
    parts.write("outcomes", results)
    parts.write("errors", errors)
    return tally


def close_accounts(tally: Tally, shared_lines: int) -> None:
    """Shared lines no session reached are passed over; the rest were used."""
    used = len(tally.shared_used)
    tally.lines_used += used
    tally.irrelevant[SHARED_NOT_REFERENCED] += shared_lines - used
    tally.shared_used = set()


def finish_outputs(
    outdir: Path, parts: Path, tally: Tally, files: list[InputFile], passed_over: list[str], job: BulkJob
) -> None:
    for kind in outputs.KINDS:
        outputs.merge_parts(parts, kind, outdir / f"{kind}.ndjson")
    options = job.settings.options
    extra = {
        "use": options.use,
        "payer": options.payer,
        "since": job.settings.since.isoformat() if job.settings.since else None,
        "created": options.now.isoformat() if options.now else None,
        "files": [f.shown for f in files],
        "files_passed_over": passed_over,
        **job.summary_extra,
    }
    outputs.write_summary(outdir / "summary.json", tally.summary(extra))


def _map(function: Callable[[Any], Tally], tasks: list[Any], jobs: int) -> Iterator[Tally]:
    if jobs <= 1 or len(tasks) <= 1:
        yield from map(function, tasks)
        return
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks))) as pool:
        yield from pool.map(function, tasks)


class _Bar:
    """A tqdm progress bar on standard error when it is a terminal; nothing otherwise."""

    def __init__(self, enabled: bool, total: int, label: str, unit: str) -> None:
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            stream: TextIO = sys.stderr
            self.bar = tqdm(total=total, desc=label, unit=unit, unit_scale=unit == "B", file=stream, leave=False)

    def advance(self, amount: int) -> None:
        if self.bar is not None:
            self.bar.update(amount)

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
