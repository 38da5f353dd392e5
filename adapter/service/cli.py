"""`facet-adapter serve` and `facet-adapter queue list|retry` (loaded lazily by `adapter.cli`)."""

from __future__ import annotations

import gc
import logging
import os
import re
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click
import orjson

from ..cds.options import cds_options, cds_settings_from
from ..errors import UsageError
from ..fhir.auth import build_auth
from ..model import Use
from ..review.cli import review_options, review_settings_from
from ..server.options import fhir_server_options, hook_token_option, server_options_from
from .notifications import valid_id
from .queue import STATES, Job, JobQueue, QueueError, QueueLock, RetryPolicy, State, iso
from .settings import DEFAULT_DB, DEFAULT_SYNC_DEADLINE_SECONDS, HOOK_TOKEN_ENV, MIB, Settings, check_fhir_base

if TYPE_CHECKING:
    import uvicorn

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")


class _Duration(click.ParamType[float | None]):
    """`30s`, `10m`, `1h` or seconds; `0` or `off` turn the thing off (None)."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float | None:
        if value is None or isinstance(value, float):
            return value
        text = str(value).strip().lower()
        if text in ("off", "never", "no"):
            return None
        match = _DURATION_RE.match(text)
        if match is None:
            self.fail(f"{value!r} is not a duration such as 30s, 10m or 1h (or off).", param, ctx)
        seconds = float(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2] or "s"]
        return seconds or None


DURATION = _Duration()

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
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Sync workers: patients synced at once (one patient's jobs always one at a time, in order).",
)
@click.option(
    "--sync-deadline",
    type=click.FloatRange(1.0),
    default=DEFAULT_SYNC_DEADLINE_SECONDS,
    show_default=True,
    help="Seconds one job may spend on FHIR server requests, retries included; then it fails and is retried.",
)
@click.option(
    "--reconcile-every",
    type=DURATION,
    default="10m",
    show_default=True,
    help="Sweep for facet Procedures changed since the last sweep that have no current Claim (a notification "
    "the server gave up on), and check the Subscriptions: e.g. 30s, 10m, 1h; 0 or off: never.",
)
@click.option(
    "--subscription",
    "subscription_ids",
    multiple=True,
    help="A Subscription id this service serves (repeatable; `subscribe --db` records its own). Once any is "
    "known, Backport notifications for other Subscriptions are refused.",
)
@cds_options()
@review_options()
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
    workers: int,
    sync_deadline: float,
    reconcile_every: float | None,
    subscription_ids: tuple[str, ...],
    **fhir_options: Any,
) -> None:
    """Receive FHIR Subscription notifications at http://HOST:PORT/notify and serve /claim and /check.

    Notified procedures are synced with the FHIR server at --fhir-base, authenticated as `sync`
    is (--fhir-token or the SMART Backend Services options)."""
    import uvicorn

    from ..pipeline import Options, validate_options
    from .apart import available as apart_available
    from .app import create_app

    cds = cds_settings_from(fhir_options, host=host, port=port)  # the CDS Hooks service (docs/cds-hooks.md)
    review = review_settings_from(fhir_options)  # the /review worklist (docs/server.md)
    fhir = server_options_from(**fhir_options)
    fhir_base = check_fhir_base(fhir.base_url, "--fhir-base")
    if hook_token is not None and not hook_token.strip():
        raise UsageError("--hook-token must not be empty.")
    build_auth(fhir.auth)  # a bad SMART key or an incomplete set of options is exit 2 now, not a failed job later
    chosen = cast(Use, use)  # click.Choice has checked it
    validate_options(Options(payer=payer.lower() if payer else None, use=chosen))
    for subscription_id in subscription_ids:
        if not valid_id(subscription_id):
            raise UsageError(f"--subscription {subscription_id!r} is not a FHIR id (letters, digits, - and .).")
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
        workers=workers,
        sync_deadline=sync_deadline,
        # A job holds its lease for its whole deadline, with room to record the outcome.
        lease_seconds=max(900.0, 2 * sync_deadline),
        reconcile_seconds=reconcile_every,
        subscriptions=tuple(subscription_ids),
        cds=cds,
        review=review,
    )
    with usable_queue(settings.db_path) as queue:
        # On Linux the sync workers run in a process of their own (adapter.service.apart).
        app = create_app(settings, queue=queue, apart=apart_available())
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,  # use the adapter's logging setup
            access_log=False,  # its lines carry raw paths and query strings; the app logs route templates
            # The peer address is the one that connected: /review decides itself which proxies'
            # X-Forwarded-* headers it believes (--review-trusted-proxy).
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=10,
        )

        if hook_token is None:
            # A warning about the configuration, before the start; "listening on" comes once bound.
            where = "" if host in ("127.0.0.1", "localhost", "::1") else f" on {host}"
            sys.stderr.write(
                f"facet-adapter serve: warning: listening{where} without --token ({HOOK_TOKEN_ENV} is not set); "
                "anyone who can reach the port can queue notifications and call /claim and /check\n"
            )
            sys.stderr.flush()

        def listening() -> None:
            sys.stderr.write(
                f"facet-adapter serve: listening on http://{host}:{port}/notify "
                f"(queue {settings.db_path}, {workers} worker(s))\n"
            )
            if cds.enabled:
                sys.stderr.write(f"facet-adapter serve: CDS Hooks discovery at {cds.base_url}/cds-services\n")
            if review.enabled:
                sys.stderr.write(f"facet-adapter serve: review worklist at http://{host}:{port}/review\n")
            sys.stderr.flush()

        # The event loop that answers notifications shares the interpreter lock with the sync
        # workers: hand it over every millisecond (not every 5), so a notification's answer does
        # not queue behind the workers' coding.
        sys.setswitchinterval(0.001)
        # What start-up built (modules, schemas, rule packs: some 70,000 objects) lives as long as
        # the process; frozen, a full garbage collection no longer walks it (25 ms idle, up to 55
        # ms under load, with the interpreter lock held and notifications waiting).
        gc.collect()
        gc.freeze()
        server = _server(config, listening)
        try:
            server.run()
        except SystemExit:
            # uvicorn exits with 1 when it cannot bind; 1 means "claim held" in this CLI.
            raise UsageError(f"Could not listen on {host}:{port} (in use, or not an address of this host).") from None
        if not server.started:
            raise UsageError(f"The service did not start on {host}:{port}; see the log above.")


def _server(config: uvicorn.Config, on_listening: Callable[[], None]) -> uvicorn.Server:
    """uvicorn's server that says it is listening once the socket is bound, not before (uvicorn
    is imported here: `queue list` does not need it)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                on_listening()

    return Server(config)


@contextmanager
def usable_queue(db_path: Path) -> Iterator[JobQueue]:
    """The queue at `db_path`, opened and locked; a path that cannot be created, opened or written
    is a usage error (exit 2) naming it."""
    try:
        lock = QueueLock(db_path)
        lock.acquire()
    except OSError as exc:
        raise UsageError(f"The queue database {db_path} cannot be used: {exc.strerror or exc}.") from None
    try:
        try:
            queue = JobQueue(db_path)
            queue.counts()
        except OSError as exc:
            raise UsageError(f"The queue database {db_path} cannot be used: {exc.strerror or exc}.") from None
        except QueueError as exc:
            raise UsageError(f"The queue database {db_path} cannot be used: {exc.message}") from None
        yield queue
    finally:
        lock.release()


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
