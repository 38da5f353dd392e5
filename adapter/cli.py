"""The command line: a thin shell over `adapter.pipeline` (docs/cli.md).

Exit statuses: 0 no error finding, 1 written but held, 2 input or usage error, 3 internal error,
4 FHIR server error. Errors go to standard error, never as a traceback (set FACET_ADAPTER_DEBUG=1
to see one): one `error: …` line on a terminal, else (or with `--error-format json`) an
OperationOutcome (docs/cli.md, standard output and standard error).
"""

from __future__ import annotations

import gc
import logging
import math
import os
import stat
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import click
import orjson

from .errors import EXIT_INPUT, EXIT_INTERNAL, AdapterError, InputTooLargeError, UsageError

_DUMP = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE


class _ErrorFormat:
    """How errors are written: `--error-format`, else by whether standard error is a terminal.
    Set by the group's callback, which click runs before it parses the subcommand's options."""

    chosen: str | None = None


def _emit_error(outcome: dict[str, Any], code: int) -> NoReturn:
    chosen = _ErrorFormat.chosen or ("text" if sys.stderr.isatty() else "json")
    if chosen == "text":
        sys.stderr.write(error_line(outcome) + "\n")
    else:
        sys.stderr.buffer.write(orjson.dumps(outcome, option=_DUMP))
    sys.stderr.flush()
    raise SystemExit(code)


def error_line(outcome: dict[str, Any]) -> str:
    """One line a person reads: the error's message, and how many located problems it has with
    the first of them (the OperationOutcome keeps them all)."""
    issues = [issue for issue in outcome.get("issue", []) if isinstance(issue, dict)]
    texts = [str(issue.get("details", {}).get("text", "")).strip() for issue in issues]
    line = f"error: {texts[0] if texts and texts[0] else 'unknown error'}"
    located = issues[1:]
    if located:
        first = texts[1]
        where = located[0].get("expression") or []
        if where:
            first = f"{first} (at {where[0]})"
        more = " (all of them with --error-format json)" if len(located) > 1 else ""
        line = f"{line} First: {first}{more}"
    return " ".join(line.split())


def _fail(error: AdapterError) -> NoReturn:
    _emit_error(error.to_operation_outcome(), error.exit_code)


def _read_input(source: str, max_bytes: int) -> tuple[bytes, str]:
    if source == "-":
        raw = sys.stdin.buffer.read(max_bytes + 1)
        if len(raw) > max_bytes:
            # A stream's size is not known before it is read: say what was read, not a made-up size.
            raise InputTooLargeError(
                f"The standard input is over the limit of {max_bytes:,} bytes (more than {max_bytes:,} bytes were "
                "read; raise the limit with --max-input-mb)."
            )
        return raw, "standard input"
    path = Path(source)
    try:
        if path.is_dir():
            raise UsageError(f"{source} is a directory, not an input file.")
        with path.open("rb") as handle:
            # A regular file's size is known: the message states it (reading stops at the limit).
            info = os.fstat(handle.fileno())
            if stat.S_ISREG(info.st_mode) and info.st_size > max_bytes:
                raise InputTooLargeError(
                    f"The {path.name} is {info.st_size:,} bytes, over the limit of {max_bytes:,} bytes "
                    "(raise it with --max-input-mb)."
                )
            raw = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise UsageError(f"Input file {source} does not exist.") from None
    except PermissionError:
        raise UsageError(f"Input file {source} cannot be read (permission denied).") from None
    except OSError as exc:
        raise UsageError(f"Input file {source} cannot be read ({exc.strerror}).") from None
    return raw, path.name


def _options(
    payer: str | None,
    use: str,
    pos: str | None,
    prior_auth: str | None,
    max_input_mb: float,
    patient: str | None = None,
) -> Any:
    from .pipeline import Options

    if not math.isfinite(max_input_mb) or max_input_mb <= 0:
        raise UsageError("--max-input-mb must be a positive number.")
    if patient is not None and not patient.strip():
        raise UsageError("--patient needs a patient id (Patient/123 or 123).")
    return Options(
        payer=payer.lower() if payer else None,
        use=use,  # type: ignore[arg-type]
        pos=pos,
        prior_auth=prior_auth or None,
        max_input_bytes=int(max_input_mb * 1024 * 1024),
        patient=patient,
    )


