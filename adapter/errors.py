"""Errors as values with meaning.

Every failure the adapter reports to a user is one of these classes. The class carries the
process exit status and the FHIR issue type, so the command line, the web service and the bulk
runner all turn the same error into the same exit status / HTTP status / OperationOutcome.

Exit statuses are stable: a number is never reused for another meaning. The FHIR server's
failures (`FhirError` and its subclasses, all `UpstreamError`, exit status 4) are defined here too,
so this module is the one place that maps every error to its exit status and HTTP status.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

EXIT_OK = 0
EXIT_HELD = 1  # written, but at least one error finding: the claim is held
EXIT_INPUT = 2  # input or usage error: nothing written
EXIT_INTERNAL = 3  # a bug in the adapter: nothing written
EXIT_UPSTREAM = 4  # a FHIR server or network failure


class ErrorDetail(NamedTuple):
    """One located problem inside an error (for example one schema violation)."""

    message: str
    expression: str | None = None
    code: str = "invalid"


class AdapterError(Exception):
    """Base class. Subclasses set the exit status, the FHIR issue type and the HTTP status."""

    exit_code: ClassVar[int] = EXIT_INTERNAL
    issue_code: ClassVar[str] = "exception"
    severity: ClassVar[str] = "fatal"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, details: list[ErrorDetail] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: list[ErrorDetail] = list(details or [])

    def to_operation_outcome(self) -> dict[str, Any]:
        issues: list[dict[str, Any]] = [
            {"severity": self.severity, "code": self.issue_code, "details": {"text": self.message}}
        ]
        for detail in self.details:
            issue: dict[str, Any] = {
                "severity": "error",
                "code": detail.code,
                "details": {"text": detail.message},
            }
            if detail.expression:
                issue["expression"] = [detail.expression]
            issues.append(issue)
        return {"resourceType": "OperationOutcome", "issue": issues}


class InputError(AdapterError):
    """The input cannot be used: nothing is written."""

    exit_code = EXIT_INPUT
    issue_code = "invalid"
    http_status = 400


class NotJsonError(InputError):
    issue_code = "structure"


class InputTooLargeError(InputError):
    issue_code = "too-costly"
    http_status = 413


class NotFhirError(InputError):
    """JSON that is not FHIR R4 (no resourceType, or a type R4 does not have)."""

    issue_code = "structure"


class InvalidR4Error(InputError):
    """A resource the adapter uses breaks the R4 structure rules."""

    issue_code = "invalid"


class NoFacetProcedureError(InputError):
    issue_code = "not-found"


class NoDateOfServiceError(InputError):
    issue_code = "required"


class UsageError(InputError):
    """A bad option: unknown payer profile, bad place-of-service code, unreadable file."""

    issue_code = "invalid"


class RulePackError(InputError):
    """A rule pack or mapping table failed validation when it was loaded."""

    issue_code = "invalid"
    severity = "fatal"
    http_status = 500


class ClaimNotWritableError(AdapterError):
    """A format cannot write the claim, even when forced: an X12 837P without an element it
    requires is no 837P. The claim's findings say what is missing; the exit status is that of a
    held claim."""

    exit_code = EXIT_HELD
    issue_code = "required"
    severity = "error"
    http_status = 422


class InternalError(AdapterError):
    """A bug in the adapter: nothing is written."""


class UndeclaredUseError(InternalError):
    """A reader reached for a resource type or reference that `adapter.read.uses` does not declare."""


class UpstreamError(AdapterError):
    """A FHIR server answered with an error, or could not be reached."""

    exit_code = EXIT_UPSTREAM
    issue_code = "transient"
    http_status = 502

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        outcome: dict[str, Any] | None = None,
        details: list[ErrorDetail] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.status = status
        self.outcome = outcome


# --------------------------------------------------------------------------- FHIR server errors


class FhirError(UpstreamError):
    """A FHIR server failed or refused a request (exit status 4).

    The message names the server's base URL, the request (method and path, query parameter names
    only: their values can be patient identifiers) and what was answered (status, content type).
    `outcome` keeps the server's OperationOutcome; only its issue codes and locations become
    `details`, because server texts often quote the offending value."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        outcome: dict[str, Any] | None = None,
        method: str | None = None,
        path: str | None = None,
        retry_after: float | None = None,
        base_url: str | None = None,
        content_type: str | None = None,
    ) -> None:
        super().__init__(message, status=status, outcome=outcome, details=_server_issues(outcome))
        self.method = method
        self.path = path
        self.retry_after = retry_after
        self.base_url = base_url
        self.content_type = content_type


class FhirServerUnavailable(FhirError):
    """Could not reach the server, or it stayed overloaded (429/502/503/504) through every retry."""

    issue_code = "transient"
    http_status = 503


class FhirServerError(FhirError):
    """The server failed with a 5xx that is not worth retrying (500, 501, ...)."""

    issue_code = "exception"
    http_status = 502


class FhirRequestRejected(FhirError):
    """The server refused the request (4xx); `outcome` holds its OperationOutcome when it sent one."""

    issue_code = "processing"
    http_status = 502


class FhirNotFound(FhirRequestRejected):
    """404 Not Found or 410 Gone."""

    issue_code = "not-found"


class FhirConflict(FhirRequestRejected):
    """409 Conflict or 412 Precondition Failed: someone else changed the resource first."""

    issue_code = "conflict"


class FhirAuthError(FhirError):
    """401/403 from the server, or the token endpoint refused the client."""

    issue_code = "security"
    http_status = 502


class FhirProtocolError(FhirError):
    """The server answered with something that is not the FHIR JSON asked for."""

    issue_code = "structure"
    http_status = 502


class FhirPageLimitError(FhirProtocolError):
    """A search has more pages than the client's page cap. Raised instead of returning the pages
    read so far: a truncated record looks complete to the rules."""

    issue_code = "too-costly"

    def __init__(self, message: str, *, max_pages: int, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.max_pages = max_pages


class FhirResponseTooLarge(FhirProtocolError):
    """A response body is larger than the client's `max_response_bytes`."""

    issue_code = "too-costly"

    def __init__(self, message: str, *, limit: int, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.limit = limit


class FhirDeadlineExceeded(FhirServerUnavailable):
    """The server did not finish an answer within the client's deadline: `deadline` for one
    attempt (e.g. a body that trickles in slower than the read timeout could notice), or the
    overall limit of one request with its retries."""

    def __init__(self, message: str, *, deadline: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.deadline = deadline


def _server_issues(outcome: dict[str, Any] | None) -> list[ErrorDetail]:
    """The server's issues as details: code and location only. Server texts often quote the
    offending value (which can be patient data), so they stay in `outcome`, not in messages."""
    if not outcome:
        return []
    details = []
    for issue in outcome.get("issue", [])[:20]:
        if not isinstance(issue, dict):
            continue
        code = issue.get("code") if isinstance(issue.get("code"), str) else "processing"
        where = issue.get("expression") or issue.get("location") or []
        expression = where[0] if isinstance(where, list) and where and isinstance(where[0], str) else None
        severity = issue.get("severity", "error")
        details.append(ErrorDetail(f"Server issue ({severity}, {code}).", expression, str(code)))
    return details
