#!/usr/bin/env python3
"""Benchmark ``adapter.fhir.r4schema.validate`` against ``orjson.loads`` of the same bytes, in one run.

Prints µs per validation for a ~2 KB Procedure and, when ``.cache/r4-examples`` is present
(``tools/fetch-r4-examples``), for a pass over the whole official R4 example corpus, plus schema
load times. Numbers, not assertions: the tests do not time anything.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROCEDURE: dict[str, Any] = {
    "resourceType": "Procedure",
    "id": "facet-rf-ablation-20261015-001",
    "meta": {
        "versionId": "3",
        "lastUpdated": "2026-10-15T14:32:10.123-05:00",
        "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-procedure"],
    },
    "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.4567.1.2", "value": "PRC-2026-0042817"}],
    "status": "completed",
    "category": {
        "coding": [{"system": "http://snomed.info/sct", "code": "387713003", "display": "Surgical procedure"}]
    },
    "code": {
        "coding": [
            {
                "system": "http://www.ama-assn.org/go/cpt",
                "code": "64635",
                "display": "Destruction by neurolytic agent, paravertebral facet joint nerve(s), "
                "with imaging guidance; lumbar or sacral, single facet joint",
            }
        ],
        "text": "Radiofrequency ablation of lumbar facet joint nerves, L4-L5, right",
    },
    "subject": {"reference": "Patient/pat-7f3c2a91", "display": "Example Patient"},
    "encounter": {"reference": "Encounter/enc-20261015-0930"},
    "performedDateTime": "2026-10-15T09:30:00-05:00",
    "recorder": {"reference": "Practitioner/prac-1184", "display": "Dr. Example Recorder"},
    "performer": [
        {
            "function": {"coding": [{"system": "http://snomed.info/sct", "code": "304292004", "display": "Surgeon"}]},
            "actor": {"reference": "Practitioner/prac-1184", "display": "Dr. Example Surgeon"},
            "onBehalfOf": {"reference": "Organization/org-spine-center"},
        }
    ],
    "location": {"reference": "Location/loc-asc-2", "display": "Ambulatory Surgery Center, Room 2"},
    "reasonCode": [
        {
            "coding": [
                {
                    "system": "http://hl7.org/fhir/sid/icd-10-cm",
                    "code": "M47.816",
                    "display": "Spondylosis without myelopathy or radiculopathy, lumbar region",
                }
            ]
        }
    ],
    "bodySite": [
        {
            "coding": [
                {
                    "system": "http://snomed.info/sct",
                    "code": "765006009",
                    "display": "Structure of facet joint of fourth lumbar vertebra",
                }
            ],
            "text": "Right L4 facet joint",
        },
        {
            "coding": [
                {
                    "system": "http://snomed.info/sct",
                    "code": "765007000",
                    "display": "Structure of facet joint of fifth lumbar vertebra",
                }
            ],
            "text": "Right L5 facet joint",
        },
    ],
    "note": [
        {
            "authorReference": {"reference": "Practitioner/prac-1184"},
            "time": "2026-10-15T10:05:00-05:00",
            "text": "Fluoroscopic guidance confirmed needle placement at the medial branch nerves; "
            "80 degrees C lesioning for 90 seconds per level. No complications; patient tolerated well.",
        }
    ],
}


def per_call_us(fn: Callable[[], object], min_time: float = 0.5) -> float:
    """Best-of-5 mean time per call in µs, each round running at least ``min_time / 5`` seconds."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - t0 > min_time / 5:
            break
        n *= 2
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--corpus", type=Path, default=ROOT / ".cache" / "r4-examples" / "package")
    args = ap.parse_args()

    t0 = time.perf_counter()
    from adapter.fhir import r4schema

    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    r4schema.r4_resource_types()
    t_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    first = r4schema.validate(PROCEDURE)
    t_first = time.perf_counter() - t0
    assert not first, first

    raw = orjson.dumps(PROCEDURE)
    loaded = orjson.loads(raw)
    v = per_call_us(lambda: r4schema.validate(loaded))
    o = per_call_us(lambda: orjson.loads(raw))
    print(f"import adapter.fhir.r4schema:             {t_import * 1e3:7.2f} ms")
    print(f"load resource type index:            {t_index * 1e3:7.2f} ms")
    print(f"first Procedure validation (loads):  {t_first * 1e3:7.2f} ms")
    print(f"Procedure ({len(raw)} bytes):")
    print(f"  validate                           {v:7.2f} µs")
    print(f"  orjson.loads                       {o:7.2f} µs")
    print(f"  ratio validate / orjson.loads      {v / o:7.2f}")

    files = sorted(args.corpus.glob("*.json")) if args.corpus.is_dir() else []
    if not files:
        print(f"corpus: {args.corpus} missing; run tools/fetch-r4-examples")
        return 0
    blobs = [p.read_bytes() for p in files]
    docs = [orjson.loads(b) for b in blobs]
    t0 = time.perf_counter()
    for d in docs:
        r4schema.validate(d)
    t_cold = time.perf_counter() - t0

    def run_validate() -> None:
        for d in docs:
            r4schema.validate(d)

    def run_loads() -> None:
        for b in blobs:
            orjson.loads(b)

    cv = per_call_us(run_validate, 3.0)
    co = per_call_us(run_loads, 3.0)
    total = sum(len(b) for b in blobs)
    mb, cold_ms = total / 1e6, t_cold * 1e3
    print(f"corpus ({len(docs)} files, {mb:.1f} MB; first pass with schema loads {cold_ms:.0f} ms):")
    print(f"  validate                           {cv / len(docs):7.2f} µs/file  ({cv / 1e3:.0f} ms/pass)")
    print(f"  orjson.loads                       {co / len(docs):7.2f} µs/file  ({co / 1e3:.0f} ms/pass)")
    print(f"  ratio validate / orjson.loads      {cv / co:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