@contextmanager
def _one_shot() -> Iterator[None]:
    """`claim` and `check` code one input and end: what they build lives until the process ends,
    so the cycle collector is off while they run and what they leave is frozen, not walked again
    by the collections the interpreter makes at exit (together about a tenth of a one-file run)."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _run(source: str, options: Any) -> Any:
    from .pipeline import process, validate_options

    validate_options(options)
    raw, name = _read_input(source, options.max_input_bytes)
    return process(raw, options, name=name)


_common = [
    click.argument("source", metavar="INPUT"),
    click.option("--payer", help="Payer profile (rule pack), e.g. medicare, commercial. Default: from the Coverage."),
    click.option("--use", type=click.Choice(["claim", "preauthorization"]), default="claim", show_default=True),
    click.option("--pos", help="CMS place-of-service code (two digits). Default: from the encounter's location."),
    click.option("--prior-auth", help="Prior authorization number on record for this session."),
    click.option("--max-input-mb", type=float, default=64.0, show_default=True, help="Refuse larger inputs."),
    click.option(
        "--patient", help="Code this patient's latest session (Patient/123 or 123). Default: the input's latest."
    ),
]


def _with_common(function: Any) -> Any:
    for decorator in reversed(_common):
        function = decorator(function)
    return function


class _LazyGroup(click.Group):
    """Commands that need a web framework or HTTP client are imported only when used, so a
    one-file `claim` starts fast."""

    lazy: ClassVar[dict[str, str]] = {
        "sync": "adapter.server.commands:sync",
        "subscribe": "adapter.server.commands:subscribe",
        "sandbox": "adapter.server.commands:sandbox",
        "serve": "adapter.service.cli:serve",
        "queue": "adapter.service.cli:queue",
        "response": "adapter.claimresponse.cli:response",
        "submit": "adapter.claimresponse.cli:submit",
        "payer": "adapter.payer.cli:payer",
        "bulk": "adapter.bulk.command:bulk",
        "users": "adapter.review.cli:users",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            import importlib

            module_name, _, attribute = self.lazy[name].partition(":")
            command = getattr(importlib.import_module(module_name), attribute)
            return command if isinstance(command, click.Command) else None
        return super().get_command(ctx, name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="facet-adapter")
@click.option(
    "--error-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="How errors go to standard error: text (one line) or json (an OperationOutcome). "
    "Default: text on a terminal, else json.",
)
def cli(error_format: str | None) -> None:
    """Code and check facet joint interventions from FHIR R4 input, and write Claim Bundles."""
    _ErrorFormat.chosen = error_format


# The formats `claim` writes (registered in adapter/writers/__init__.py); the Bundle is the default.
CLAIM_FORMATS = ("fhir", "x12-837p")
_x12_options = [
    click.option("--x12-config", type=click.Path(dir_okay=False), help="X12 site configuration (TOML)."),
    click.option("--x12-state", type=click.Path(dir_okay=False), help="X12 state file: control numbers, claims sent."),
    click.option("--usage-indicator", type=click.Choice(["T", "P"]), help="ISA15: T test, P production."),
    click.option("--submitter-id", help="1000A submitter id (also ISA06 / GS02)."),
    click.option("--receiver-id", help="1000B receiver id (also ISA08 / GS03)."),
    click.option("--delimiters", help="Four characters: element, component, repetition, segment (e.g. '*:^~')."),
    click.option(
        "--control-number",
        type=click.IntRange(1, 999_999_999),
        help="Interchange / group / transaction control number instead of the state file's counter.",
    ),
    click.option("--void", is_flag=True, help="Send the claim as a void (frequency code 8)."),
    click.option("--payer-claim-number", help="The payer's claim number a replacement or void refers to (REF*F8)."),
    click.option("--force", is_flag=True, help="Write the 837P of a held claim all the same (still exit 1)."),
]


def _with_x12(function: Any) -> Any:
    for decorator in reversed(_x12_options):
        function = decorator(function)
    return function


def _x12_writer(use: str, x12: dict[str, Any]) -> Any:
    """The 837P writer for these options, its settings checked before the input is read."""
    from .writers import x12_837p_writer
    from .writers.x12_837p import Overrides, X12Options, X12Writer
    from .writers.x12_837p.settings import config_path

    if use != "claim":
        raise UsageError(
            "An 837P is a claim: --format x12-837p needs --use claim (a prior-authorization request is an X12 278)."
        )
    overrides = Overrides(
        usage_indicator=x12["usage_indicator"],
        submitter_id=x12["submitter_id"],
        receiver_id=x12["receiver_id"],
        delimiters=x12["delimiters"],
        state_file=Path(x12["x12_state"]) if x12["x12_state"] else None,
    )
    options = X12Options(
        config=config_path(x12["x12_config"]),
        overrides=overrides,
        control_number=x12["control_number"],
        void=x12["void"],
        payer_claim_number=x12["payer_claim_number"] or None,
    )
    X12Writer(options).check()
    return x12_837p_writer(options)


@cli.command()
@_with_common
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), help="Write the claim here, not stdout.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(CLAIM_FORMATS),
    default="fhir",
    show_default=True,
    help="fhir: the Claim Bundle (or PAS request Bundle); x12-837p: an ASC X12 5010 837P interchange.",
)
@_with_x12
def claim(
    source: str,
    payer: str | None,
    use: str,
    pos: str | None,
    prior_auth: str | None,
    max_input_mb: float,
    patient: str | None,
    output: str | None,
    output_format: str,
    **x12: Any,
) -> None:
    """Write the Claim Bundle (or PAS request Bundle, or an X12 837P) for the latest session in INPUT."""
    with _one_shot():
        from .writers.review import claim_summary

        if output_format != "x12-837p":
            given = [name for name, value in x12.items() if value not in (None, False)]
            if given:
                names = ", ".join("--" + name.replace("_", "-") for name in given)
                raise UsageError(f"{names}: only with --format x12-837p.")
            result = _run(source, _options(payer, use, pos, prior_auth, max_input_mb, patient))
            _write(orjson.dumps(result.bundle, option=_DUMP), output)
            sys.stderr.write(claim_summary(result.decision))
            raise SystemExit(result.exit_code)
        _claim_x12(
            source,
            _options(payer, use, pos, prior_auth, max_input_mb, patient),
            _x12_writer(use, x12),
            output,
            x12["force"],
        )


def _claim_x12(source: str, options: Any, writer: Any, output: str | None, force: bool) -> NoReturn:
    """The 837P: its own findings join the decision's; a held claim is written only with --force
    (docs/cli.md, claim)."""
    from .errors import ClaimNotWritableError
    from .writers.review import claim_summary

    result = _run(source, options)
    decision = writer.prepare(result.decision)
    summary = claim_summary(decision)
    if decision.held and not force:
        sys.stderr.write(summary + "837P not written: the claim is held (--force writes it all the same).\n")
        raise SystemExit(decision.exit_code)
    try:
        payload = writer.write(decision, result.index)
    except ClaimNotWritableError:
        sys.stderr.write(summary)
        raise
    _write(payload, output)
    sys.stderr.write(summary)
    raise SystemExit(decision.exit_code)


def _write(payload: bytes, output: str | None) -> None:
    """To standard output, or to a file through a temporary one renamed into place, so the file
    is never left half-written."""
    if not output:
        sys.stdout.buffer.write(payload)
        sys.stdout.flush()
        return
    target = Path(output)
    temporary = target.with_name(f".{target.name}.partial")
    try:
        temporary.write_bytes(payload)
        temporary.replace(target)
    except OSError as exc:
        raise UsageError(f"Cannot write {output} ({exc.strerror}).") from None


@cli.command()
@_with_common
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "html"]),
    default=None,
    help="text: the coder's review; json: an OperationOutcome; html: the review as one self-contained page. "
    "Default: text on a terminal, else json.",
)
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), help="Write the result here, not stdout.")
def check(
    source: str,
    payer: str | None,
    use: str,
    pos: str | None,
    prior_auth: str | None,
    max_input_mb: float,
    patient: str | None,
    output_format: str | None,
    output: str | None,
) -> None:
    """Print the findings for the latest session in INPUT."""
    with _one_shot():
        from .writers import writer

        result = _run(source, _options(payer, use, pos, prior_auth, max_input_mb, patient))
        chosen = output_format or ("text" if sys.stdout.isatty() and not output else "json")
        name = {"json": "outcome"}.get(chosen, chosen)
        _write(writer(name).write(result.decision, result.index), output)
        raise SystemExit(result.exit_code)


@cli.command()
@click.option("--payer", help="Payer profile to list. Default: every profile.")
@click.option("--format", "output_format", type=click.Choice(["text", "markdown"]), default="text")
def rules(payer: str | None, output_format: str) -> None:
    """List a rule pack's rules: id, version, severity, CARC and citation."""
    from .rules.docs import rules_markdown, rules_text
    from .rules.packs import available_packs
    from .rules.selection import load_pack

    names = [payer.lower()] if payer else available_packs()
    packs = [load_pack(name) for name in names]
    if output_format == "markdown":
        sys.stdout.write(rules_markdown(packs))
    else:
        sys.stdout.write("\n".join(rules_text(pack) for pack in packs))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=os.environ.get("FACET_ADAPTER_LOG", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        cli.main(args=argv, prog_name="facet-adapter", standalone_mode=False)
    except SystemExit:
        raise
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except click.exceptions.Abort:
        raise SystemExit(130) from None
    except click.ClickException as exc:
        _fail(UsageError(exc.format_message()))
    except AdapterError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BrokenPipeError:
        raise SystemExit(EXIT_INPUT) from None
    except Exception as exc:  # a bug: report it without a traceback unless asked
        if os.environ.get("FACET_ADAPTER_DEBUG"):
            traceback.print_exc()
        _emit_error(
            {
                "resourceType": "OperationOutcome",
                "issue": [
                    {
                        "severity": "fatal",
                        "code": "exception",
                        "details": {
                            "text": f"Internal error ({type(exc).__name__}); this is a bug in facet-adapter. "
                            "Run with FACET_ADAPTER_DEBUG=1 for details."
                        },
                    }
                ],
            },
            EXIT_INTERNAL,
        )


if __name__ == "__main__":  # pragma: no cover
    main()
