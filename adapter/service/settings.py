"""What `facet-adapter serve` is configured with; `create_app` takes one of these."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ..cds.settings import CdsSettings
from ..errors import UsageError
from ..fhir.auth import AuthOptions
from ..fhir.client import ServerOptions
from ..model import Use
from ..review.settings import ReviewSettings
from ..server.options import HOOK_TOKEN_ENV
from .queue import RetryPolicy

__all__ = ["CLOCK_SKEW_SECONDS", "DEFAULT_DB", "HOOK_TOKEN_ENV", "MIB", "Settings", "check_fhir_base"]

MIB = 1024 * 1024
DEFAULT_DB = Path("facet-adapter-queue.sqlite")
# Re-queries and sweeps search from their watermark less this much: this host's clock and the
# server's may differ, and a wider window costs only idempotent re-syncs.
CLOCK_SKEW_SECONDS = 600.0
DEFAULT_RECONCILE_SECONDS = 600.0
DEFAULT_SYNC_DEADLINE_SECONDS = 120.0


def check_fhir_base(value: str, option: str = "The FHIR base URL") -> str:
    """`http(s)://host[:port][/path]`, without credentials, query or fragment; returned without
    a trailing slash. Anything else is a UsageError now rather than a failed job per notification."""
    example = "e.g. http://127.0.0.1:8080/fhir"
    text = value.strip()
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError for a port that is not a number in 0..65535
    except ValueError:
        raise UsageError(f"{option} is not a valid URL; give http(s)://host[:port]/path, {example}.") from None
    problem = None
    if parts.scheme not in ("http", "https"):
        problem = "must start with http:// or https://"
    elif not parts.hostname:
        problem = "has no host"
    elif port == 0:
        problem = "has port 0"
    elif parts.username is not None or parts.password is not None:
        problem = "must not carry credentials (use --fhir-token)"
    elif parts.query or parts.fragment or text.endswith(("?", "#")):
        problem = "must not have a query or fragment"
    elif any(c.isspace() for c in text):
        problem = "must not contain spaces"
    if problem:
        raise UsageError(f"{option} {problem}; give http(s)://host[:port]/path, {example}.")
    return text.rstrip("/")


@dataclass(frozen=True, slots=True)
class Settings:
    fhir_base: str  # the FHIR server notifications come from and Claims go to
    db_path: Path = DEFAULT_DB
    token: str | None = None  # the hook token: required as `Authorization: Bearer …` on /notify*, /claim, /check
    fhir_auth: AuthOptions = field(default_factory=AuthOptions)  # how to authenticate to the FHIR server
    fhir_timeout: float = 30.0  # read timeout of a request to the FHIR server
    fhir_retries: int = 4
    payer: str | None = None
    use: Use = "claim"
    max_notify_bytes: int = 5 * MIB  # a notification carries at most one resource or a small Bundle
    max_api_bytes: int = 32 * MIB  # /claim and /check take a patient's whole record
    max_api_concurrency: int = 4  # /claim and /check requests at once; more are answered 503
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    lease_seconds: float = 900.0  # longer than one sync can take (its deadline) with room to spare
    poll_seconds: float = 1.0
    keep_done_seconds: float = 30 * 86400.0
    workers: int = 1  # sync worker threads
    sync_deadline: float = DEFAULT_SYNC_DEADLINE_SECONDS  # one job's requests to the FHIR server, retries included
    reconcile_seconds: float | None = DEFAULT_RECONCILE_SECONDS  # the rest-hook sweep; None: off
    subscriptions: tuple[str, ...] = ()  # Subscription ids given with --subscription
    cds: CdsSettings = field(default_factory=CdsSettings)  # the CDS Hooks service (docs/cds-hooks.md)
    review: ReviewSettings = field(default_factory=ReviewSettings)  # the /review worklist (docs/server.md)

    @property
    def fhir_server(self) -> ServerOptions:
        """The FHIR server as `adapter.fhir.client.make_client` takes it (as `sync` builds it)."""
        return ServerOptions(self.fhir_base, self.fhir_auth, self.fhir_timeout, self.fhir_retries)
