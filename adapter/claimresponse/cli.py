"""`facet-adapter response FILE`: explain a payer's answer (loaded lazily by adapter.cli).

Exit statuses: 0 every item approved, 1 any item denied, pended, modified or in error, 2 the file
is not a ClaimResponse or PAS response (or not JSON).
"""

from __future__ import annotations

import sys

import click
import orjson

from ..errors import NotJsonError, UsageError
from .answer import read_answer
from .explain import answer_json, answer_text, result_of

_DUMP = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
MAX_BYTES = 64 * 1024 * 1024


def load_json(source: str) -> object:
    try:
        raw = sys.stdin.buffer.read(MAX_BYTES + 1) if source == "-" else open(source, "rb").read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise UsageError(f"File {source} does not exist.") from None
    except IsADirectoryError:
        raise UsageError(f"{source} is a directory, not a file.") from None
    except OSError as exc:
        raise UsageError(f"File {source} cannot be read ({exc.strerror}).") from None
    if len(raw) > MAX_BYTES:
        raise UsageError(f"{source} is larger than {MAX_BYTES // (1024 * 1024)} MB.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise NotJsonError(f"{source} is not JSON.") from None


@click.command()
@click.argument("source", metavar="FILE")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="text: for a coder; json: the same as data. Default: text on a terminal, else json.",
)
def response(source: str, output_format: str | None) -> None:
    """Explain a ClaimResponse or a Da Vinci PAS response Bundle: per item the decision, the
    authorization, the amounts and the reasons, and what to do about each denial."""
    answer = read_answer(load_json(source))
    chosen = output_format or ("text" if sys.stdout.isatty() else "json")
    if chosen == "json":
        sys.stdout.buffer.write(orjson.dumps(answer_json(answer), option=_DUMP))
    else:
        sys.stdout.write(answer_text(answer))
    sys.stdout.flush()
    raise SystemExit(result_of(answer)[1])
