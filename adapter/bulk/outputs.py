"""The output files of a bulk run (docs/bulk.md, output): claims.ndjson, outcomes.ndjson,
errors.ndjson and summary.json, and the counts behind the summary.

Every producer (a bucket of the local engine, a partition of the Spark engine, the routing pass)
writes its lines with their sort keys, sorted; the final files are a merge of those, so they are
the same bytes whatever the number of jobs, and claims.ndjson is ordered by patient, then date.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .patient import PatientOutput

KINDS = ("claims", "outcomes", "errors")


def line_key(file: int, line: int) -> str:
    """Sort key of an error about one input line: before the session errors, by file then line."""
    return f"0\x00{file:08d}\x00{line:012d}"


def session_error_key(key: str) -> str:
    return f"1\x00{key}"


@dataclass(slots=True)
class Tally:
    """The counts of summary.json, added up over patients, buckets and the routing pass."""

    patients: int = 0  # patients with at least one facet session
    sessions: int = 0
    ready: int = 0
    held: int = 0
    failed: int = 0
    before_since: int = 0
    by_rule: Counter[str] = field(default_factory=Counter)
    by_pack: Counter[str] = field(default_factory=Counter)
    lines_read: int = 0
    lines_used: int = 0
    irrelevant: Counter[str] = field(default_factory=Counter)
    bad_lines: int = 0
    shared_used: set[int] = field(default_factory=set)

    def add_patient(self, out: PatientOutput) -> None:
        if out.sessions or out.before_since or out.used_lines:
            self.patients += 1
        self.sessions += out.sessions
        self.ready += out.ready
        self.held += out.held
        self.failed += out.failed
        self.before_since += out.before_since
        self.by_rule.update(out.by_rule)
        self.by_pack.update(out.by_pack)
        self.lines_used += out.used_lines
        self.irrelevant.update(out.irrelevant)
        self.shared_used.update(out.shared_used)

    def merge(self, other: Tally) -> None:
        for name in ("patients", "sessions", "ready", "held", "failed", "before_since"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("lines_read", "lines_used", "bad_lines"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.by_rule.update(other.by_rule)
        self.by_pack.update(other.by_pack)
        self.irrelevant.update(other.irrelevant)
        self.shared_used.update(other.shared_used)

    @property
    def exit_code(self) -> int:
        """0 when every session is ready; 1 when any is held or could not be coded."""
        return 1 if self.held or self.failed else 0

    def summary(self, extra: dict[str, Any]) -> dict[str, Any]:
        irrelevant = sum(self.irrelevant.values())
        return {
            "patients": self.patients,
            "sessions": self.sessions,
            "ready": self.ready,
            "held": self.held,
            "not_coded": self.failed,
            "sessions_before_since": self.before_since,
            "by_rule": dict(sorted(self.by_rule.items())),
            "by_pack": dict(sorted(self.by_pack.items())),
            "lines": {
                "read": self.lines_read,
                "used": self.lines_used,
                "irrelevant": irrelevant,
                "bad": self.bad_lines,
                "irrelevant_by_reason": dict(sorted(self.irrelevant.items())),
            },
            **extra,
        }

    def one_line(self, outdir: Path) -> str:
        return (
            f"bulk: {self.sessions} session(s) of {self.patients} patient(s): {self.ready} ready, "
            f"{self.held} held, {self.failed} not coded; {self.lines_read} line(s) read, "
            f"{self.bad_lines} bad; written to {outdir}\n"
        )


class SortedParts:
    """Sorted part files of one producer: `{kind}-{name}.part`, each line `key<TAB>line`."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.name = name

    def write(self, kind: str, items: list[tuple[str, bytes]]) -> None:
        if not items:
            return
        items.sort(key=lambda item: item[0])
        with (self.folder / f"{kind}-{self.name}.part").open("wb") as handle:
            handle.writelines(b"%b\t%b\n" % (orjson.dumps(key), line) for key, line in items)


def _part_lines(path: Path) -> Iterator[tuple[str, bytes]]:
    with path.open("rb") as handle:
        for record in handle:
            key, _, line = record.rstrip(b"\n").partition(b"\t")
            yield orjson.loads(key), line


def merge_parts(folder: Path, kind: str, target: Path) -> int:
    """Merge every `{kind}-*.part` of `folder` into `target` by key; returns the lines written."""
    parts = sorted(folder.glob(f"{kind}-*.part"))
    return write_lines(target, (line for _key, line in heapq.merge(*map(_part_lines, parts), key=lambda i: i[0])))


def write_lines(target: Path, lines: Iterable[bytes]) -> int:
    """Write NDJSON lines to `target` through a temporary name (a reader never sees half a file)."""
    temporary = target.with_name(f".{target.name}.partial")
    count = 0
    with temporary.open("wb") as handle:
        for line in lines:
            handle.write(line)
            handle.write(b"\n")
            count += 1
    temporary.replace(target)
    return count


def write_summary(target: Path, summary: dict[str, Any]) -> None:
    temporary = target.with_name(f".{target.name}.partial")
    temporary.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    temporary.replace(target)
