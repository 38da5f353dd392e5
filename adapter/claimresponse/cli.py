"""The payer-answer commands (loaded lazily by adapter.cli): `facet-adapter submit BUNDLE --url
PAYER_BASE` sends a request and prints the payer's answer; `facet-adapter response FILE` explains an
answer (docs/payer.md).

Exit statuses: 0 every item approved, 1 any item denied, pended, modified or in error, 2 a usage
error (not a request or answer, a held Claim without --force, a request the payer refused), 4 the
payer could not be reached.
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


PAYER_TOKEN_ENV = "FACET_ADAPTER_PAYER_TOKEN"  # noqa: S105 (the name of a variable, not a secret)


@click.command()
@click.argument("source", metavar="BUNDLE")
@click.option("--url", "payer_base", required=True, help="The payer's FHIR base, e.g. http://127.0.0.1:8095/fhir.")
@click.option("--force", is_flag=True, help="Submit a held (draft) Claim anyway.")
@click.option("--payer-token", envvar=PAYER_TOKEN_ENV, help=f"Bearer token for the payer (or {PAYER_TOKEN_ENV}).")
@click.option(
    "--budget",
    type=click.FloatRange(min=0.1),
    default=15.0,
    show_default=True,
    help="Seconds to keep retrying a failed $submit (5xx, connection errors).",
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to follow a pended answer up with Claim/$inquire; 0: do not follow up.",
)
@click.option(
    "--poll", type=click.FloatRange(min=0.1), default=2.0, show_default=True, help="Seconds between inquiries."
)
def submit(
    source: str, payer_base: str, force: bool, payer_token: str | None, budget: float, wait: float, poll: float
) -> None:
    """Submit a Claim Bundle or PAS request Bundle to a payer's Claim/$submit and print its answer.

    Exit 0 when every item is approved, 1 when any is denied, pended or modified, 2 on a usage error
    (or when the payer refuses the request: its OperationOutcome is printed), 4 when the payer
    cannot be reached within the budget."""
    from ..server.submit import PayerRejectedError, check_request, submit_request

    if not payer_base.startswith(("http://", "https://")):
        raise UsageError("--url must be the payer's http(s) FHIR base.")
    bundle = check_request(load_json(source), force=force)
    try:
        submission = submit_request(bundle, payer_base, token=payer_token, budget=budget, wait=wait, poll=poll)
    except PayerRejectedError as exc:
        if exc.outcome is not None:
            sys.stdout.buffer.write(orjson.dumps(exc.outcome, option=_DUMP))
            sys.stdout.flush()
        raise
    sys.stdout.buffer.write(orjson.dumps(submission.answer, option=_DUMP))
    sys.stdout.flush()
    label, code = result_of(submission.parsed)
    number = submission.parsed.authorization_number
    follow = f", {submission.inquiries} inquiry(ies)" if submission.inquiries else ""
    sys.stderr.write(f"Payer answer: {label}" + (f", authorization {number}" if number else "") + f"{follow}.\n")
    raise SystemExit(code)
