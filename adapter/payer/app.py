"""The sandbox payer's HTTP service (docs/payer.md, the sandbox payer). FHIR base `/fhir`:

| endpoint | what |
|---|---|
| `POST /fhir/Claim/$submit` | a PAS request Bundle → PAS response Bundle; a Claim Bundle → ClaimResponse |
| `POST /fhir/Claim/$inquire` | a PAS inquiry (the Claim first, same identifier) → Parameters with the answer |
| `GET /fhir/metadata` | CapabilityStatement |
| `GET /healthz` | liveness |

Every error is an OperationOutcome: 400 for what is not a request Bundle (not JSON, not a Bundle, no
Claim first), 404 for an unknown route or an `$inquire` about a request this payer has not received,
405 for a wrong method, 413 for a body over the limit, 415 for a body that is not JSON, 422 for a
request the rule packs cannot read (no facet procedure, invalid R4).

State: the requests received, in memory (the answers are derived from them, so a restarted payer
answers a new `$submit` the same way; a pended request's review starts again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from .. import __version__
from ..errors import AdapterError, InputError, RulePackError
from ..fhir.values import dicts, get_str
from ..service.web import FhirResponse, ServiceError, body_format, outcome, read_body
from .adjudicate import PayerSettings, Verdict, adjudicate
from .answers import claim_response, pas_response

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_REMEMBERED = 10_000


class Received:
    """The requests received, by their Claim's identifier, with when each arrived."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.requests: OrderedDict[str, tuple[dict[str, Any], float]] = OrderedDict()
        self.lock = threading.Lock()

    def add(self, key: str, request: dict[str, Any]) -> float:
        with self.lock:
            arrived = self.requests[key][1] if key in self.requests else self.clock()
            self.requests[key] = (request, arrived)
            self.requests.move_to_end(key)
            while len(self.requests) > MAX_REMEMBERED:
                self.requests.popitem(last=False)
            return arrived

    def get(self, key: str) -> tuple[dict[str, Any], float] | None:
        with self.lock:
            return self.requests.get(key)


def create_payer_app(settings: PayerSettings, *, clock: Callable[[], float] = time.monotonic) -> FastAPI:
    app = FastAPI(title="facet-adapter sandbox payer", version=__version__, docs_url=None, redoc_url=None)
    received = Received(clock)

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> Response:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        code = "not-found" if exc.status_code == 404 else "not-supported"
        text = "No such endpoint on this FHIR base." if exc.status_code == 404 else str(exc.detail)
        return FhirResponse(outcome("error", code, text), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        return FhirResponse(outcome("error", "invalid", "The request is malformed."), status_code=400)

    @app.get("/healthz")
    async def healthz() -> Response:
        return FhirResponse(outcome("information", "informational", "The sandbox payer is up."))

    @app.get("/fhir/metadata")
    async def metadata() -> Response:
        return FhirResponse(capability_statement())

    @app.post("/fhir/Claim/$submit")
    async def submit(request: Request) -> Response:
        bundle = await _request_bundle(request)
        key = _claim_key(bundle)
        arrived = received.add(key, bundle)
        verdict = await run_in_threadpool(_decide, bundle, settings, reviewed=_reviewed(arrived, clock, settings))
        log.info("submit: %s, %s", verdict.use, ", ".join(line.decision for line in verdict.lines))
        return FhirResponse(_answer(verdict, bundle))

    @app.post("/fhir/Claim/$inquire")
    async def inquire(request: Request) -> Response:
        inquiry = await _request_bundle(request)
        found = received.get(_claim_key(inquiry))
        if found is None:
            raise ServiceError(404, "not-found", "No request with this Claim identifier was submitted to this payer.")
        original, arrived = found
        verdict = await run_in_threadpool(_decide, original, settings, reviewed=_reviewed(arrived, clock, settings))
        answer = _answer(verdict, original, kind="inquiry")
        return FhirResponse({"resourceType": "Parameters", "parameter": [{"name": "return", "resource": answer}]})

    return app


def _reviewed(arrived: float, clock: Callable[[], float], settings: PayerSettings) -> bool:
    return clock() - arrived >= settings.review_seconds


def _decide(bundle: dict[str, Any], settings: PayerSettings, *, reviewed: bool) -> Verdict:
    try:
        return adjudicate(bundle, settings, reviewed=reviewed)
    except RulePackError as exc:  # the payer's own tables are broken: not the request's fault
        raise ServiceError(500, "exception", exc.message, body=exc.to_operation_outcome()) from None
    except InputError as exc:
        raise ServiceError(422, "processing", exc.message, body=_unprocessable(exc)) from None
    except AdapterError as exc:
        raise ServiceError(500, "exception", exc.message, body=exc.to_operation_outcome()) from None


def _unprocessable(error: AdapterError) -> dict[str, Any]:
    body = error.to_operation_outcome()
    body["issue"][0]["code"] = "processing"
    return body


def _answer(verdict: Verdict, request: dict[str, Any], *, kind: str = "pas-response") -> dict[str, Any]:
    if verdict.use == "preauthorization":
        return pas_response(verdict, request, kind=kind)
    return claim_response(verdict)


async def _request_bundle(request: Request) -> dict[str, Any]:
    """The request Bundle: the body, or a Parameters' `resource`. Checks what makes it a request."""
    body = await read_body(request, MAX_BODY_BYTES)
    if body_format(request, body, ndjson=False) == "empty":
        raise ServiceError(400, "required", "The request has no body: send the request Bundle.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ServiceError(400, "structure", "The body is not JSON.") from None
    if isinstance(data, dict) and data.get("resourceType") == "Parameters":
        data = next(
            (p.get("resource") for _, p in dicts(data.get("parameter")) if get_str(p, "name") == "resource"), None
        )
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        raise ServiceError(400, "structure", "Send a Bundle (or Parameters with a `resource` Bundle).")
    entries = [e for _, e in dicts(data.get("entry"))]
    first = entries[0].get("resource") if entries else None
    if not isinstance(first, dict) or first.get("resourceType") != "Claim":
        raise ServiceError(400, "invalid", "The Bundle's first entry must be the Claim (PAS ClaimFirst).")
    if first.get("use") not in ("claim", "preauthorization"):
        raise ServiceError(422, "not-supported", "This payer answers claims and prior-authorization requests only.")
    if not any(True for _ in dicts(first.get("item"))):
        raise ServiceError(422, "required", "The Claim has no item to decide.")
    return data


def _claim_key(bundle: dict[str, Any]) -> str:
    claim = bundle["entry"][0]["resource"]
    identifier = next((get_str(i, "value") for _, i in dicts(claim.get("identifier"))), None)
    if identifier is None:
        raise ServiceError(400, "required", "The Claim needs an identifier (PAS: Claim.identifier 1..*).")
    return identifier


def capability_statement() -> dict[str, Any]:
    operations = [
        {"name": "submit", "definition": "http://hl7.org/fhir/us/davinci-pas/OperationDefinition/Claim-submit"},
        {"name": "inquire", "definition": "http://hl7.org/fhir/us/davinci-pas/OperationDefinition/Claim-inquiry"},
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-12-01",
        "kind": "instance",
        "software": {"name": "facet-adapter sandbox payer", "version": __version__},
        "implementation": {"description": "Sandbox payer: adjudicates facet claims and prior authorizations"},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{"mode": "server", "resource": [{"type": "Claim", "operation": operations}]}],
    }
