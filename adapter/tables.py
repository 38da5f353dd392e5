"""Where the data tables live and how they are loaded.

The tables sit in the top-level `mappings/` folder of a source checkout (and of an editable
install); a wheel carries the same folder inside the package as `adapter/mappings`.
"""

from __future__ import annotations

import hashlib
import os
import sys
from functools import cache
from pathlib import Path
from typing import Any

from .cachefiles import cache_root, read_entry, write_entry
from .errors import RulePackError, UsageError


@cache
def mappings_dir() -> Path:
    packaged = Path(__file__).resolve().parent / "mappings"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parent.parent / "mappings"
    if checkout.is_dir():
        return checkout
    raise RulePackError(f"The adapter's data tables were not found (looked in {packaged} and {checkout}).")


OVERLAY_ENV = "FACET_ADAPTER_PACKS"
# What a site overlay may replace: packs, covered-diagnosis lists, the chargemaster and the sandbox
# payer's tables.
_OVERLAY_FOLDERS = ("packs/", "dx/", "payer/", "chargemaster.toml")


def overlay_dir() -> Path | None:
    """A folder of site packs (packs/*.toml, dx/*.toml, chargemaster.toml, payer/*.toml for the
    sandbox payer) that add to or replace the shipped ones.

    A variable that names no folder is a usage error, not an empty overlay: a typo would
    otherwise check every claim against the shipped packs without a word (docs/cli.md, environment)."""
    value = os.environ.get(OVERLAY_ENV)
    if not value:
        return None
    folder = Path(value)
    if not folder.is_dir():
        raise UsageError(f"{OVERLAY_ENV} names {value}, which is not a folder (site packs go in its packs/ and dx/).")
    return folder


def find_table(relative: str) -> Path:
    overlay = overlay_dir()
    if overlay is not None and relative.startswith(_OVERLAY_FOLDERS) and (overlay / relative).is_file():
        return overlay / relative
    return mappings_dir() / relative


# For each table `load_toml` parsed in this process: the file and the SHA-256 of the bytes parsed.
_PARSED: dict[str, tuple[Path, str]] = {}


@cache
def load_toml(relative: str) -> dict[str, Any]:
    """Parse one TOML table from mappings/ (or the site overlay). Cached: read once per process,
    and parsed once while its bytes stay the same (kept in the user's cache folder, `toml/`)."""
    path = find_table(relative)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise RulePackError(f"Data table mappings/{relative} is missing.") from exc
    digest = hashlib.sha256(data).hexdigest()
    _PARSED[relative] = (path, digest)
    entry = _parsed_entry(path, digest)
    kept = read_entry(entry) if entry is not None else None
    if isinstance(kept, tuple) and len(kept) == 2 and kept[0] == digest and isinstance(kept[1], dict):
        return kept[1]
    import tomllib  # only when a table changed: a run with every table kept does not load the parser

    try:
        table = tomllib.loads(data.decode())
    except tomllib.TOMLDecodeError as exc:
        raise RulePackError(f"Data table {path} is not valid TOML: {exc}") from exc
    if entry is not None:
        write_entry(entry, (digest, table))
    return table


def _parsed_entry(path: Path, digest: str) -> Path | None:
    """Where the table parsed from these bytes of this file is kept: by the file (so an older
    parse of it is replaced) and by its bytes and the Python version (whose parser made it)."""
    try:
        where = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24]
        made = hashlib.sha256(f"{digest}\x00{sys.version}".encode()).hexdigest()[:24]
        return cache_root() / "toml" / f"toml-{where}-{made}.pickle"
    except Exception:  # no home folder: no cache
        return None


def parsed_from(relative: str) -> tuple[Path, str] | None:
    """The file `load_toml(relative)` parsed in this process and the SHA-256 of the bytes it parsed
    (what a table built from it was built from, even if the file changed since); None when not parsed."""
    return _PARSED.get(relative)
