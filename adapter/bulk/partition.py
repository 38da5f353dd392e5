"""Partitioning by patient to temporary files, so that memory does not grow with the export.

Each patient's lines go to one bucket file, chosen by a stable hash of the patient key (crc32:
Python's own `hash` differs between processes). The number of buckets grows with the input so
that a bucket stays around `BUCKET_BYTES`: a worker holds one bucket's lines, and one patient's
resources parsed, at a time, whatever the number of patients.

A bucket record is one line: the patient key as a JSON string, the file number, the line number
and the NDJSON line, separated by tabs (the JSON-encoded key holds no tab or newline).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

import orjson

from .patient import SourceLine

BUCKET_BYTES = 2 << 20
MIN_BUCKETS = 8
MAX_BUCKETS = 1024
GZIP_RATIO = 6  # a rough expansion of NDJSON under gzip, for sizing only
_FLUSH_BYTES = 32 << 10  # per bucket
_FLUSH_ALL_BYTES = 16 << 20  # all buffers together


def bucket_count(input_bytes: int) -> int:
    return max(MIN_BUCKETS, min(MAX_BUCKETS, -(-input_bytes // BUCKET_BYTES)))


def bucket_of(patient: str, count: int) -> int:
    return zlib.crc32(patient.encode()) % count


def bucket_path(folder: Path, number: int) -> Path:
    return folder / f"bucket-{number:04d}.tsv"


class BucketWriter:
    """Appends records to bucket files through small buffers (files are opened only to flush, so
    a thousand buckets need no thousand open files)."""

    def __init__(self, folder: Path, count: int) -> None:
        self.folder = folder
        self.count = count
        self.buffers: list[list[bytes]] = [[] for _ in range(count)]
        self.sizes = [0] * count
        self.total = 0
        self.used: set[int] = set()
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, patient: str, file: int, line: int, raw: bytes) -> None:
        number = bucket_of(patient, self.count)
        record = b"%b\t%d\t%d\t%b\n" % (orjson.dumps(patient), file, line, raw)
        self.buffers[number].append(record)
        self.sizes[number] += len(record)
        self.total += len(record)
        if self.sizes[number] >= _FLUSH_BYTES:
            self._flush(number)
        elif self.total >= _FLUSH_ALL_BYTES:
            self.flush()

    def _flush(self, number: int) -> None:
        if not self.buffers[number]:
            return
        with bucket_path(self.folder, number).open("ab") as handle:
            handle.writelines(self.buffers[number])
        self.used.add(number)
        self.total -= self.sizes[number]
        self.buffers[number] = []
        self.sizes[number] = 0

    def flush(self) -> None:
        for number in range(self.count):
            self._flush(number)

    def buckets(self) -> list[int]:
        """The buckets that received records, after `flush`."""
        return sorted(self.used)


def read_bucket(path: Path) -> Iterator[tuple[str, list[SourceLine]]]:
    """The bucket's patients in key order, each with its lines in input order."""
    grouped: dict[str, list[SourceLine]] = {}
    with path.open("rb") as handle:
        for record in handle:
            key, file, line, raw = record.rstrip(b"\n").split(b"\t", 3)
            grouped.setdefault(orjson.loads(key), []).append((int(file), int(line), raw))
    for patient in sorted(grouped):
        yield patient, sorted(grouped.pop(patient), key=lambda item: (item[0], item[1]))
