"""`facet-adapter bulk`: every facet session of every patient of an export (docs/bulk.md)."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import UsageError
from ..server.options import fhir_server_options, server_options_from


def _since(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        raise UsageError("--since must be a date, YYYY-MM-DD.") from None


@click.command()
@click.argument("inputs", nargs=-1, metavar="INPUT...")
@click.option("-o", "--output-dir", "outdir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--payer", help="Payer profile (rule pack) for every session. Default: from each Coverage.")
@click.option("--use", type=click.Choice(["claim", "preauthorization"]), default="claim", show_default=True)
@click.option("--since", "since_text", metavar="DATE", help="Code only sessions on or after DATE (YYYY-MM-DD).")
@click.option("--jobs", type=click.IntRange(1, 256), help="Worker processes. Default: the machine's cores.")
@click.option("--engine", type=click.Choice(["local", "spark"]), default="local", show_default=True)
@click.option("--master", help="Spark master URL (--engine spark), e.g. local[4] or spark://host:7077.")
@click.option("--group", "group_id", help="With --fhir-base: export this Group's patients (Group/[id]/$export).")
@fhir_server_options(base_required=False)
def bulk(
    inputs: tuple[str, ...],
    outdir: str,
    payer: str | None,
    use: str,
    since_text: str | None,
    jobs: int | None,
    engine: str,
    master: str | None,
    group_id: str | None,
    **server: Any,
) -> None:
    """Code every facet session of every patient in NDJSON files or folders (Bulk Data layout),
    or in a FHIR server's Bulk Data $export (--fhir-base), into OUTDIR: claims.ndjson,
    outcomes.ndjson, errors.ndjson and summary.json."""
    from ..pipeline import Options, validate_options
    from .patient import Settings
    from .runner import BulkJob, default_jobs, run_local

    since = _since(since_text)
    # One creation time for the whole run: every engine and job count writes the same bytes.
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    options = Options(payer=payer.lower() if payer else None, use=use, now=now)  # type: ignore[arg-type]
    validate_options(options)
    if master is not None and engine != "spark":
        raise UsageError("--master goes with --engine spark.")
    fhir_base = server.get("fhir_base")
    if group_id is not None and fhir_base is None:
        raise UsageError("--group goes with --fhir-base.")
    if fhir_base is not None and inputs:
        raise UsageError("Give INPUT files or --fhir-base, not both.")
    if fhir_base is None and not inputs:
        raise UsageError("Give INPUT files or folders, or --fhir-base for a Bulk Data $export.")
    target = Path(outdir)
    summary_extra: dict[str, Any] = {}
    if fhir_base is not None:
        from .export import ExportRequest, run_export

        downloaded = run_export(
            server_options_from(**server),
            ExportRequest(group=group_id, since=since),
            target,
            progress=sys.stderr.isatty(),
        )
        inputs = (str(downloaded.folder),)
        summary_extra["export"] = downloaded.summary()
    job = BulkJob(
        inputs=inputs,
        outdir=target,
        settings=Settings(options=options, since=since),
        jobs=jobs or default_jobs(),
        progress=sys.stderr.isatty(),
        summary_extra=summary_extra,
    )
    if engine == "spark":
        from .spark import run_spark

        tally = run_spark(job, master)
    else:
        tally = run_local(job)
    sys.stderr.write(tally.one_line(target))
    raise SystemExit(tally.exit_code)
