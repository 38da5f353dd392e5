"""Errors as values with meaning.

Every failure the adapter reports to a user is one of these classes. The class carries the
process exit status and the FHIR issue type, so the command line, the web service and the bulk
runner all turn the same error into the same exit status / HTTP status / OperationOutcome.

Exit statuses are stable: a number is never reused for another meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

EXIT_OK = 0
EXIT_HELD = 1  # written, but at least one error finding: the claim is held
EXIT_INPUT = 2  # input or usage error: nothing written
EXIT_INTERNAL = 3  # a bug in the adapter: nothing written
EXIT_UPSTREAM = 4  # a FHIR server or network failure


@dataclass(frozen=True, slots=True)
class ErrorDetail:
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
