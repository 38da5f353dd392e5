"""The Apache Spark engine of `bulk --engine spark` (docs/bulk.md, on a cluster): the same job as
the local engine, spread over a Spark cluster through PySpark (`pip install 'facet-adapter[spark]'`).

The steps are the local engine's, as Spark operations over the same pure functions:
every line is routed (`routing.route`); the shared reference lines (and the Patients another
patient's resources point at) are collected and broadcast as a `MemoryStore`; the patients' lines
are grouped by patient and each group goes through `patient.code_patient`; the outputs are sorted
by the same keys and written by the driver, so claims.ndjson holds the same lines as the local
engine's on the same input.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import orjson

from ..errors import UsageError
from . import outputs
from .inputs import discover
from .outputs import Tally
from .patient import BLANK, Settings, code_patient, patient_references
from .routing import route
from .runner import BulkJob, close_accounts, finish_outputs, prepare_outdir
from .store import MemoryStore

# (kind, file, line, raw, type, key, patient, shared, about, reason): a routed line as plain values
Routed = tuple[str, int, int, bytes, str | None, str | None, str | None, bool, tuple[str, ...], str | None]


def route_line(file: int, item: tuple[str, int]) -> Routed:
    text, index = item
    raw = text.encode()
    if index == 0 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    r = route(raw)
    return (r.kind, file, index + 1, raw, r.type, r.key, r.patient, r.shared, r.about, r.reason)


def code_group(item: tuple[str, Any], store: Any, settings: Settings) -> tuple[list[tuple[str, str, bytes]], Tally]:
    """One patient on an executor: its output records (kind, sort key, line) and its counts."""
    patient, grouped = item
    lines = sorted(grouped)
    out = code_patient(patient, lines, store.value, settings)
    tally = Tally()
    tally.add_patient(out)
    records = [("claims", key, line) for key, line in out.claims]
    records += [("outcomes", key, line) for key, line in out.outcomes]
    records += [("errors", outputs.session_error_key(key), line) for key, line in out.errors]
    return records, tally


def _merged(a: Tally, b: Tally) -> Tally:
    a.merge(b)
    return a


def run_spark(job: BulkJob, master: str | None) -> Tally:
    try:
        from pyspark import StorageLevel
        from pyspark.sql import SparkSession
    except ImportError:
        raise UsageError("--engine spark needs PySpark: pip install 'facet-adapter[spark]'.") from None
    files, passed_over = discover(job.inputs, outdir=job.outdir)
    work = prepare_outdir(job.outdir)
    if master is None or master.startswith("local"):
        # Local executors must run this interpreter, the one with the adapter installed.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("facet-adapter bulk").config("spark.ui.showConsoleProgress", "false")
    if master is not None:
        builder = builder.master(master)
    spark = builder.getOrCreate()
    try:
        context: Any = spark.sparkContext  # PySpark's RDD typing does not follow lambdas through
        context.setLogLevel("ERROR")
        # Few, large partitions for the shuffles: a driver-side write reads every partition of a
        # sorted result in turn.
        partitions = max(2, int(context.defaultParallelism))
        routed = context.union(
            [
                context.textFile(str(file.path.resolve()))
                .zipWithIndex()
                .map(lambda item, n=file.number: route_line(n, item))
                for file in files
            ]
        ).persist(StorageLevel.MEMORY_AND_DISK)
        tally = Tally()
        kinds = routed.map(lambda r: r[0]).countByValue()
        tally.lines_read = sum(kinds.values())
        tally.bad_lines = kinds.get("bad", 0)
        tally.irrelevant[BLANK] += kinds.get("blank", 0)
        # Patients that another patient's resources point at travel with the shared lines.
        wanted = set(
            routed.filter(lambda r: r[0] == "patient")
            .flatMap(lambda r: [(key, r[6]) for key in patient_references(r[3]) if key != r[6]])
            .keys()
            .distinct()
            .collect()
        )
        shared = (
            routed.filter(lambda r: r[0] == "shared" or (r[7] and r[5] in wanted))
            .map(lambda r: ((r[1], r[2]), (r[5], r[1], r[2], r[3], r[8], r[0] == "patient")))
            .sortByKey(numPartitions=partitions)
            .values()
            .collect()
        )
        store = context.broadcast(MemoryStore(shared))
        shared_lines = sum(1 for record in shared if not record[5])
        settings = job.settings
        coded = (
            routed.filter(lambda r: r[0] == "patient")
            .map(lambda r: (r[6], (r[1], r[2], r[3])))
            .groupByKey(numPartitions=partitions)
            .map(lambda item: code_group(item, store, settings))
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
        if not coded.isEmpty():
            tally.merge(coded.map(lambda pair: pair[1]).treeReduce(_merged))
        records = coded.flatMap(lambda pair: pair[0])
        files_shown = [f.shown for f in files]
        bad = routed.filter(lambda r: r[0] == "bad").map(
            lambda r: ("errors", outputs.line_key(r[1], r[2]), _bad_line(files_shown, r))
        )
        parts = work / "parts"
        parts.mkdir()
        for kind in outputs.KINDS:
            chosen = records.filter(lambda record, k=kind: record[0] == k)
            if kind == "errors":
                chosen = chosen.union(bad)
            ordered = chosen.map(lambda record: (record[1], record[2])).sortByKey(numPartitions=partitions)
            outputs.write_lines(parts / f"{kind}-spark.part", _keyed(ordered.toLocalIterator()))
        close_accounts(tally, shared_lines)
        finish_outputs(job.outdir, parts, tally, files, passed_over, job)
        return tally
    finally:
        spark.stop()
        _end_gateway()
        shutil.rmtree(work, ignore_errors=True)


def _end_gateway() -> None:
    """Stop the JVM that PySpark started and its Py4J threads: a caller that goes on running (a
    test session, a service) keeps neither. PySpark keeps the gateway for a later session, which
    a bulk run never starts."""
    from pyspark import SparkContext

    gateway = getattr(SparkContext, "_gateway", None)
    if gateway is None:
        return
    process = getattr(gateway, "proc", None)
    gateway.shutdown()
    if process is not None:
        if process.stdin is not None:
            process.stdin.close()  # the JVM exits when its standard input closes
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    SparkContext._gateway = None
    SparkContext._jvm = None


def _keyed(items: Iterator[tuple[str, bytes]]) -> Iterator[bytes]:
    """Part-file lines (`key<TAB>line`), already sorted by Spark."""
    for key, line in items:
        yield orjson.dumps(key) + b"\t" + line


def _bad_line(files_shown: list[str], r: Routed) -> bytes:
    return orjson.dumps({"kind": "line", "file": files_shown[r[1]], "line": r[2], "reason": r[9]})
