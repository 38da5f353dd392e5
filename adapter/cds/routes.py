"""The CDS Hooks endpoints of `facet-adapter serve` (docs/cds-hooks.md):

| endpoint | what |
|---|---|
| `GET /cds-services` | discovery: the order-sign and order-select services with their prefetch |
| `POST /cds-services/{id}` | a hook call: cards and coverage-information system actions |

Every call needs the EHR's JWT (401 otherwise); a malformed request is 400, an unknown service
404, missing prefetch that cannot be read 412, each with an OperationOutcome. Answers are
`application/json`, as CDS Hooks has them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from ..service.settings import Settings
from ..service.web import ServiceError, body_format, read_body
from .discovery import SERVICE_IDS, discovery_document
from .hooks import answer
from .record import PrefetchMissing, ServerAccess
from .request import HookRequestError, parse_hook
from .security import JwtVerifier, KeyStore, ReplayCacheFull, TokenRefused

log = logging.getLogger(__name__)


class CdsResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


_CDS_JSON = {"application/json": {"schema": {"type": "object"}}}


def cds_router(settings: Settings) -> APIRouter:
    """The endpoints, with the EHR keys read now (a bad key set stops the service at start)."""
    cds = settings.cds
    verifier = JwtVerifier(KeyStore(cds.jwks_sources), cds.issuers)
    access = ServerAccess(cds.allowed_fhir_bases, settings.fhir_timeout, settings.fhir_retries)
    # Hook calls wait for one of a few slots rather than being refused: an EHR waits seconds at most.
    slots = asyncio.Semaphore(cds.max_concurrency)
    base = cds.base_url.rstrip("/")
    router = APIRouter(tags=["cds-hooks"])

    async def authenticate(request: Request, audience: str) -> None:
        try:
            await run_in_threadpool(verifier.verify, request.headers.get("authorization"), audience)
        except TokenRefused as exc:
            # The reason only: the path is the caller's text, and the token a credential.
            log.info("CDS Hooks call refused: %s", exc)
            raise ServiceError(401, "login", str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
        except ReplayCacheFull:
            log.warning("CDS Hooks: replay cache full; call refused")
            raise ServiceError(
                503, "transient", "Too many calls at once; try again.", headers={"Retry-After": "1"}
            ) from None

    errors: dict[int | str, dict[str, Any]] = {
        status: {"description": text, "content": {"application/fhir+json": {"schema": {"type": "object"}}}}
        for status, text in {
            400: "Malformed hook request: OperationOutcome",
            401: "No valid JWT: OperationOutcome",
            404: "No such service: OperationOutcome",
            412: "Required prefetch missing and not readable from fhirServer: OperationOutcome",
        }.items()
    }

    @router.get(
        "/cds-services",
        summary="CDS Hooks discovery",
        description="The order-sign and order-select services for facet interventions, with their prefetch templates.",
        response_class=CdsResponse,
        responses={200: {"description": "Discovery document", "content": _CDS_JSON}, 401: errors[401]},
    )
    async def cds_discovery(request: Request) -> Response:
        await authenticate(request, f"{base}/cds-services")
        return CdsResponse(discovery_document())

    @router.post(
        "/cds-services/{service_id}",
        summary="CDS Hooks call (order-sign, order-select)",
        description=(
            "Codes each draft facet ServiceRequest as a planned session and answers a coverage-information "
            "systemAction per order (Da Vinci CRD) and a card where a person must act."
        ),
        response_class=CdsResponse,
        responses={200: {"description": "Cards and systemActions", "content": _CDS_JSON}, **errors},
    )
    async def cds_hook(request: Request, service_id: str) -> Response:
        await authenticate(request, f"{base}/cds-services/{service_id}")
        hook = SERVICE_IDS.get(service_id)
        if hook is None:
            raise ServiceError(404, "not-found", "No such CDS service; see GET /cds-services.")
        body = await read_body(request, settings.max_api_bytes)
        if body_format(request, body, ndjson=False) == "empty":
            raise ServiceError(400, "structure", "The hook request is empty.")
        try:
            call = parse_hook(body, hook)
        except HookRequestError as exc:
            raise ServiceError(400, "invalid", exc.message, body=exc.to_operation_outcome()) from None
        try:
            async with slots:
                result = await run_in_threadpool(answer, call, access)
        except PrefetchMissing as exc:
            log.info("hook %s: prefetch %s missing and not readable", call.log_id, ", ".join(exc.keys))
            raise ServiceError(412, "incomplete", exc.message, body=exc.to_operation_outcome()) from None
        except HookRequestError as exc:
            raise ServiceError(400, "invalid", exc.message, body=exc.to_operation_outcome()) from None
        return CdsResponse(result.body())

    return router
