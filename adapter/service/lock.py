"""The lock `serve` holds on its queue (a file next to the database)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from ..errors import UsageError


class QueueLock:
    """An exclusive lock next to the queue file, held while `serve` runs. It makes reclaiming
    `working` jobs at start-up safe (no other process can be working on them) and stops two
    services from sharing one queue. The kernel drops the lock when the process dies, even on
    kill -9."""

    def __init__(self, db_path: str | os.PathLike[str]) -> None:
        self.path = Path(f"{os.fspath(db_path)}.lock")
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise UsageError(
                f"Another facet-adapter serve is using the queue {os.fspath(self.path)[:-5]} (its lock is held)."
            ) from None
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> QueueLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
