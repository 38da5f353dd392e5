"""Finding the input files of a bulk run and reading their lines.

An input is an NDJSON file named on the command line (any name; `.gz` is decompressed) or a folder
in Bulk Data layout: one file per resource type, any number of files per type (`Patient.ndjson`,
`Procedure.001.ndjson.gz`, …), or mixed files. Folders are walked recursively and their `.ndjson`
and `.jsonl` files read (optionally `.gz`); other files are passed over and named in the summary,
since an export folder may hold a manifest or notes beside the data.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from ..errors import UsageError

SUFFIXES = (".ndjson", ".jsonl")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class InputFile:
    number: int  # position in the run's list of files: how errors and bucket records name it
    path: Path
    shown: str  # as the user named it (relative to the folder they gave)
    size: int  # bytes on disk (compressed, for .gz)

    @property
    def compressed(self) -> bool:
        return self.path.name.endswith(".gz")


def is_data_file(name: str) -> bool:
    bare = name[:-3] if name.endswith(".gz") else name
    return bare.endswith(SUFFIXES) and not name.startswith(".")


def discover(inputs: Sequence[str], *, outdir: Path | None = None) -> tuple[list[InputFile], list[str]]:
    """The data files of the inputs, in a stable order (folders sorted by path), and the names of
    files in those folders that were passed over. A missing input is a usage error. The output
    folder is never read as input, even inside an input folder (a second run would read the
    first one's claims)."""
    skip = outdir.resolve() if outdir is not None else None
    found: list[tuple[Path, str]] = []
    passed_over: list[str] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (Path(root) / d).resolve() != skip)
                for name in sorted(names):
                    full = Path(root) / name
                    shown = str(Path(given) / full.relative_to(path))
                    (found.append((full, shown)) if is_data_file(name) else passed_over.append(shown))
        elif path.is_file():
            found.append((path, given))
        elif path.exists():
            raise UsageError(f"Input {given} is neither a file nor a folder.")
        else:
            raise UsageError(f"Input {given} does not exist.")
    seen: set[Path] = set()
    files: list[InputFile] = []
    for path, shown in found:
        resolved = path.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise UsageError(f"Input file {shown} cannot be read ({exc.strerror}).") from None
        files.append(InputFile(len(files), path, shown, size))
    if not files:
        raise UsageError("The bulk input holds no NDJSON file (.ndjson or .jsonl, optionally .gz).")
    return files, passed_over


def _open(file: InputFile) -> IO[bytes]:
    try:
        if file.compressed:
            return cast(IO[bytes], gzip.open(file.path, "rb"))
        return file.path.open("rb")
    except OSError as exc:
        raise UsageError(f"Input file {file.shown} cannot be read ({exc.strerror}).") from None


def read_lines(file: InputFile) -> Iterator[tuple[int, bytes]]:
    """(line number, the line without its end) for every line of the file, blank ones included so
    that every line is accounted for. A file cut short, or not gzip where its name says so, ends
    with an OSError (EOFError for a truncated gzip stream) that the caller reports."""
    with _open(file) as handle:
        number = 0
        for line in handle:
            number += 1
            if number == 1 and line.startswith(_BOM):
                line = line[len(_BOM) :]
            yield number, line.rstrip(b"\r\n")
