"""What the jobs of `adapter.service.subscriptions` do: check a Subscription, recover the events
it lost, sweep for Procedures whose notification never came.

- **check**: read the Subscription (its status and heartbeat period) and, for a Backport one,
  `$status` (its event count) where the server offers it. A Subscription in `error` or `off` is
  re-activated (updated with status `requested`, as `subscribe` does; its channel, header
  included, is sent back as read). A count past the last event seen is recovered at once.
- **recovery**: `Subscription/{id}/$events` for the missing numbers where the server offers it;
  otherwise a search of facet Procedures by `_lastUpdated` since the last event seen (less the
  clock-skew allowance). Either way the Procedures found are queued as resource jobs, in their
  patient's lane, with the same dedupe key a notification would have had.
- **sweep** (`--reconcile-every`): facet Procedures by `_lastUpdated` since the last sweep; each
  one that no open Claim of this adapter bills (or only one older than the Procedure) is queued.
  A rest-hook server that gave up on a delivery leaves no other trace. Then every Subscription
  the service knows of is checked.

Every job is idempotent: a Procedure version already queued is not queued again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from ..errors import FhirError, FhirNotFound, FhirProtocolError, FhirRequestRejected, FhirServerError
from ..fhir.client import FhirClient
from ..fhir.values import reference_of
from ..read.uses import facet_code_tokens
from ..server.retire import billed_procedures, is_ours
from .notifications import parse_notification_bundle, patient_lane
from .queue import Job, JobQueue, Notice, iso
from .settings import CLOCK_SKEW_SECONDS
from .subscriptions import INACTIVE_STATUSES, Subscriptions, check_notice
from .web import ServiceError

log = logging.getLogger(__name__)

# 4xx answers that say "this server has no such operation" rather than "this request was wrong".
_NOT_OFFERED = frozenset({400, 404, 405, 501})
_CLAIM_BATCH = 50


def _parameter(parameters: Sequence[Any], name: str) -> Any:
    for parameter in parameters:
        if isinstance(parameter, dict) and parameter.get("name") == name:
            for key, value in parameter.items():
                if key.startswith("value"):
                    return value.get("reference") if isinstance(value, dict) else value
    return None


def _offers(client: FhirClient, operation: str) -> bool:
    """Whether the CapabilityStatement lists `Subscription/$operation`."""
    try:
        statement = client.capabilities()
    except FhirError:
        return False
    for rest in statement.get("rest") or []:
        for resource in rest.get("resource") or [] if isinstance(rest, dict) else []:
            if isinstance(resource, dict) and resource.get("type") == "Subscription":
                names = {str(op.get("name", "")).lstrip("$") for op in resource.get("operation") or []}
                return operation in names
    return False


def is_backport(subscription: Mapping[str, Any]) -> bool:
    profiles = (subscription.get("meta") or {}).get("profile") or []
    if any(str(p).endswith("/backport-subscription") for p in profiles):
        return True
    criteria = str(subscription.get("criteria") or "")
    return "://" in criteria.split("?")[0]  # a topic's canonical URL, not `Procedure?...`


def heartbeat_period(subscription: Mapping[str, Any]) -> float | None:
    for extension in (subscription.get("channel") or {}).get("extension") or []:
        if isinstance(extension, dict) and str(extension.get("url", "")).endswith("/backport-heartbeat-period"):
            value = extension.get("valueUnsignedInt", extension.get("valueInteger"))
            if isinstance(value, int) and value > 0:
                return float(value)
    return None


# ------------------------------------------------------------------ check


def run_check(client: FhirClient, queue: JobQueue, subscriptions: Subscriptions, subscription_id: str) -> str:
    try:
        resource = client.read("Subscription", subscription_id)
    except FhirNotFound:
        subscriptions.update(subscription_id, status="gone", status_at=queue.clock())
        subscriptions.problem(subscription_id, "not on the server any more")
        log.warning("Subscription/%s is not on the server any more", subscription_id)
        return f"Subscription/{subscription_id}: not on the server"
    backport = is_backport(resource)
    status = str(resource.get("status") or "")
    count: int | None = None
    if backport and _offers(client, "status"):
        try:
            count, reported = _status(client, subscription_id)
            status = reported or status
        except (FhirRequestRejected, FhirServerError) as exc:
            if exc.status not in _NOT_OFFERED:
                raise
    subscriptions.update(
        subscription_id,
        channel="backport" if backport else "rest-hook",
        heartbeat_seconds=heartbeat_period(resource),
        status=status,
        status_at=queue.clock(),
    )
    notes = [f"Subscription/{subscription_id} {status}"]
    if status in INACTIVE_STATUSES:
        subscriptions.problem(subscription_id, f"found {status}; re-activating")
        stored = client.update(
            {**resource, "status": "requested"}, if_match=str((resource.get("meta") or {}).get("versionId") or "")
        )
        now_status = str(stored.get("status") or "requested")
        subscriptions.update(subscription_id, status=now_status, status_at=queue.clock())
        subscriptions.problem(subscription_id, f"re-activated (now {now_status})")
        log.warning("Subscription/%s was %s; re-activated (now %s)", subscription_id, status, now_status)
        notes.append(f"re-activated ({now_status})")
    known = subscriptions.get(subscription_id)
    last = known.last_event if known is not None else None
    if count is not None and last is not None and count > last:
        log.warning(
            "Subscription/%s: events %d to %d did not arrive; recovering them", subscription_id, last + 1, count
        )
        notes.append(
            recover(client, queue, subscriptions, subscription_id, last, count, known.last_event_at if known else None)
        )
    elif count is not None and last is None:
        subscriptions.update(subscription_id, last_event=count)
    return "; ".join(notes)


def _status(client: FhirClient, subscription_id: str) -> tuple[int | None, str | None]:
    """(events since the Subscription started, its status) from `$status`."""
    bundle = client.search_bundle(f"Subscription/{subscription_id}/$status")
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "Parameters":
            parameters = resource.get("parameter") or []
            count = _parameter(parameters, "events-since-subscription-start")
            status = _parameter(parameters, "status")
            number = int(count) if isinstance(count, int | str) and str(count).isdigit() else None
            return number, str(status) if isinstance(status, str) else None
    return None, None


# ------------------------------------------------------------------ recovery


def run_recovery(client: FhirClient, queue: JobQueue, subscriptions: Subscriptions, job: Job) -> str:
    detail = json.loads(job.detail or "{}")
    subscription_id = str(detail["subscription"])
    after = int(detail.get("after") or 0)
    until = detail.get("until")
    return recover(client, queue, subscriptions, subscription_id, after, until, detail.get("since"))


def recover(
    client: FhirClient,
    queue: JobQueue,
    subscriptions: Subscriptions,
    subscription_id: str,
    after: int,
    until: int | None,
    since: float | None,
) -> str:
    """Queue the Procedures of events `after`+1 … `until` of a Subscription."""
    span = f"events {after + 1}..{until if until is not None else ''}"
    notices: list[Notice] | None = None
    if _offers(client, "events"):
        params = [("eventsSinceNumber", str(after + 1))]
        if until is not None:
            params.append(("eventsUntilNumber", str(until)))
        try:
            bundle = client.search_bundle(f"Subscription/{subscription_id}/$events", params)
            notices = _event_notices(bundle)
            how = "$events"
        except (FhirRequestRejected, FhirServerError) as exc:
            if exc.status not in _NOT_OFFERED:
                raise
            log.info("Subscription/%s/$events answered %s; searching by _lastUpdated", subscription_id, exc.status)
    if notices is None:
        start = (since if since is not None else queue.created_at()) - CLOCK_SKEW_SECONDS
        notices = [_resource_notice(r, "recovery") for r in _changed_procedures(client, start)]
        how = f"_lastUpdated since {iso(start)}"
    queued = queue.enqueue(notices, busy_seconds=30.0) if notices else []
    if until is not None:
        subscriptions.update(subscription_id, last_event=until)
    created = sum(1 for q in queued if q.created)
    log.info("Subscription/%s %s recovered by %s: %d job(s) queued", subscription_id, span, how, created)
    return f"Subscription/{subscription_id} {span} by {how}: {len(notices)} resource(s), {created} queued"


def _event_notices(bundle: dict[str, Any]) -> list[Notice]:
    """The resource notices of a `$events` answer: one notification Bundle (query-event), or a
    Bundle of them."""
    bundles = [bundle]
    if bundle.get("type") != "history":
        bundles = [
            e["resource"]
            for e in bundle.get("entry") or []
            if isinstance(e, dict) and isinstance(e.get("resource"), dict) and e["resource"].get("type") == "history"
        ]
    notices: list[Notice] = []
    for each in bundles:
        try:
            parsed = parse_notification_bundle(each, orjson.dumps(each))
        except ServiceError as exc:
            raise FhirProtocolError(
                f"The server's $events answer is not a notification Bundle: {exc.message}"
            ) from None
        # The dedupe keys are the ones the lost notifications would have had.
        notices += [dataclasses.replace(n, source="recovery") for n in parsed.notices if n.kind == "resource"]
    return notices


def _resource_notice(resource: Mapping[str, Any], source: str) -> Notice:
    type_, id_ = str(resource["resourceType"]), str(resource["id"])
    version = (resource.get("meta") or {}).get("versionId")
    version = str(version) if version else None
    updated = (resource.get("meta") or {}).get("lastUpdated")
    key = f"{type_}/{id_}/_history/{version}" if version else f"{type_}/{id_}@{updated}"
    return Notice(
        kind="resource",
        source=source,
        resource_type=type_,
        resource_id=id_,
        version=version,
        dedupe_key=key,
        lane=patient_lane(dict(resource)),
    )


def _changed_procedures(client: FhirClient, start: float, use: str = "claim") -> list[dict[str, Any]]:
    preauth = use == "preauthorization"
    type_ = "ServiceRequest" if preauth else "Procedure"
    params = [
        ("code", facet_code_tokens()),
        ("_lastUpdated", f"ge{iso(start)}"),
        ("status", "active,draft" if preauth else "completed"),
        ("_count", "100"),
    ]
    return [r for r in client.search(type_, params) if r.get("resourceType") == type_ and isinstance(r.get("id"), str)]


# ------------------------------------------------------------------ sweep


def run_sweep(client: FhirClient, queue: JobQueue, subscriptions: Subscriptions, use: str) -> str:
    started = queue.clock()
    mark = queue.watermark("sweep_watermark") or queue.created_at()
    start = mark - CLOCK_SKEW_SECONDS
    changed = _changed_procedures(client, start, use)
    by_patient: dict[str, list[dict[str, Any]]] = {}
    for resource in changed:
        patient = client.relative(reference_of(resource.get("subject")) or "")
        by_patient.setdefault(patient, []).append(resource)
    claims = _open_claims(client, [p for p in by_patient if p.startswith("Patient/")], use)
    missing: list[Notice] = []
    for patient, procedures in by_patient.items():
        for procedure in procedures:
            if not _billed_since_changed(client, procedure, claims.get(patient, [])):
                missing.append(_resource_notice(procedure, "sweep"))
    queued = queue.enqueue(missing, busy_seconds=30.0) if missing else []
    created = [q for q in queued if q.created]
    checks = [check_notice(s.id) for s in subscriptions.all()]
    if checks:
        queue.enqueue(checks, busy_seconds=30.0)
    queue.set_watermark(started, "sweep_watermark")
    if created:
        log.warning("sweep: %d Procedure(s) without a current Claim queued", len(created))
    return (
        f"sweep since {iso(start)}: {len(changed)} changed, {len(missing)} without a current Claim, "
        f"{len(created)} queued; {len(checks)} Subscription check(s)"
    )


def _open_claims(client: FhirClient, patients: Sequence[str], use: str) -> dict[str, list[dict[str, Any]]]:
    """The active Claims (of `use`) of each patient, in batches where the server offers them."""
    found: dict[str, list[dict[str, Any]]] = {p: [] for p in patients}

    def params(patient: str) -> list[tuple[str, str]]:
        return [("patient", patient), ("use", use), ("status", "active"), ("_count", "100")]

    batch = client.supports_batch()
    for start in range(0, len(patients), _CLAIM_BATCH):
        chunk = list(patients[start : start + _CLAIM_BATCH])
        answers = client.batch_get([("Claim", params(p)) for p in chunk]) if batch else [(0, None)] * len(chunk)
        for patient, (status, bundle) in zip(chunk, answers, strict=True):
            if status == 200 and bundle is not None and not _has_more(bundle):
                found[patient] = list(_resources(bundle.get("entry") or [], "Claim"))
            else:
                found[patient] = list(client.search("Claim", params(patient)))
    return found


def _has_more(bundle: Mapping[str, Any]) -> bool:
    entries = bundle.get("entry") or []
    total = bundle.get("total")
    linked = any(isinstance(link, dict) and link.get("relation") == "next" for link in bundle.get("link") or [])
    return linked or (isinstance(total, int) and total > len(entries)) or len(entries) >= 100


def _resources(entries: Iterable[Any], type_: str) -> Iterable[dict[str, Any]]:
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == type_:
            yield resource


def _instant(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _billed_since_changed(
    client: FhirClient, procedure: Mapping[str, Any], claims: Sequence[Mapping[str, Any]]
) -> bool:
    """An open Claim of this adapter bills the Procedure and was written after its last change."""
    key = f"{procedure['resourceType']}/{procedure['id']}"
    changed = _instant((procedure.get("meta") or {}).get("lastUpdated"))
    for claim in claims:
        if claim.get("status") != "active" or not is_ours(claim):
            continue
        if key not in {client.relative(r) for r in billed_procedures(claim)}:
            continue
        written = _instant((claim.get("meta") or {}).get("lastUpdated"))
        if changed is None or written is None or written >= changed:
            return True
    return False
