"""The default job handler: bring the FHIR server's Claim up to date with `adapter.server.sync`.

- A resource job syncs that resource's session: a Procedure as a claim, a ServiceRequest as a
  prior-authorization request. The handler reads the current version from the server, so an old
  or partial notification body never matters.
- A re-query job (an empty ping, or a Backport notification with empty content) syncs every
  session whose facet Procedures (ServiceRequests with `--use preauthorization`) changed since
  the watermark: the start of the last successful re-query (at first, when the queue was
  created), less a few minutes for clock skew between this host and the server. A wider window
  costs only idempotent re-syncs.
- A focus that is not (or no longer) a billable facet procedure (`NoFacetProcedureError`: not
  completed yet, deleted, not a facet code) is not a failure: a Subscription fires for every
  status change, so the job is done with a note instead of filling the dead-letter list. Other
  input errors (invalid R4, no date of service) go to the dead-letter list for a person.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING

from ..errors import NoFacetProcedureError
from ..model import Use
from ..pipeline import Options
from .queue import Job, JobQueue, iso
from .settings import Settings

if TYPE_CHECKING:
    from ..fhir.client import FhirClient
    from ..server.sync import SyncOutcome

CLOCK_SKEW_SECONDS = 600.0


class SyncHandler:
    """Builds the FHIR client on first use, so the service starts (and takes notifications)
    whether or not the FHIR server is up. The client is built as `sync` builds it, from the same
    options (`Settings.fhir_server`): bearer token or SMART Backend Services, timeout, retries."""

    def __init__(self, settings: Settings, queue: JobQueue) -> None:
        self.settings = settings
        self.queue = queue
        self.options = Options(payer=settings.payer, use=settings.use)
        self._client: FhirClient | None = None
        self._lock = threading.Lock()

    def client(self) -> FhirClient:
        with self._lock:
            if self._client is None:
                from ..fhir.client import make_client

                self._client = make_client(self.settings.fhir_server)
            return self._client

    def __call__(self, job: Job) -> str | None:
        from ..server.sync import sync_procedure, sync_since

        if job.kind == "requery":
            started = self.queue.clock()
            mark = self.queue.watermark() or self.queue.created_at()
            since = iso(mark - CLOCK_SKEW_SECONDS) or ""
            outcomes = sync_since(self.client(), since, self.options)
            self.queue.set_watermark(started)
            failed = sum(1 for o in outcomes if o.error is not None)
            return f"re-query since {since}: {len(outcomes)} session(s), {failed} not claimable"
        reference = job.reference
        if reference is None:
            raise ValueError("a resource job without a resource reference")
        use: Use = "preauthorization" if job.resource_type == "ServiceRequest" else "claim"
        options = dataclasses.replace(self.options, use=use)
        try:
            outcome = sync_procedure(self.client(), reference, options)
        except NoFacetProcedureError as exc:
            return f"nothing to claim: {exc.message}"
        return _note(outcome)


def _note(outcome: SyncOutcome) -> str:
    """Claim id, action, status, lines and rule ids: codes and ids only."""
    parts = [f"Claim/{outcome.claim_id} {outcome.claim_action}"]
    if outcome.claim_status:
        parts.append(outcome.claim_status)
    if outcome.lines:
        parts.append(" ".join(outcome.lines))
    rules = sorted({finding.rule_id for finding in outcome.findings})
    if rules:
        parts.append("rules " + ", ".join(rules))
    if outcome.task_id and outcome.task_action != "none":
        parts.append(f"Task/{outcome.task_id} {outcome.task_action}")
    return "; ".join(parts)
