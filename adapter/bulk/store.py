"""The shared reference store: resources that name no patient (and every Patient), kept on disk
and found by `Type/id`, so a partition can fetch what its resources reference without the export
being held in memory.

The local engine keeps them in an SQLite file in the run's work folder (`SqliteStore`); the Spark
engine broadcasts them (`MemoryStore`, built from the same records). Either answers the
`SharedLookup` protocol the per-patient function reads.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SharedRecord:
    number: int  # the record's number in the store: how "used" shared lines are counted
    file: int
    line: int
    raw: bytes
    partitioned: bool = False  # a Patient: its line is counted with its own partition


class SharedLookup(Protocol):
    def get(self, key: str) -> SharedRecord | None:
        """The last record stored under `Type/id` (a later line of the export wins, as in an index)."""
        ...

    def about(self, key: str) -> list[SharedRecord]:
        """The shared records that point at `key` through a reverse-found element."""
        ...


_KEPT = 4096  # records a reading store keeps in memory


class SqliteStore:
    """Written once by the routing pass, then read by every worker (each opens it read-only)."""

    def __init__(self, path: Path, *, write: bool = False) -> None:
        self.path = path
        if write:
            self.db = sqlite3.connect(path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=OFF")
            self.db.execute("PRAGMA synchronous=OFF")
            self.db.execute(
                "CREATE TABLE res (n INTEGER PRIMARY KEY, key TEXT, file INTEGER, line INTEGER, raw BLOB, part INTEGER)"
            )
            self.db.execute("CREATE TABLE about (target TEXT, n INTEGER)")
            self.db.execute("BEGIN")
        else:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
            self.db.execute("PRAGMA query_only=ON")
        self.count = 0
        self.partitioned = 0
        self._targets: frozenset[str] | None = None
        # A worker looks up the same shared records (the clinic, its practitioners, the payers)
        # for patient after patient.
        self._got: dict[str, SharedRecord | None] = {}

    def add(
        self, key: str | None, file: int, line: int, raw: bytes, about: Iterable[str] = (), *, partitioned: bool = False
    ) -> None:
        self.count += 1
        self.partitioned += partitioned
        self.db.execute(
            "INSERT INTO res (n, key, file, line, raw, part) VALUES (?, ?, ?, ?, ?, ?)",
            (self.count, key, file, line, raw, int(partitioned)),
        )
        for target in about:
            self.db.execute("INSERT INTO about (target, n) VALUES (?, ?)", (target, self.count))

    def finish(self) -> None:
        """Index and close the writing connection."""
        self.db.execute("COMMIT")
        self.db.execute("CREATE INDEX res_key ON res (key)")
        self.db.execute("CREATE INDEX about_target ON about (target)")
        self.db.close()

    def close(self) -> None:
        self.db.close()

    def get(self, key: str) -> SharedRecord | None:
        if key in self._got:
            return self._got[key]
        row = self.db.execute(
            "SELECT n, file, line, raw, part FROM res WHERE key = ? ORDER BY n DESC LIMIT 1", (key,)
        ).fetchone()
        found = SharedRecord(row[0], row[1], row[2], bytes(row[3]), bool(row[4])) if row is not None else None
        if len(self._got) >= _KEPT:
            self._got.clear()
        self._got[key] = found
        return found

    def about(self, key: str) -> list[SharedRecord]:
        if self._targets is None:
            # Few resources are found this way; knowing their targets spares a query per resource.
            self._targets = frozenset(row[0] for row in self.db.execute("SELECT DISTINCT target FROM about"))
        if key not in self._targets:
            return []
        rows = self.db.execute(
            "SELECT res.n, res.file, res.line, res.raw, res.part FROM about JOIN res ON res.n = about.n "
            "WHERE about.target = ? ORDER BY res.n",
            (key,),
        ).fetchall()
        return [SharedRecord(n, file, line, bytes(raw), bool(part)) for n, file, line, raw, part in rows]


class MemoryStore:
    """The same lookups over records held in memory (the Spark engine's broadcast value)."""

    def __init__(self, records: Iterable[tuple[str | None, int, int, bytes, tuple[str, ...], bool]]) -> None:
        """`records` in input order: (key, file, line, raw, about, partitioned)."""
        self.by_key: dict[str, SharedRecord] = {}
        self.by_target: dict[str, list[SharedRecord]] = {}
        for number, (key, file, line, raw, about, partitioned) in enumerate(records, start=1):
            record = SharedRecord(number, file, line, raw, partitioned)
            if key is not None:
                self.by_key[key] = record
            for target in about:
                self.by_target.setdefault(target, []).append(record)

    def get(self, key: str) -> SharedRecord | None:
        return self.by_key.get(key)

    def about(self, key: str) -> list[SharedRecord]:
        return self.by_target.get(key, [])
