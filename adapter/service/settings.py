"""What `facet-adapter serve` is configured with; `create_app` takes one of these."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..model import Use
from .queue import RetryPolicy

MIB = 1024 * 1024
DEFAULT_DB = Path("facet-adapter-queue.sqlite")


@dataclass(frozen=True, slots=True)
class Settings:
    fhir_base: str  # the FHIR server notifications come from and Claims go to
    db_path: Path = DEFAULT_DB
    token: str | None = None  # required as `Authorization: Bearer …` on /notify*, /claim, /check
    fhir_token: str | None = None  # sent to the FHIR server
    payer: str | None = None
    use: Use = "claim"
    max_notify_bytes: int = 5 * MIB  # a notification carries at most one resource or a small Bundle
    max_api_bytes: int = 32 * MIB  # /claim and /check take a patient's whole record
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    lease_seconds: float = 900.0  # longer than one sync can take with the client's own retries
    poll_seconds: float = 1.0
    keep_done_seconds: float = 30 * 86400.0
