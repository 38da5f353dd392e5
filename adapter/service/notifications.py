"""Subscription notifications → queue notices.

Three shapes arrive at `/notify` (`fhir-standards.md` §4, research notes §8):

- HAPI classic rest-hook with a payload: `PUT /notify/{Type}/{id}` with the resource.
- HAPI classic rest-hook without a payload: an empty `POST /notify`, a ping that says
  "something matched"; it becomes a re-query of the server since the last watermark.
- Subscriptions Backport (R4): `POST /notify` with a history Bundle whose first entry is a
  Parameters (`backport-subscription-status-r4`); `type` handshake | heartbeat |
  event-notification | query-status | query-event, with `empty`, `id-only` or `full-resource`
  content.

Only Procedure and ServiceRequest notifications lead to work. The shape is checked strictly
(a malformed notification is answered 400 and not queued, so a broken sender is noticed), the
content loosely: nothing in a body other than types, ids and version ids is kept.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from .. import __version__
from .queue import Notice
from .web import FHIR_JSON, ServiceError

MEANINGFUL_TYPES = frozenset({"Procedure", "ServiceRequest"})
BACKPORT_TYPES = frozenset({"handshake", "heartbeat", "event-notification", "query-status", "query-event"})
_EVENT_TYPES = frozenset({"event-notification", "query-event"})
# The Subscription status codes (R4 `subscription-status`, as the Backport IG uses them). The
# value comes from the sender, so anything else is named "unknown", never echoed into logs.
SUBSCRIPTION_STATUSES = frozenset({"requested", "active", "error", "off", "entered-in-error"})

TYPE_RE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # the R4 id datatype


def valid_id(value: str) -> bool:
    """An R4 id that is also a usable path segment: `.` and `..` match the id pattern, but in a
    URL they name the folder or its parent (`Procedure/..` would become `GET {base}/`)."""
    return bool(ID_RE.match(value)) and value not in (".", "..")


# Procedure/1, Procedure/1/_history/2, http://host/fhir/Procedure/1(/_history/2)
_REFERENCE_RE = re.compile(
    r"(?:^|/)(?P<type>[A-Z][A-Za-z]{1,63})/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/(?P<version>[A-Za-z0-9\-.]{1,64}))?$"
)


@dataclass(frozen=True)
class SubscriptionNote:
    """What a Backport notification says about its Subscription (numbers and codes only)."""

    id: str
    type: str  # handshake | heartbeat | event-notification | query-status | query-event
    status: str | None  # one of SUBSCRIPTION_STATUSES, or None
    events_since: int | None  # eventsSinceSubscriptionStart
    numbers: tuple[int, ...] = ()  # the event numbers this notification carries


@dataclass
class Parsed:
    """What a notification asks for. `notices` is empty for handshakes, heartbeats and ignored
    resource types."""

    what: str  # for logs and the answer: no patient data, only shape, types and ids
    notices: list[Notice] = field(default_factory=list)
    bundle_entries: int = 0  # a Backport Bundle is answered with a transaction-response of this size
    subscription: SubscriptionNote | None = None  # Backport notifications only


def bad(message: str) -> ServiceError:
    return ServiceError(400, "invalid", message)


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson's message may quote the body; keep only the reason and position.
        reason = str(exc.msg).split(":")[0] if exc.msg else "invalid JSON"
        raise bad(f"The notification is not JSON ({reason} at line {exc.lineno}, column {exc.colno}).") from None


def _resource_type(value: Any) -> str:
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        raise bad("The notification body is not a FHIR resource (a JSON object with resourceType).")
    return str(value["resourceType"])


def _version(resource: dict[str, Any]) -> str | None:
    meta = resource.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("versionId"), str) and meta["versionId"]:
        return str(meta["versionId"])
    return None


def _last_updated(resource: dict[str, Any]) -> str | None:
    meta = resource.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("lastUpdated"), str):
        return str(meta["lastUpdated"])
    return None


def _resource_key(type_: str, id_: str, version: str | None, resource: dict[str, Any] | None, raw: bytes) -> str:
    """The same version of a resource is the same notification, whichever channel brings it.
    Without a versionId (HAPI's strip-version-ids), lastUpdated tells versions apart; without
    that, identical bytes are the same delivery."""
    if version:
        return f"{type_}/{id_}/_history/{version}"
    updated = _last_updated(resource) if resource is not None else None
    if updated:
        return f"{type_}/{id_}@{updated}"
    return f"{type_}/{id_}#sha256:{hashlib.sha256(raw).hexdigest()}"


def parse_put(type_: str, id_: str, body: bytes) -> Parsed:
    """HAPI rest-hook with payload: PUT {endpoint}/{Type}/{id}, the resource as the body."""
    if not TYPE_RE.match(type_):
        raise bad("The URL does not name a FHIR resource type (PUT /notify/{Type}/{id}).")
    if not valid_id(id_):
        raise bad("The URL's resource id is not a valid FHIR id.")
    if not body.strip():
        raise bad(f"PUT /notify/{type_}/{{id}} needs the {type_} as its body.")
    resource = _loads(body)
    declared = _resource_type(resource)
    if declared != type_:
        raise bad(f"The body is a {declared}, but the URL names {type_}.")
    if "id" not in resource:
        raise bad(f"The {type_} in the body has no id; it must match the URL.")
    if resource["id"] != id_:
        raise bad(f"The {type_}'s id in the body does not match the URL ({type_}/{id_}).")
    if type_ not in MEANINGFUL_TYPES:
        return Parsed(f"rest-hook {type_} (ignored: not a Procedure or ServiceRequest)")
    version = _version(resource)
    notice = Notice(
        kind="resource",
        source="rest-hook",
        resource_type=type_,
        resource_id=id_,
        version=version,
        dedupe_key=_resource_key(type_, id_, version, resource, body),
        lane=patient_lane(resource),
    )
    return Parsed(f"rest-hook {type_}/{id_}", [notice])


def patient_lane(resource: dict[str, Any] | None) -> str | None:
    """`Patient/x` when the resource names its patient (the queue's lane for its job)."""
    subject = resource.get("subject") if isinstance(resource, dict) else None
    reference = subject.get("reference") if isinstance(subject, dict) else None
    found = _parse_reference(reference) if isinstance(reference, str) else None
    return f"Patient/{found[1]}" if found is not None and found[0] == "Patient" else None


def parse_notification_bundle(bundle: dict[str, Any], raw: bytes) -> Parsed:
    """A Backport notification Bundle already read (e.g. one of `Subscription/$events`)."""
    return _parse_backport(bundle, raw)


def parse_post(body: bytes) -> Parsed:
    """An empty ping, or a Subscriptions Backport notification Bundle."""
    if not body.strip():
        return Parsed("ping", [Notice(kind="requery", source="ping")])
    value = _loads(body)
    declared = _resource_type(value)
    if declared != "Bundle":
        raise bad(
            f"POST /notify takes an empty body (a ping) or a Subscriptions Backport notification Bundle, "
            f"not a {declared}; rest-hook payloads are PUT to /notify/{{Type}}/{{id}}."
        )
    return _parse_backport(value, body)


@dataclass
class _Event:
    number: str | None
    focus: str | None


def _parameters(value: Any) -> list[dict[str, Any]]:
    parameters = value.get("parameter") if isinstance(value, dict) else None
    if not isinstance(parameters, list) or not all(
        isinstance(p, dict) and isinstance(p.get("name"), str) for p in parameters
    ):
        raise bad("The notification's Parameters has no well-formed parameter list.")
    return parameters


def _single(parameters: list[dict[str, Any]], name: str, value_keys: tuple[str, ...]) -> str | None:
    """The value of a 0..1 parameter (any of `value_keys`), or None when absent."""
    found = [p for p in parameters if p["name"] == name]
    if not found:
        return None
    if len(found) > 1:
        raise bad(f"The notification's Parameters has {len(found)} '{name}' parameters; at most one is allowed.")
    for key in value_keys:
        value = found[0].get(key)
        if key == "valueReference":
            value = value.get("reference") if isinstance(value, dict) else None
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)
    raise bad(f"The notification's '{name}' parameter has no {' or '.join(value_keys)}.")


def _events(parameters: list[dict[str, Any]]) -> list[_Event]:
    events = []
    for parameter in parameters:
        if parameter["name"] != "notification-event":
            continue
        parts = parameter.get("part", [])
        if not isinstance(parts, list) or not all(
            isinstance(p, dict) and isinstance(p.get("name"), str) for p in parts
        ):
            raise bad("A notification-event parameter has no well-formed parts.")
        number = _single(parts, "event-number", _NUMBER_KEYS)
        focus = _single(parts, "focus", ("valueReference",))
        events.append(_Event(number, focus))
    return events


def _parse_backport(bundle: dict[str, Any], raw: bytes) -> Parsed:
    if bundle.get("type") != "history":
        raise bad("A Subscriptions Backport (R4) notification Bundle must have type history.")
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise bad("The notification Bundle has no entries; its first entry must be the subscription status.")
    status_resource = entries[0].get("resource")
    if not isinstance(status_resource, dict) or status_resource.get("resourceType") != "Parameters":
        raise bad(
            "The notification Bundle's first entry must be a Parameters (backport-subscription-status-r4); "
            "R4B/R5 SubscriptionStatus notifications are not accepted on this R4 endpoint."
        )
    parameters = _parameters(status_resource)
    subscription = _single(parameters, "subscription", ("valueReference",))
    status = _single(parameters, "status", ("valueCode",))
    kind = _single(parameters, "type", ("valueCode",))
    missing = [name for name, v in (("subscription", subscription), ("status", status), ("type", kind)) if v is None]
    if missing:
        raise bad(f"The notification's Parameters lacks {', '.join(missing)} (each is required).")
    if kind is None or subscription is None or kind not in BACKPORT_TYPES:
        raise bad(f"Unknown notification type {kind!r}; expected one of {', '.join(sorted(BACKPORT_TYPES))}.")
    events = _events(parameters)
    count = len(entries)
    target = _parse_reference(subscription)
    if target is None or target[0] != "Subscription":
        raise bad("The notification's subscription parameter is not a Subscription reference.")
    since = _single(parameters, "events-since-subscription-start", _NUMBER_KEYS)
    note = SubscriptionNote(
        id=target[1],
        type=kind,
        status=status if status in SUBSCRIPTION_STATUSES else None,
        events_since=_number(since, "events-since-subscription-start"),
        numbers=tuple(n for n in (_number(e.number, "event-number", strict=False) for e in events) if n is not None),
    )
    if kind not in _EVENT_TYPES:
        shown = status if status in SUBSCRIPTION_STATUSES else "unknown status"
        return Parsed(f"backport {kind} ({shown})", bundle_entries=count, subscription=note)

    by_full_url: dict[str, tuple[str, str, str | None, dict[str, Any] | None]] = {}
    by_key: dict[tuple[str, str], tuple[str, str, str | None, dict[str, Any] | None]] = {}
    listed: list[tuple[str, str, str | None, dict[str, Any] | None]] = []
    for entry in entries[1:]:
        found = _entry_target(entry)
        if found is None:
            continue
        listed.append(found)
        by_key[(found[0], found[1])] = found
        if isinstance(entry.get("fullUrl"), str):
            by_full_url[entry["fullUrl"]] = found

    notices: dict[tuple[str, str], Notice] = {}
    for event in events:
        if event.focus is None:
            continue
        target = by_full_url.get(event.focus) or _parse_reference(event.focus)
        if target is None:
            raise bad(
                "A notification-event focus is not a resolvable reference (Type/id, an absolute URL or a fullUrl)."
            )
        type_, id_, version, resource = target
        if resource is None and (type_, id_) in by_key:
            # A focus written `Procedure/1` while the entry's fullUrl is absolute: the same resource.
            _, _, entry_version, resource = by_key[(type_, id_)]
            version = version or entry_version
        version = version or (_version(resource) if resource is not None else None)
        if type_ not in MEANINGFUL_TYPES:
            continue
        if version:
            key = f"{type_}/{id_}/_history/{version}"
        elif event.number is not None:
            key = f"backport|{subscription}|{event.number}|{type_}/{id_}"
        else:
            key = _resource_key(type_, id_, None, resource, raw)
        notices.setdefault((type_, id_), _notice(type_, id_, version, key, patient_lane(resource)))
    # Entries no event points at (e.g. additional context) still announce their resources.
    for type_, id_, version, resource in listed:
        if type_ in MEANINGFUL_TYPES and (type_, id_) not in notices:
            version = version or (_version(resource) if resource is not None else None)
            key = _resource_key(type_, id_, version, resource, raw)
            notices[(type_, id_)] = _notice(type_, id_, version, key, patient_lane(resource))

    has_content = any(e.focus for e in events) or bool(listed)
    if not has_content:
        # `empty` content: the notification says only that something happened; look it up.
        return Parsed(
            f"backport {kind} (empty content)", [Notice(kind="requery", source="backport")], count, subscription=note
        )
    names = ", ".join(f"{t}/{i}" for t, i in notices) or "no Procedure or ServiceRequest"
    return Parsed(f"backport {kind}: {names}", list(notices.values()), count, subscription=note)


_NUMBER_KEYS = ("valueString", "valueInteger", "valueUnsignedInt", "valueInteger64", "valueDecimal")


def _number(value: str | None, name: str, *, strict: bool = True) -> int | None:
    """An event count or number (a string in the Backport IG, an integer from some servers)."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return int(text)
    if strict:
        raise bad(f"The notification's '{name}' is not a whole number.")
    return None


def _notice(type_: str, id_: str, version: str | None, key: str, lane: str | None) -> Notice:
    return Notice(
        kind="resource",
        source="backport",
        resource_type=type_,
        resource_id=id_,
        version=version,
        dedupe_key=key,
        lane=lane,
    )


def _parse_reference(reference: str) -> tuple[str, str, str | None, dict[str, Any] | None] | None:
    match = _REFERENCE_RE.search(reference.split("?")[0])
    if match is None or not valid_id(match["id"]):
        return None
    return match["type"], match["id"], match["version"], None


def _entry_target(entry: dict[str, Any]) -> tuple[str, str, str | None, dict[str, Any] | None] | None:
    """The resource an entry carries (full-resource) or names (id-only: fullUrl / request.url)."""
    resource = entry.get("resource")
    if resource is not None:
        type_ = _resource_type(resource)
        id_ = resource.get("id")
        if isinstance(id_, str) and valid_id(id_):
            return type_, id_, _version(resource), resource
    request = entry.get("request")
    for candidate in (entry.get("fullUrl"), request.get("url") if isinstance(request, dict) else None):
        if isinstance(candidate, str):
            found = _parse_reference(candidate)
            if found is not None:
                type_, id_, version, _ = found
                return type_, id_, version, resource if isinstance(resource, dict) else None
    return None


def capability_statement(endpoint: str, started: dt.datetime, secured: bool) -> dict[str, Any]:
    """The CapabilityStatement of the notification endpoint (`GET /notify/metadata`)."""
    rest: dict[str, Any] = {
        "mode": "server",
        "documentation": (
            "Subscription notification receiver: HAPI rest-hook PUT {endpoint}/{Type}/{id} (Procedure, "
            "ServiceRequest), empty POST pings, and Subscriptions Backport R4 notification Bundles POSTed to "
            "the endpoint."
        ),
        "resource": [
            {"type": "Procedure", "interaction": [{"code": "update"}]},
            {"type": "ServiceRequest", "interaction": [{"code": "update"}]},
        ],
        "interaction": [{"code": "transaction", "documentation": "notification Bundles and pings"}],
    }
    if secured:
        rest["security"] = {"description": "Requests need Authorization: Bearer <token> (metadata is open)."}
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "publisher": "facet-adapter",
        "kind": "instance",
        "software": {"name": "facet-adapter", "version": __version__},
        "implementation": {"description": "facet-adapter Subscription notification endpoint", "url": endpoint},
        "fhirVersion": "4.0.1",
        "format": [FHIR_JSON, "json"],
        "rest": [rest],
    }
