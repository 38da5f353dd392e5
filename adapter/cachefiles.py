"""Files in the user's cache folder (`$XDG_CACHE_HOME/facet-adapter`, else `~/.cache/facet-adapter`):
read only when they are the user's own, written whole or not at all, and never an error.

The adapter keeps two kinds of entries there: validated rule packs and tables (`adapter.tablecache`)
and parsed TOML tables (`adapter.tables.load_toml`). Both are pickles, so an entry is read only
when it is a regular file of the user's own that nobody else may write (folders are created
readable by the user alone). An entry is written to a temporary file and renamed into place, so a
run reading it sees a whole entry and concurrent writers do not mix their bytes. A folder that
cannot be read or written, or an entry that cannot be read, is only a miss: the caller builds
what it needs as without a cache (docs/cli.md, environment).

An entry's file name is `<what it is>-<what built it>.pickle`; writing one removes the entries of
the same thing built otherwise (by older code, or from older bytes), so the folder does not grow.
"""

from __future__ import annotations

import logging
import os
import pickle
import stat
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "facet-adapter"


def read_entry(name: Path) -> Any:
    """The value kept in `name`; None when there is none or it may not be used."""
    try:
        with name.open("rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
                log.debug("cache entry %s not used (not the user's own)", name.name)
                return None
            return pickle.load(handle)  # noqa: S301 - the user's own file, see the module's docstring
    except FileNotFoundError:
        return None
    except Exception as exc:  # an unreadable entry is a miss, whatever the reason
        log.debug("cache entry %s not used (%s)", name.name, type(exc).__name__)
        return None


def write_entry(name: Path, value: Any) -> None:
    """Keep `value` in `name`, and remove the entries of the same thing built otherwise."""
    partial: str | None = None
    try:
        name.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        import tempfile  # only when an entry is written, not on every run

        handle, partial = tempfile.mkstemp(dir=name.parent, prefix=".", suffix=".partial")
        with os.fdopen(handle, "wb") as out:
            pickle.dump(value, out, protocol=pickle.HIGHEST_PROTOCOL)
        # Renamed into place: a run reading the entry at the same time sees the old one or the new one.
        os.replace(partial, name)
        partial = None
        what = name.name.rsplit("-", 1)[0]
        for other in name.parent.glob(f"{what}-*.pickle"):
            if other != name:
                other.unlink(missing_ok=True)
    except Exception as exc:  # a cache that cannot be written only means building again next time
        log.debug("cache entry %s not written (%s)", name.name, type(exc).__name__)
        if partial is not None:
            Path(partial).unlink(missing_ok=True)
