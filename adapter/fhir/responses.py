"""Reading a FHIR server's answers: `Location` and `ETag` headers, transaction-response entries
(`entry_results`), OperationOutcomes, and the typed error for an answer with an error status.

Servers differ and all forms are accepted: transaction-response statuses `"201 Created"` (HAPI)
and `"201"` (Medplum), numeric or UUID version ids, relative or absolute `Location` headers with
or without `/_history/<vid>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import (
    FhirAuthError,
    FhirConflict,
    FhirError,
    FhirNotFound,
    FhirRequestRejected,
    FhirServerError,
    FhirServerUnavailable,
)
from .transport import RETRY_STATUSES, HttpResponse, parse_retry_after


@dataclass(frozen=True, slots=True)
class Location:
    """A parsed `Location` header or transaction-response `location`."""

    type: str
    id: str
    version: str | None

    @property
    def reference(self) -> str:
        return f"{self.type}/{self.id}"


def parse_location(value: str | None) -> Location | None:
    """`Type/id[/_history/vid]`, relative or absolute (HAPI sends absolute, Medplum relative)."""
    if not value:
        return None
    parts = (
        urlsplit(value).path.rstrip("/").split("/") if "://" in value else value.split("?")[0].rstrip("/").split("/")
    )
    version = None
    if len(parts) >= 4 and parts[-2] == "_history":
        version = parts[-1]
        parts = parts[:-2]
    if len(parts) < 2 or not parts[-2][:1].isupper() or not parts[-1]:
        return None
    return Location(parts[-2], parts[-1], version)


def parse_status(value: Any) -> int | None:
    """`"201 Created"` (HAPI), `"201"` (Medplum) or 201 → 201."""
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        return None
    head = value.strip().split(" ", 1)[0]
    return int(head) if head.isdigit() else None


def parse_etag(value: str | None) -> str | None:
    """`W/"3"`, `"3"` or `3` → `3`; UUID version ids alike."""
    if not value:
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    return text.strip('"') or None


@dataclass(frozen=True, slots=True)
class EntryResult:
    """One entry of a transaction/batch response."""

    status: int | None
    location: Location | None
    etag: str | None
    resource: dict[str, Any] | None
    outcome: dict[str, Any] | None

    @property
    def created(self) -> bool:
        return self.status == 201

    @property
    def version(self) -> str | None:
        if self.location is not None and self.location.version:
            return self.location.version
        if self.etag:
            return self.etag
        meta = self.resource.get("meta") if self.resource else None
        return meta.get("versionId") if isinstance(meta, dict) else None

    @property
    def id(self) -> str | None:
        if self.location is not None:
            return self.location.id
        return self.resource.get("id") if self.resource else None


def entry_results(response_bundle: Mapping[str, Any]) -> list[EntryResult]:
    results = []
    for entry in response_bundle.get("entry") or []:
        response = entry.get("response") if isinstance(entry, dict) else None
        response = response if isinstance(response, dict) else {}
        resource = entry.get("resource") if isinstance(entry, dict) else None
        outcome = response.get("outcome") if isinstance(response.get("outcome"), dict) else None
        results.append(
            EntryResult(
                status=parse_status(response.get("status")),
                location=parse_location(response.get("location")),
                etag=parse_etag(response.get("etag")),
                resource=resource if isinstance(resource, dict) else None,
                outcome=outcome,
            )
        )
    return results


def outcome_errors(outcome: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The error and fatal issues of an OperationOutcome."""
    if not outcome:
        return []
    issues = outcome.get("issue")
    return [
        i
        for i in (issues if isinstance(issues, list) else [])
        if isinstance(i, dict) and i.get("severity") in ("error", "fatal")
    ]


def answered(response: HttpResponse) -> str:
    """`404 (application/fhir+json)`: what the server answered, for messages."""
    return f"{response.status} ({response.content_type or 'no content type'})"


def status_error(response: HttpResponse, *, method: str, request: str, path: str, base_url: str) -> FhirError:
    """The typed error for an answer with an error status. `request` is the request as shown in
    messages (`GET Patient?identifier`: query parameter names only), `path` without the query."""
    status = response.status
    body = response.json()
    outcome = body if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome" else None
    message = f"The FHIR server at {base_url} answered {answered(response)} to {request}."
    kwargs: dict[str, Any] = {
        "status": status,
        "outcome": outcome,
        "method": method,
        "path": path,
        "base_url": base_url,
        "content_type": response.content_type,
    }
    if status in (401, 403):
        return FhirAuthError(message, **kwargs)
    if status in (404, 410):
        return FhirNotFound(message, **kwargs)
    if status in (409, 412):
        return FhirConflict(message, **kwargs)
    if status in RETRY_STATUSES:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return FhirServerUnavailable(message, retry_after=retry_after, **kwargs)
    if status >= 500:
        return FhirServerError(message, **kwargs)
    return FhirRequestRejected(message, **kwargs)
