"""Validated data tables kept between runs, so a run does not parse and validate what has not changed.

Rule packs and the jurisdiction table are validated with pydantic when they are loaded; that, with
parsing their TOML, cost more than everything else a one-file `claim` does. A validated table is
therefore kept in the user's cache folder (`$XDG_CACHE_HOME/facet-adapter`, else
`~/.cache/facet-adapter`) as the plain frozen objects the rules read, with the digest of every
file it was built from. An entry is used only when the adapter's version and the code that built
it are the same and every one of those files is where it was (a site pack in
`FACET_ADAPTER_PACKS` replaces a shipped one) with the same bytes; otherwise the table is built
from its files, as without a cache, and the entry written again. A table that does not validate
is never kept: its error is raised on every run. A cache folder that cannot be read or written
is no error: the tables are then built on every run (docs/cli.md, environment).

Entries are pickles: they are read only from the user's own cache folder, which is created
readable by the user alone.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from . import __version__
from .tables import find_table, mappings_dir, overlay_dir

log = logging.getLogger(__name__)

T = TypeVar("T")
# What an entry holds; a change to it makes every older entry a miss.
ENTRY_FORMAT = 1
# A table's value and the tables (paths relative to mappings/, as `load_toml` takes them) it was read from.
Built = tuple[T, Sequence[str]]
Dependency = tuple[str, str, str]  # (relative path, the file it resolved to, sha-256 of its bytes)


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "facet-adapter" / "tables"


def cached(kind: str, key: Sequence[str], code: Sequence[str], build: Callable[[], Built[T]]) -> T:
    """The table `kind` for `key` from the cache when its files are unchanged, else `build()`
    (which raises when the table is invalid) kept for the next run. `code`: the source files of
    the modules that validate and hold the table, so a change to them is a miss."""
    name = _entry_name(kind, key, code)
    if name is not None:
        entry = _read(name)
        if entry is not None:
            return cast(T, entry)
    value, relatives = build()
    if name is not None:
        _write(name, value, relatives)
    return value


def _entry_name(kind: str, key: Sequence[str], code: Sequence[str]) -> Path | None:
    digest = hashlib.sha256()
    overlay = overlay_dir()
    for part in (str(ENTRY_FORMAT), __version__, kind, str(mappings_dir()), str(overlay or ""), *key):
        digest.update(part.encode() + b"\x00")
    try:
        for source in code:
            digest.update(Path(source).read_bytes() + b"\x00")
        return cache_folder() / f"{kind}-{digest.hexdigest()[:40]}.pickle"
    except OSError:  # the adapter's own source cannot be read: no cache
        return None


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read(name: Path) -> Any:
    try:
        with name.open("rb") as handle:
            entry = pickle.load(handle)  # noqa: S301 - the user's own cache folder, see the module's docstring
        if not isinstance(entry, tuple) or len(entry) != 3 or entry[0] != ENTRY_FORMAT:
            return None
        _, dependencies, value = entry
        for relative, path, digest in dependencies:
            found = find_table(relative)
            if str(found) != path or _file_digest(found) != digest:
                return None
    except FileNotFoundError:
        return None
    except Exception as exc:  # an unreadable or outdated entry is a miss, whatever the reason
        log.debug("table cache entry %s not used (%s)", name.name, type(exc).__name__)
        return None
    return value


def _write(name: Path, value: Any, relatives: Sequence[str]) -> None:
    partial: str | None = None
    try:
        dependencies: list[Dependency] = []
        for relative in dict.fromkeys(relatives):
            path = find_table(relative)
            dependencies.append((relative, str(path), _file_digest(path)))
        name.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        import tempfile  # only when an entry is written, not on every run

        handle, partial = tempfile.mkstemp(dir=name.parent, prefix=".", suffix=".partial")
        with os.fdopen(handle, "wb") as out:
            pickle.dump((ENTRY_FORMAT, tuple(dependencies), value), out, protocol=pickle.HIGHEST_PROTOCOL)
        # Renamed into place: a run reading the entry at the same time sees the old one or the new one.
        os.replace(partial, name)
    except (OSError, pickle.PicklingError) as exc:
        log.debug("table cache entry %s not written (%s)", name.name, type(exc).__name__)
        if partial is not None:
            Path(partial).unlink(missing_ok=True)
