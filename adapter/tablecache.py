"""Validated data tables kept between runs, so a run does not parse and validate what has not changed.

Rule packs and the jurisdiction table are validated with pydantic when they are loaded; that, with
parsing their TOML, cost more than everything else a one-file `claim` does. A validated table is
therefore kept in the user's cache folder (`$XDG_CACHE_HOME/facet-adapter`, else
`~/.cache/facet-adapter`, in `tables/`) as the immutable objects the rules read, with the digest of every
file it was built from (of the bytes that were parsed, see `adapter.tables.parsed_from`). An
entry is used only when the code that built it is the same (the adapter's version, the Python
and pydantic versions, the source of the modules that validate and hold the table) and every one
of those files is where it was (a site pack in `FACET_ADAPTER_PACKS` replaces a shipped one) with
the same bytes; otherwise the table is built from its files, as without a cache, and the entry
written again. A table that does not validate is never kept: its error is raised on every run. A
cache folder that cannot be read or written, or an entry that cannot be read, is no error: the
table is then built as without a cache (docs/cli.md, environment).

Entries are read and written by `adapter.cachefiles`: only the user's own, always whole.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Callable, Sequence
from functools import cache
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Any, TypeVar, cast

from . import __version__
from .cachefiles import cache_root, read_entry, write_entry
from .tables import find_table, mappings_dir, overlay_dir, parsed_from

log = logging.getLogger(__name__)

T = TypeVar("T")
# What an entry holds; a change to it makes every older entry a miss.
ENTRY_FORMAT = 2
# A table's value and the tables (paths relative to mappings/, as `load_toml` takes them) it was read from.
Built = tuple[T, Sequence[str]]
Dependency = tuple[str, str, str]  # (relative path, the file it resolved to, sha-256 of its bytes)
# The modules every table is loaded through: a change to them is a change to every entry.
_LOADING = (__file__, str(Path(__file__).with_name("tables.py")), str(Path(__file__).with_name("cachefiles.py")))


def cache_folder() -> Path:
    return cache_root() / "tables"


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
    """`kind-<what it is>-<what built it>.pickle`, or None when the cache cannot be used."""
    overlay = overlay_dir()  # a bad FACET_ADAPTER_PACKS is the usage error it is without a cache
    try:
        what = hashlib.sha256()
        for part in (kind, str(mappings_dir()), str(overlay or ""), *key):
            what.update(part.encode() + b"\x00")
        built_by = hashlib.sha256()
        for part in (str(ENTRY_FORMAT), __version__, sys.version, _pydantic_version(), _sources((*_LOADING, *code))):
            built_by.update(part.encode() + b"\x00")
        return cache_folder() / f"{kind}-{what.hexdigest()[:24]}-{built_by.hexdigest()[:24]}.pickle"
    except Exception as exc:  # no home folder, the adapter's own source not readable (a zipped install): no cache
        log.debug("table cache not used (%s)", type(exc).__name__)
        return None


@cache
def _sources(paths: tuple[str, ...]) -> str:
    """The digest of these source files, read once per process (a run without a pack named chooses
    among them all, each its own entry)."""
    digest = hashlib.sha256()
    for source in paths:
        digest.update(Path(source).read_bytes() + b"\x00")
    return digest.hexdigest()


@cache
def _pydantic_version() -> str:
    """pydantic's version file, read without importing pydantic: its validation makes the entries."""
    spec = PathFinder.find_spec("pydantic")
    if spec is None or spec.origin is None:
        return ""
    return Path(spec.origin).with_name("version.py").read_text()


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read(name: Path) -> Any:
    entry = read_entry(name)
    if not isinstance(entry, tuple) or len(entry) != 3 or entry[0] != ENTRY_FORMAT:
        return None
    _, dependencies, value = entry
    try:
        for relative, path, digest in dependencies:
            found = find_table(relative)
            if str(found) != path or _file_digest(found) != digest:
                return None
    except Exception as exc:  # a file gone or unreadable: a miss, and building it says what is wrong
        log.debug("table cache entry %s not used (%s)", name.name, type(exc).__name__)
        return None
    return value


def _write(name: Path, value: Any, relatives: Sequence[str]) -> None:
    dependencies: list[Dependency] = []
    for relative in dict.fromkeys(relatives):
        parsed = parsed_from(relative)
        if parsed is None:  # not read through load_toml: what it was built from is not known
            return
        dependencies.append((relative, str(parsed[0]), parsed[1]))
    write_entry(name, (ENTRY_FORMAT, tuple(dependencies), value))
