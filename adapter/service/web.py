"""HTTP plumbing shared by the endpoints: FHIR JSON responses, OperationOutcome errors, bounded
body reading and content-type rules."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from starlette.requests import Request
from starlette.responses import Response

FHIR_JSON = "application/fhir+json"
JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/fhir+ndjson", "application/ndjson"})
# HAPI's empty ping is an empty form post; any type is fine as long as there is no body.
_UTF8_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})

BodyFormat = Literal["json", "ndjson", "empty"]


class FhirResponse(Response):
    """`application/fhir+json`, laid out as the command line prints it."""

    media_type = FHIR_JSON

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def outcome(severity: str, code: str, text: str, *, diagnostics: str | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "details": {"text": text}}
    if diagnostics:
        issue["diagnostics"] = diagnostics
    return {"resourceType": "OperationOutcome", "issue": [issue]}


class ServiceError(Exception):
    """An error answered as an OperationOutcome with an HTTP status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.body = body

    def to_operation_outcome(self) -> dict[str, Any]:
        if self.body is not None:
            return self.body
        return outcome("fatal" if self.status >= 500 else "error", self.code, self.message)

    def response(self) -> FhirResponse:
        return FhirResponse(self.to_operation_outcome(), status_code=self.status, headers=self.headers)


def too_large(limit: int) -> ServiceError:
    return ServiceError(413, "too-costly", f"The request body is over the limit of {limit:,} bytes.")


async def read_body(request: Request, limit: int) -> bytes:
    """Read at most `limit` bytes. A declared Content-Length over the limit is refused before
    anything is read; a body that streams past it (chunked, or a lying header) is refused as
    soon as it does, so an oversized request never sits in memory whole."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise ServiceError(400, "structure", "The Content-Length header is not a number.") from None
        if length > limit:
            raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def body_format(request: Request, body: bytes, *, ndjson: bool) -> BodyFormat:
    """Decide how to read the body from its Content-Type (FHIR JSON, plain JSON, NDJSON when
    allowed; charset parameters other than UTF-8 refused) or say it is empty."""
    if not body.strip():
        return "empty"
    header = request.headers.get("content-type")
    if header is None:
        return "json"  # lenient: a body without a type is tried as JSON
    media, _, params = header.partition(";")
    media = media.strip().lower()
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in _UTF8_CHARSETS:
            raise ServiceError(415, "not-supported", "Only UTF-8 bodies are accepted.")
    if media in JSON_TYPES:
        return "json"
    if ndjson and media in NDJSON_TYPES:
        return "ndjson"
    accepted = sorted(JSON_TYPES | NDJSON_TYPES) if ndjson else sorted(JSON_TYPES)
    raise ServiceError(
        415,
        "not-supported",
        f"Content-Type {media or '(empty)'} is not accepted; send one of {', '.join(accepted)}.",
    )
