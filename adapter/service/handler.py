"""The default job handler: bring the FHIR server's Claim up to date with `adapter.server.sync`.

- A resource job syncs that resource's session: a Procedure as a claim, a ServiceRequest as a
  prior-authorization request. The handler reads the current version from the server, so an old
  or partial notification body never matters.
- A re-query job (an empty ping, or a Backport notification with empty content) syncs every
  session whose facet Procedures (ServiceRequests with `--use preauthorization`) changed since
  the watermark: the start of the last successful re-query (at first, when the queue was
  created), less a few minutes for clock skew between this host and the server. A wider window
  costs only idempotent re-syncs.
- A check, recovery or sweep job (Subscriptions and the rest-hook sweep) is
  `adapter.service.recovery`'s.
- Each job runs within the whole-sync deadline (`--sync-deadline`): every request it makes to the
  FHIR server, retries included, ends by then, so a slow server cannot hold a worker longer.
- Each worker thread has its own client (and so its own pool of kept-alive connections).
- A focus that is not (or no longer) a billable facet procedure (`NoFacetProcedureError`: not
  completed yet, deleted, not a facet code) is not a failure: a Subscription fires for every
  status change, so the job is done with a note instead of filling the dead-letter list. Other
  input errors (invalid R4, no date of service) go to the dead-letter list for a person.
- What each sync coded (claim, status, rule ids) is recorded for the `/review` worklist
  (adapter.review.store); a `review` job is a coder's re-check, recorded as such.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import TYPE_CHECKING

from ..errors import NoFacetProcedureError
from ..model import Use
from ..pipeline import Options
from ..review.store import REVIEW_SOURCE, ReviewStore
from .queue import Job, JobQueue, iso
from .settings import CLOCK_SKEW_SECONDS, Settings
from .subscriptions import Subscriptions

if TYPE_CHECKING:
    from ..fhir.client import FhirClient
    from ..server.sync import SyncOutcome


class SyncHandler:
    """Builds the FHIR client on first use, so the service starts (and takes notifications)
    whether or not the FHIR server is up. The client is built as `sync` builds it, from the same
    options (`Settings.fhir_server`): bearer token or SMART Backend Services, timeout, retries."""

    def __init__(self, settings: Settings, queue: JobQueue, subscriptions: Subscriptions | None = None) -> None:
        self.settings = settings
        self.queue = queue
        self.subscriptions = subscriptions or Subscriptions(queue)
        self.options = Options(payer=settings.payer, use=settings.use)
        self.review = ReviewStore(queue)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[FhirClient] = []

    def client(self) -> FhirClient:
        """This thread's client."""
        client: FhirClient | None = getattr(self._local, "client", None)
        if client is None:
            from ..fhir.client import make_client

            client = make_client(self.settings.fhir_server)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients.clear()

    def __call__(self, job: Job) -> str | None:
        client = self.client()
        with client.transport.within(self.settings.sync_deadline):
            return self._run(client, job)

    def _run(self, client: FhirClient, job: Job) -> str | None:
        from ..server.sync import sync_procedure, sync_since
        from .recovery import run_check, run_recovery, run_sweep

        if job.kind == "requery" and job.source == "check":
            subscription_id = str(json.loads(job.detail or "{}")["subscription"])
            return run_check(client, self.queue, self.subscriptions, subscription_id)
        if job.kind == "requery" and job.source == "recovery":
            return run_recovery(client, self.queue, self.subscriptions, job)
        if job.kind == "requery" and job.source == "sweep":
            return run_sweep(client, self.queue, self.subscriptions, self.settings.use)
        if job.kind == "requery":
            started = self.queue.clock()
            mark = self.queue.watermark() or self.queue.created_at()
            since = iso(mark - CLOCK_SKEW_SECONDS) or ""
            outcomes = sync_since(client, since, self.options)
            for outcome in outcomes:
                self.review.record_sync(outcome)
            self.queue.set_watermark(started)
            failed = sum(1 for o in outcomes if o.error is not None)
            return f"re-query since {since}: {len(outcomes)} session(s), {failed} not claimable"
        reference = job.reference
        if reference is None:
            raise ValueError("a resource job without a resource reference")
        use: Use = "preauthorization" if job.resource_type == "ServiceRequest" else "claim"
        options = dataclasses.replace(self.options, use=use)
        try:
            outcome = sync_procedure(client, reference, options)
        except NoFacetProcedureError as exc:
            return f"nothing to claim: {exc.message}"
        rechecked_by = str(json.loads(job.detail or "{}").get("user")) if job.source == REVIEW_SOURCE else None
        self.review.record_sync(outcome, rechecked_by=rechecked_by, job_id=job.id)
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
