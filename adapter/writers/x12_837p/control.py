"""Control numbers and the claims already sent, kept in a small JSON state file (docs/output.md,
X12 837P).

Every run that writes an interchange takes the next control number and records the claim it sent
(its identifier, a digest of its content, the frequency code and control number used) inside one
exclusive lock on `<state file>.lock`; the new state is written to a temporary file and renamed
over the old one. So two runs, even at the same time, never use the same number, and a crash
leaves the previous state whole. The file holds no patient data: claim identifiers are uuids.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import UsageError
from .content import Frequency

FORMAT = "facet-adapter x12-837p state"
MAX_CONTROL_NUMBER = 999_999_999  # ISA13 has nine digits


@dataclass(frozen=True, slots=True)
class Sent:
    control_number: int
    digest: str
    frequency: Frequency


def frequency_for(previous: Sent | None, digest: str, *, void: bool) -> Frequency:
    """8 when asked to void; 1 for a claim never sent (or sent last as a void); the same code again
    for the same content (a retransmission); 7 for changed content (a replacement)."""
    if void:
        return "8"
    if previous is None or previous.frequency == "8":
        return "1"
    return previous.frequency if previous.digest == digest else "7"


class State:
    """What the state file holds, read once inside a lock."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.next_number = int(data.get("next_control_number", 1))
        self.claims: dict[str, dict[str, Any]] = dict(data.get("claims", {}))

    def sent(self, identifier: str) -> Sent | None:
        entry = self.claims.get(identifier)
        if entry is None:
            return None
        return Sent(int(entry["control_number"]), str(entry["digest"]), entry["frequency"])

    def take_number(self) -> int:
        if self.next_number > MAX_CONTROL_NUMBER:
            raise UsageError("The X12 control numbers are used up (ISA13 has nine digits); start a new state file.")
        number = self.next_number
        self.next_number += 1
        return number

    def record(self, identifier: str, sent: Sent) -> None:
        self.claims[identifier] = {
            "control_number": sent.control_number,
            "digest": sent.digest,
            "frequency": sent.frequency,
        }

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": 1, "next_control_number": self.next_number, "claims": self.claims}


def _read(path: Path) -> State:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return State({})
    except OSError as exc:
        raise UsageError(f"X12 state file {path} cannot be read ({exc.strerror}).") from None
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("not a facet-adapter X12 state file")
        return State(data)
    except (ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"X12 state file {path} is not usable ({exc}).") from None


def peek(path: Path, identifier: str) -> Sent | None:
    """What was sent for the claim, without taking the lock (the file is only ever replaced whole)."""
    return _read(path).sent(identifier)


@contextmanager
def locked_state(path: Path) -> Iterator[State]:
    """The state, under an exclusive lock; written back (atomically) when the block ends without error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_name(path.name + ".lock"), "a")
    except OSError as exc:
        raise UsageError(f"X12 state file {path} cannot be locked ({exc.strerror}).") from None
    with lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        state = _read(path)
        yield state
        _write(path, state)


def _write(path: Path, state: State) -> None:
    temporary: str | None = None
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(handle, "w") as out:
            json.dump(state.to_json(), out, indent=2, sort_keys=True)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        if temporary is not None and os.path.exists(temporary):
            os.unlink(temporary)
        raise UsageError(f"X12 state file {path} cannot be written ({exc.strerror}).") from None
