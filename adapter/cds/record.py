"""The record a hook call is answered from (docs/cds-hooks.md, prefetch and the EHR's FHIR server).

The draft orders of the context, then what the prefetch carries. A prefetch key the EHR left out,
answered with an OperationOutcome, or sent as a partial page, is read from `fhirServer` with the
`fhirAuthorization` token, by the server `gather` (the same searches `sync` makes), but only from a
FHIR base the operator allows (`--cds-allowed-fhir-base`) and with the limits `sync` has. When the
data can be neither prefetched nor read, the call is answered HTTP 412 (`PrefetchMissing`); when
the server fails while it is read, the answer says so per order (`Record.problem`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import FhirError
from ..fhir.auth import AuthOptions
from ..fhir.client import ServerOptions, make_client
from ..server.gather import date_of, gather_around
from .discovery import PrefetchKey, prefetch_keys
from .request import HookCall

log = logging.getLogger(__name__)


class PrefetchMissing(Exception):
    """Required prefetch is missing and cannot be read: HTTP 412."""

    def __init__(self, message: str, keys: Sequence[str]) -> None:
        super().__init__(message)
        self.message = message
        self.keys = list(keys)

    def to_operation_outcome(self) -> dict[str, Any]:
        return {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": "incomplete",
                    "details": {"text": self.message},
                    "expression": [f"prefetch.{key}" for key in self.keys],
                }
            ],
        }


@dataclass(frozen=True, slots=True)
class ServerAccess:
    """How the service may reach an EHR's FHIR server: the allowed bases, and `sync`'s limits."""

    allowed_bases: tuple[str, ...] = ()
    timeout: float = 30.0
    retries: int = 4

    def allows(self, base: str) -> bool:
        return base.rstrip("/") in {allowed.rstrip("/") for allowed in self.allowed_bases}


@dataclass(slots=True)
class Record:
    resources: list[dict[str, Any]]  # the draft orders first; one resource per Type/id
    problem: str | None = None  # the EHR's FHIR server failed: what is known is incomplete
    coverages: list[dict[str, Any]] = field(default_factory=list)  # the Coverages at hand, for error answers


def required_keys(call: HookCall) -> list[PrefetchKey]:
    """The prefetch keys the context can fill (the Encounter's only with an encounterId)."""
    return [key for key in prefetch_keys() if key.needs == "patientId" or call.encounter_id is not None]


def from_prefetch(call: HookCall) -> tuple[list[dict[str, Any]], set[str], list[str]]:
    """The prefetched resources, the resource types they settle, and the required keys missing."""
    resources: list[dict[str, Any]] = []
    settled: set[str] = set()
    missing: list[str] = []
    for key in required_keys(call):
        if key.key not in call.prefetch:
            missing.append(key.key)
            continue
        value = call.prefetch[key.key]
        if value is None:  # the EHR has no data for it
            settled.add(key.type)
            continue
        found = _resources_of(value)
        if found is None:
            missing.append(key.key)
            continue
        resources.extend(found)
        settled.add(key.type)
    return resources, settled, missing


def _resources_of(value: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """A prefetched resource or searchset; None when it says the EHR could not fill it (an
    OperationOutcome with an error) or is one page of several."""
    if value.get("resourceType") == "OperationOutcome":
        return None
    if value.get("resourceType") != "Bundle":
        return [dict(value)]
    links = value.get("link")
    if isinstance(links, list) and any(isinstance(link, dict) and link.get("relation") == "next" for link in links):
        return None
    found: list[dict[str, Any]] = []
    for entry in value.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        if resource.get("resourceType") == "OperationOutcome":
            if any(
                isinstance(issue, dict) and issue.get("severity") in ("error", "fatal")
                for issue in resource.get("issue") or []
            ):
                return None
            continue
        found.append(resource)
    return found


def prefetched_coverages(call: HookCall) -> list[dict[str, Any]]:
    """The Coverages the prefetch holds (what an answer can name when nothing else worked)."""
    return [r for r in from_prefetch(call)[0] if r.get("resourceType") == "Coverage"]


def assemble(call: HookCall, focuses: Sequence[Mapping[str, Any]], access: ServerAccess) -> Record:
    """The record for the facet orders `focuses` (draft ServiceRequests of the call)."""
    drafts = list(call.orders)
    prefetched, settled, missing = from_prefetch(call)
    coverages = [r for r in prefetched if r.get("resourceType") == "Coverage"]
    if not missing:
        return Record(_unique([*drafts, *prefetched]), coverages=coverages)
    names = ", ".join(missing)
    if call.fhir_server is None:
        raise PrefetchMissing(
            f"Prefetch {names} is missing and the request has no fhirServer to read it from.", missing
        )
    if not access.allows(call.fhir_server):
        # The token is never sent to a server the operator did not allow.
        raise PrefetchMissing(
            f"Prefetch {names} is missing and fhirServer is not a FHIR base this service may read "
            "(--cds-allowed-fhir-base).",
            missing,
        )
    options = ServerOptions(
        call.fhir_server, AuthOptions(bearer_token=call.access_token), access.timeout, access.retries
    )
    known = [*drafts, *prefetched]
    gathered: list[dict[str, Any]] = []
    try:
        with make_client(options) as client:
            # One gather per date of service: the history window and the Encounters of the day follow it.
            for focus in _one_per_date(focuses):
                gathered.extend(gather_around(client, focus, known=known, have=settled))
    except FhirError as exc:
        log.warning(
            "hook %s: reading prefetch %s from the FHIR server failed (%s)",
            call.log_id,
            names,
            type(exc).__name__,
        )
        return Record(_unique(known), problem=exc.message, coverages=coverages)
    resources = _unique([*known, *gathered])
    log.info("hook %s: read prefetch %s from the FHIR server", call.log_id, names)
    return Record(resources, coverages=[r for r in resources if r.get("resourceType") == "Coverage"])


def _one_per_date(focuses: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    chosen: dict[object, Mapping[str, Any]] = {}
    for focus in focuses:
        chosen.setdefault(date_of(focus), focus)
    return list(chosen.values())


def _unique(resources: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One resource per Type/id, the first seen (a draft order wins over a stored copy)."""
    seen: dict[str, dict[str, Any]] = {}
    for resource in resources:
        type_, id_ = resource.get("resourceType"), resource.get("id")
        if isinstance(type_, str) and isinstance(id_, str):
            seen.setdefault(f"{type_}/{id_}", dict(resource))
    return list(seen.values())
