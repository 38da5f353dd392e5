"""`facet-adapter serve` and `facet-adapter queue list|retry` (loaded lazily by `adapter.cli`)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import click
import orjson

from ..cds.options import cds_options, cds_settings_from
from ..errors import UsageError
from ..fhir.auth import build_auth
from ..model import Use
from ..server.options import fhir_server_options, hook_token_option, server_options_from
from .queue import STATES, Job, JobQueue, QueueLock, RetryPolicy, State, iso
from .settings import DEFAULT_DB, HOOK_TOKEN_ENV, MIB, Settings, check_fhir_base

_DB_HELP = f"The queue database (SQLite). Default: ./{DEFAULT_DB}."


@click.command()
@fhir_server_options()
@click.option("--port", type=click.IntRange(0, 65535), required=True, help="Port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@hook_token_option(
    f"Require Authorization: Bearer TOKEN on /notify, /claim, /check (or {HOOK_TOKEN_ENV}, as for subscribe)."
)
@click.option("--db", "db_path", type=click.Path(dir_okay=False), default=str(DEFAULT_DB), help=_DB_HELP)
@click.option("--payer", help="Payer profile for synced Claims. Default: from the Coverage.")
@click.option(
    "--use",
    type=click.Choice(["claim", "preauthorization"]),
    default="claim",
    show_default=True,
    help="What a re-query (ping) syncs. A notified Procedure is always a claim, a ServiceRequest a preauthorization.",
)
@click.option(
    "--max-attempts", type=click.IntRange(1), default=10, show_default=True, help="Attempts before a job is dead."
)
@click.option(
    "--retry-delay", type=click.FloatRange(0.01), default=5.0, show_default=True, help="First retry delay, s."
)
@click.option("--max-notify-mb", type=click.FloatRange(0.001), default=5.0, show_default=True)
@click.option("--max-input-mb", type=click.FloatRange(0.001), default=32.0, show_default=True, help="/claim, /check.")
@click.option(
    "--max-api-requests",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="/claim and /check requests processed at once; more are answered 503 with Retry-After.",
)
@cds_options()
def serve(
    port: int,
    host: str,
    hook_token: str | None,
    db_path: str,
    payer: str | None,
    use: str,
    max_attempts: int,
    retry_delay: float,
    max_notify_mb: float,
    max_input_mb: float,
    max_api_requests: int,
    **fhir_options: Any,
) -> None:
    """Receive FHIR Subscription notifications at http://HOST:PORT/notify and serve /claim and /check.

    Notified procedures are synced with the FHIR server at --fhir-base, authenticated as `sync`
    is (--fhir-token or the SMART Backend Services options)."""
    import uvicorn

    from ..pipeline import Options, validate_options
    from .app import create_app

    cds = cds_settings_from(fhir_options, host=host, port=port)  # the CDS Hooks service (docs/cds-hooks.md)
    fhir = server_options_from(**fhir_options)
    fhir_base = check_fhir_base(fhir.base_url, "--fhir-base")
    if hook_token is not None and not hook_token.strip():
        raise UsageError("--hook-token must not be empty.")
    build_auth(fhir.auth)  # a bad SMART key or an incomplete set of options is exit 2 now, not a failed job later
    chosen = cast(Use, use)  # click.Choice has checked it
    validate_options(Options(payer=payer.lower() if payer else None, use=chosen))
    if not os.environ.get("FACET_ADAPTER_LOG"):
        # The service's own lines (requests, jobs) are what an operator watches; they never hold patient data.
        logging.getLogger("adapter.service").setLevel(logging.INFO)
    settings = Settings(
        fhir_base=fhir_base,
        db_path=Path(db_path),
        token=hook_token,
        fhir_auth=fhir.auth,
        fhir_timeout=fhir.timeout,
        fhir_retries=fhir.retries,
        payer=payer.lower() if payer else None,
        use=chosen,
        max_notify_bytes=int(max_notify_mb * MIB),
        max_api_bytes=int(max_input_mb * MIB),
        max_api_concurrency=max_api_requests,
        retry=RetryPolicy(max_attempts=max_attempts, base_seconds=retry_delay),
        cds=cds,
    )
    with QueueLock(settings.db_path):
        app = create_app(settings)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,  # use the adapter's logging setup
            access_log=False,  # its lines carry raw paths and query strings; the app logs route templates
            server_header=False,
            timeout_graceful_shutdown=10,
        )
        server = uvicorn.Server(config)
        sys.stderr.write(f"facet-adapter serve: http://{host}:{port}/notify (queue {settings.db_path})\n")
        if cds.enabled:
            sys.stderr.write(f"facet-adapter serve: CDS Hooks discovery at {cds.base_url}/cds-services\n")
        if hook_token is None:
            where = "" if host in ("127.0.0.1", "localhost", "::1") else f" on {host}"
            sys.stderr.write(
                f"facet-adapter serve: warning: listening{where} without --token ({HOOK_TOKEN_ENV} is not set); "
                "anyone who can reach the port can queue notifications and call /claim and /check\n"
            )
        sys.stderr.flush()
        try:
            server.run()
        except SystemExit:
            # uvicorn exits with 1 when it cannot bind; 1 means "claim held" in this CLI.
            raise UsageError(f"Could not listen on {host}:{port} (in use, or not an address of this host).") from None
        if not server.started:
            raise UsageError(f"The service did not start on {host}:{port}; see the log above.")


@click.group()
def queue() -> None:
    """Inspect and retry the notification queue."""


@queue.command("list")
@click.option("--db", "db_path", type=click.Path(dir_okay=False), default=str(DEFAULT_DB), help=_DB_HELP)
@click.option(
    "--state", "states", type=click.Choice(STATES), multiple=True, help="Only jobs in this state (repeatable)."
)
@click.option("--limit", type=click.IntRange(1), default=None, help="At most this many jobs.")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True)
def list_jobs(db_path: str, states: tuple[str, ...], limit: int | None, output_format: str) -> None:
    """List jobs: id, kind, resource, state, attempts, next attempt, last error."""
    wanted = cast(Iterable[State], states) if states else None  # click.Choice(STATES) has checked them
    jobs = JobQueue(db_path, create=False).jobs(wanted, limit)
    if output_format == "json":
        sys.stdout.buffer.write(orjson.dumps([job.as_dict() for job in jobs], option=orjson.OPT_INDENT_2))
        sys.stdout.write("\n")
        return
    sys.stdout.write(_table(jobs))


@queue.command("retry")
@click.argument("job_ids", type=int, nargs=-1)
@click.option("--all-dead", is_flag=True, help="Retry every dead job.")
@click.option("--db", "db_path", type=click.Path(dir_okay=False), default=str(DEFAULT_DB), help=_DB_HELP)
def retry_jobs(job_ids: tuple[int, ...], all_dead: bool, db_path: str) -> None:
    """Put dead jobs (JOB_ID ... or --all-dead) back in the queue with a fresh set of attempts."""
    if bool(job_ids) == all_dead:
        raise UsageError("Give job ids or --all-dead (not both).")
    retried = JobQueue(db_path, create=False).retry(job_ids, all_dead=all_dead)
    if retried:
        sys.stdout.write(f"Re-queued {len(retried)} job(s): {', '.join(map(str, retried))}\n")
    else:
        sys.stdout.write("No dead jobs.\n")


def _table(jobs: list[Job]) -> str:
    headers = ("ID", "KIND", "RESOURCE", "STATE", "ATTEMPTS", "NEXT ATTEMPT", "LAST ERROR")
    rows = [
        (
            str(job.id),
            job.kind,
            job.reference or "-",
            job.state,
            str(job.attempts),
            iso(job.next_attempt_at) or "-",
            (job.last_error or "-").replace("\n", " "),
        )
        for job in jobs
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])) + "  " + row[-1] for row in [headers, *rows]
    ]
    if not rows:
        lines.append("(no jobs)")
    return "\n".join(lines) + "\n"
