"""The HTTP service: Subscription notifications in, a durable queue, and the synchronous API.

Endpoints (all FHIR answers are `application/fhir+json`; every error is an OperationOutcome):

| endpoint | what |
|---|---|
| `PUT /notify/{Type}/{id}` | HAPI rest-hook delivery with payload |
| `POST /notify` | empty ping, or a Subscriptions Backport notification Bundle |
| `DELETE /notify/{Type}/{id}` | HAPI delete message: acknowledged, nothing to do |
| `GET /notify/metadata` | CapabilityStatement (HAPI's reachability check; open) |
| `POST /claim`, `POST /check` | what `facet-adapter claim` / `check --format json` print |
| `GET /healthz` | queue depth, worker liveness, the Subscriptions and their state (open) |
| `GET /openapi.json` | the OpenAPI document (open: it describes the API and holds no data) |
| `/review…` | the coder's worklist, HTML for signed-in users (adapter.review.routes) |

Notifications are answered **200 with a small FHIR body**, not 202: HAPI's client parses the
answer as FHIR and fails on an empty or `{}` body (HAPI-1359), and it calls `update()` for
payload deliveries and `transaction()` for Backport Bundles. So a PUT or a ping gets an
OperationOutcome (which also names the job id), a Backport Bundle gets a `transaction-response`
Bundle with that OperationOutcome on its first entry. 200 is what those calls get from any FHIR
server, so every HAPI version accepts it; the work itself is done later, from the queue.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from .. import __version__
from ..cds.routes import cds_router
from ..errors import AdapterError
from ..pipeline import Options, Result, process, validate_options
from ..review.routes import review_router
from .apart import WorkerProcess
from .handler import SyncHandler
from .notifications import Parsed, capability_statement, parse_post, parse_put
from .queue import ACTIVE_STATES, Enqueued, JobQueue
from .settings import Settings
from .subscriptions import Monitor, Subscriptions, UnknownSubscription, subscription_health
from .web import FHIR_JSON, JSON_TYPES, NDJSON_TYPES, FhirResponse, ServiceError, body_format, outcome, read_body
from .worker import Handler, Worker

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_OUTCOME_SCHEMA = {"type": "object", "description": "FHIR R4 OperationOutcome"}
_FHIR_SCHEMA = {"type": "object", "description": "a FHIR R4 resource (JSON)"}


def _fhir_content(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "content": {FHIR_JSON: {"schema": schema or _OUTCOME_SCHEMA}}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _fhir_content("Malformed request: OperationOutcome, nothing queued or written"),
    413: _fhir_content("Request body over the size limit: OperationOutcome"),
    415: _fhir_content("Content type not accepted: OperationOutcome"),
}
_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _fhir_content("Missing or wrong bearer token (when the service runs with --token): OperationOutcome"),
}
_QUEUE_ERRORS: dict[int | str, dict[str, Any]] = {
    503: _fhir_content("The queue cannot be written: OperationOutcome; the sender should deliver again"),
}
_BUSY_ERRORS: dict[int | str, dict[str, Any]] = {
    503: {
        **_fhir_content("Too many /claim and /check requests at once: OperationOutcome; try again after Retry-After"),
        "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
    },
}
BUSY_RETRY_AFTER_SECONDS = 2


def _request_body(description: str, *, ndjson: bool, optional: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {media: {"schema": _FHIR_SCHEMA} for media in sorted(JSON_TYPES)}
    if ndjson:
        content.update({media: {"schema": {"type": "string"}} for media in sorted(NDJSON_TYPES)})
    return {"requestBody": {"required": not optional, "description": description, "content": content}}


def query_options(
    payer: str | None = Query(None, description="Payer profile, e.g. medicare; default from the Coverage"),
    use: Literal["claim", "preauthorization"] = Query("claim"),
    pos: str | None = Query(None, description="CMS place-of-service code (two digits)"),
    prior_auth: str | None = Query(None, description="Prior authorization number on record"),
) -> Options:
    """The query parameters /claim and /check share, as the pipeline's options (a FastAPI dependency,
    at module level so the annotations of the endpoints that use it resolve)."""
    return Options(payer=payer.lower() if payer else None, use=use, pos=pos or None, prior_auth=prior_auth or None)


def create_app(
    settings: Settings,
    *,
    handler: Handler | None = None,
    run_worker: bool = True,
    queue: JobQueue | None = None,
    apart: bool = False,
) -> FastAPI:
    """Build the service. `handler` replaces the default (sync with the FHIR server), e.g. in
    tests; `run_worker=False` leaves the queue unprocessed; `apart`: the workers and the monitor
    run in a process of their own, forked when the app starts (adapter.service.apart)."""
    queue = queue or JobQueue(settings.db_path, policy=settings.retry)
    subscriptions = Subscriptions(queue)
    if settings.subscriptions:
        subscriptions.register(settings.subscriptions, "option")
    worker = Worker(
        queue,
        handler or SyncHandler(settings, queue, subscriptions),
        lease_seconds=settings.lease_seconds,
        poll_seconds=settings.poll_seconds,
        keep_done_seconds=settings.keep_done_seconds,
        threads=settings.workers,
    )
    monitor = Monitor(subscriptions, reconcile_seconds=settings.reconcile_seconds, wake=worker.wake)
    pool = WorkerProcess(worker, monitor, subscriptions) if apart else None
    workers: Worker | WorkerProcess = pool or worker  # what the routes ask: wake, alive, stalled …
    started = dt.datetime.now(dt.UTC)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if run_worker and pool is not None:
            pool.start()  # on this thread, the only one yet: it forks
        elif run_worker:
            await run_in_threadpool(worker.start)
            monitor.start()
        try:
            yield
        finally:
            if run_worker and pool is not None:
                await run_in_threadpool(pool.stop)
            elif run_worker:
                monitor.stop()
                await run_in_threadpool(worker.stop)

    app = FastAPI(
        title="facet-adapter",
        version=__version__,
        description=(
            "Subscription notification endpoint (HAPI rest-hook and Subscriptions Backport R4) with a durable "
            "queue, and the synchronous coding API (`/claim`, `/check`) behind `facet-adapter serve`."
        ),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        default_response_class=FhirResponse,
    )
    app.state.settings = settings
    app.state.queue = queue
    app.state.worker = workers
    app.state.subscriptions = subscriptions
    app.state.monitor = monitor

    app.add_exception_handler(ServiceError, _service_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_middleware(_Guard)

    secured = bool(settings.token)
    protected = [Depends(_TokenRequired(settings.token))] if settings.token else []
    auth_errors = _AUTH_ERRORS if secured else {}

    # ------------------------------------------------------------------ notifications

    async def accept(parsed: Parsed, *, as_bundle: bool) -> FhirResponse:
        results: list[Enqueued] = []
        note = parsed.subscription
        if parsed.notices or note is not None:
            try:
                if note is None:
                    results = await run_in_threadpool(queue.enqueue, parsed.notices)
                else:
                    results = await run_in_threadpool(
                        lambda: queue.enqueue(parsed.notices, observe=lambda conn: subscriptions.observe(conn, note))
                    )
            except UnknownSubscription as exc:
                refused = subscriptions.count_refused()
                log.warning(
                    "notification for unknown Subscription/%s refused (%d so far)", exc.subscription_id, refused
                )
                raise ServiceError(
                    403,
                    "forbidden",
                    f"Subscription/{exc.subscription_id} is not one this service was told about "
                    "(facet-adapter subscribe --db, or serve --subscription).",
                ) from None
            except AdapterError as exc:
                log.error("notification %s not queued: %s", parsed.what, type(exc).__name__)
                raise ServiceError(503, "transient", "The queue cannot be written now; deliver again later.") from None
            if results:
                workers.wake(sum(1 for r in results if r.created))
        text = _accepted_text(parsed, results)
        log.info("notification %s: %s", parsed.what, ", ".join(_job_word(r) for r in results) or "no job")
        body = outcome("information", "informational", text)
        if as_bundle:
            entries: list[dict[str, Any]] = [{"response": {"status": "200"}} for _ in range(parsed.bundle_entries)]
            entries[0]["response"]["outcome"] = body
            return FhirResponse({"resourceType": "Bundle", "type": "transaction-response", "entry": entries})
        return FhirResponse(body)

    notify_responses = {
        200: _fhir_content("Accepted (queued, already queued, or nothing to do): OperationOutcome naming the job"),
        403: _fhir_content("A Backport notification for a Subscription the service does not know: OperationOutcome"),
        **_ERRORS,
        **auth_errors,
        **_QUEUE_ERRORS,
    }

    @app.put(
        "/notify/{resource_type}/{resource_id}",
        tags=["notifications"],
        summary="HAPI rest-hook delivery with payload",
        description=(
            "HAPI sends `PUT {endpoint}/{Type}/{id}` with the resource for a classic rest-hook Subscription with "
            "`channel.payload`. Procedure and ServiceRequest notifications are queued (once per resource version); "
            "other types are acknowledged and ignored. The job is on disk before the answer."
        ),
        dependencies=protected,
        responses=notify_responses,
        openapi_extra=_request_body("The notified resource; its type and id must match the URL.", ndjson=False),
    )
    async def notify_put(request: Request, resource_type: str, resource_id: str) -> FhirResponse:
        body = await read_body(request, settings.max_notify_bytes)
        body_format(request, body, ndjson=False)
        return await accept(parse_put(resource_type, resource_id, body), as_bundle=False)

    async def notify_post(request: Request) -> FhirResponse:
        body = await read_body(request, settings.max_notify_bytes)
        body_format(request, body, ndjson=False)
        parsed = parse_post(body)
        return await accept(parsed, as_bundle=parsed.bundle_entries > 0)

    post_doc = {
        "tags": ["notifications"],
        "summary": "Rest-hook ping or Subscriptions Backport notification",
        "description": (
            "An empty body is HAPI's ping for a Subscription without payload: it queues one re-query of the server "
            "since the last successful one (pings coalesce). A body is a Subscriptions Backport R4 notification "
            "Bundle (type history, first entry a backport-subscription-status-r4 Parameters): handshake, heartbeat "
            "and query-status are acknowledged; event-notification queues each Procedure/ServiceRequest focus "
            "(id-only or full-resource), or a re-query for empty content. A Bundle is answered with a "
            "transaction-response Bundle whose first entry carries the OperationOutcome."
        ),
        "dependencies": protected,
        "responses": {
            200: _fhir_content(
                "Accepted: OperationOutcome (ping) or transaction-response Bundle (notification Bundle)",
                _FHIR_SCHEMA,
            ),
            **_ERRORS,
            **auth_errors,
            **_QUEUE_ERRORS,
        },
        "openapi_extra": _request_body("Empty (ping) or a notification Bundle.", ndjson=False, optional=True),
    }
    app.post("/notify", **post_doc)(notify_post)  # type: ignore[arg-type]
    # An endpoint configured with a trailing slash: a redirect would lose the POST body.
    app.post("/notify/", include_in_schema=False, dependencies=protected)(notify_post)

    @app.delete(
        "/notify/{resource_type}/{resource_id}",
        tags=["notifications"],
        summary="HAPI delete message (acknowledged, nothing queued)",
        dependencies=protected,
        responses={200: _fhir_content("Acknowledged: OperationOutcome"), **auth_errors},
    )
    async def notify_delete(resource_type: str, resource_id: str) -> FhirResponse:
        log.info("notification delete %s: ignored", resource_type)
        return FhirResponse(outcome("information", "informational", "Delete notifications are not acted on."))

    @app.get(
        "/notify/metadata",
        tags=["notifications"],
        summary="CapabilityStatement of the notification endpoint",
        description=(
            "Open without a token: HAPI checks a rest-hook endpoint's reachability with `GET {endpoint}/metadata`."
        ),
        responses={200: _fhir_content("CapabilityStatement", _FHIR_SCHEMA)},
    )
    async def metadata(request: Request) -> FhirResponse:
        return FhirResponse(capability_statement(str(request.url_for("notify_post")), started, secured))

    # ------------------------------------------------------------------ synchronous API

    # Each /claim or /check request may hold a body of up to max_api_bytes and the model built
    # from it, so only a few run at once; the rest are told to come back instead of queueing in
    # the thread pool (40 threads x a 32 MiB body is over a gigabyte).
    slots = _Slots(settings.max_api_concurrency)

    async def run_pipeline(request: Request, options: Options) -> Result:
        if not slots.try_acquire():
            log.warning("%s refused: %d requests already running", request.url.path, slots.limit)
            raise ServiceError(
                503,
                "transient",
                f"The service is already running {slots.limit} /claim or /check request(s); "
                f"try again in {BUSY_RETRY_AFTER_SECONDS} s.",
                headers={"Retry-After": str(BUSY_RETRY_AFTER_SECONDS)},
            )
        try:
            return await _run_pipeline(request, options)
        finally:
            slots.release()

    async def _run_pipeline(request: Request, options: Options) -> Result:
        try:
            validate_options(options)
        except AdapterError as exc:
            raise ServiceError(exc.http_status, exc.issue_code, exc.message, body=exc.to_operation_outcome()) from None
        body = await read_body(request, settings.max_api_bytes)
        shape = body_format(request, body, ndjson=True)
        name = "request.ndjson" if shape == "ndjson" else "request body"
        try:
            bounded = dataclasses.replace(options, max_input_bytes=settings.max_api_bytes)
            return await run_in_threadpool(process, body, bounded, name=name)
        except AdapterError as exc:
            raise ServiceError(exc.http_status, exc.issue_code, exc.message, body=exc.to_operation_outcome()) from None

    api_doc: dict[str, Any] = {
        "tags": ["coding"],
        "dependencies": protected,
        "openapi_extra": _request_body(
            "A patient's record: a Bundle of any type, a single resource, or NDJSON (one resource a line).",
            ndjson=True,
        ),
    }
    held_header = {
        "X-Facet-Adapter-Held": {
            "description": "true when an error finding holds the claim (the command line's exit status 1)",
            "schema": {"type": "string", "enum": ["true", "false"]},
        }
    }

    @app.post(
        "/claim",
        summary="Code and check the latest session; answer the Claim Bundle",
        description=(
            "The body `facet-adapter claim` prints: a collection Bundle with the Claim first (or a PAS request "
            "Bundle for use=preauthorization). A held claim (`Claim.status` draft) is still 200; see the header."
        ),
        responses={
            200: {**_fhir_content("Claim Bundle", _FHIR_SCHEMA), "headers": held_header},
            **_ERRORS,
            **auth_errors,
            **_BUSY_ERRORS,
        },
        **api_doc,
    )
    async def claim(
        request: Request,
        options: Annotated[Options, Depends(query_options)],
    ) -> Response:
        result = await run_pipeline(request, options)
        return FhirResponse(result.bundle, headers={"X-Facet-Adapter-Held": str(result.held).lower()})

    @app.post(
        "/check",
        summary="Code and check the latest session; answer the findings",
        description="The OperationOutcome `facet-adapter check --format json` prints (one issue per finding).",
        responses={
            200: {**_fhir_content("Findings"), "headers": held_header},
            **_ERRORS,
            **auth_errors,
            **_BUSY_ERRORS,
        },
        **api_doc,
    )
    async def check(
        request: Request,
        options: Annotated[Options, Depends(query_options)],
    ) -> Response:
        result = await run_pipeline(request, options)
        return FhirResponse(result.outcome(), headers={"X-Facet-Adapter-Held": str(result.held).lower()})

    # ------------------------------------------------------------------ operations

    @app.get(
        "/healthz",
        tags=["operations"],
        summary="Liveness: queue depth and worker state",
        response_class=JSONResponse,
        responses={
            503: {
                "description": "The worker is not running or is stuck (its loop stalled), or the queue cannot be read"
            }
        },
    )
    async def healthz() -> JSONResponse:
        try:
            counts = await run_in_threadpool(queue.counts)
        except AdapterError:
            return JSONResponse({"status": "error", "queue": None}, status_code=503)
        # Alive means the loop still comes round, not only that its thread exists: a handler
        # hanging on a socket keeps the thread alive while nothing is processed.
        stalled = workers.alive and workers.stalled()
        alive = workers.alive and not stalled
        healthy = alive or not run_worker
        waited = workers.since_last_loop()
        body: dict[str, Any] = {
            "status": "ok" if healthy else "error",
            "queue": {"depth": sum(counts[s] for s in ACTIVE_STATES), **{str(k): v for k, v in counts.items()}},
            "worker": {
                "running": run_worker,
                "alive": alive,
                "stalled": stalled,
                "seconds_since_loop": round(waited, 1) if waited is not None else None,
                "stall_after_seconds": workers.stall_seconds,
                "processed": workers.processed,
                "threads": workers.threads,
            },
        }
        try:
            body["subscriptions"] = await run_in_threadpool(subscription_health, subscriptions, monitor)
        except AdapterError:
            body["subscriptions"] = None
        return JSONResponse(body, status_code=200 if healthy else 503)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            # Query validation errors are answered 400 with an OperationOutcome, not FastAPI's 422.
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    if settings.cds.enabled:  # GET /cds-services, POST /cds-services/{id} (docs/cds-hooks.md)
        app.include_router(cds_router(settings))
    if settings.review.enabled:  # /review: the coder's worklist, for signed-in users (docs/server.md)
        app.include_router(review_router(settings, queue, workers.wake))
    app.openapi = openapi  # type: ignore[method-assign]
    return app


# ---------------------------------------------------------------------- helpers


class _Slots:
    """A non-blocking counting semaphore for the event loop: `try_acquire` and `release` run on
    the loop's thread with no await between the check and the count, so a plain counter is exact."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the concurrency limit must be at least 1")
        self.limit = limit
        self.busy = 0

    def try_acquire(self) -> bool:
        if self.busy >= self.limit:
            return False
        self.busy += 1
        return True

    def release(self) -> None:
        self.busy -= 1


class _TokenRequired(HTTPBearer):
    """`Authorization: Bearer <token>` must carry the configured token. A subclass of FastAPI's
    HTTPBearer, so the OpenAPI document declares the scheme; the comparison takes the same time
    whatever the token, so it cannot be guessed byte by byte."""

    def __init__(self, token: str) -> None:
        super().__init__(auto_error=False, description="The token given to `facet-adapter serve --token`.")
        self._expected = token.encode()

    async def __call__(self, request: Request) -> HTTPAuthorizationCredentials | None:  # type: ignore[override]
        credentials = await super().__call__(request)
        if credentials is None:
            raise _unauthorized("This endpoint needs an Authorization: Bearer header.")
        if not hmac.compare_digest(credentials.credentials.encode(), self._expected):
            raise _unauthorized("The bearer token is not valid.")
        return credentials


def _unauthorized(message: str) -> ServiceError:
    return ServiceError(401, "login", message, headers={"WWW-Authenticate": 'Bearer realm="facet-adapter"'})


def _job_word(result: Enqueued) -> str:
    return f"job {result.job_id} {'queued' if result.created else 'already queued (' + result.state + ')'}"


def _accepted_text(parsed: Parsed, results: list[Enqueued]) -> str:
    if not results:
        return f"Accepted {parsed.what}; nothing to do."
    return f"Accepted {parsed.what}: " + "; ".join(_job_word(r) for r in results) + "."


async def _service_error(_: Request, exc: ServiceError) -> Response:
    return exc.response()


async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
    code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
    text = {404: "No such endpoint.", 405: "Method not allowed here."}.get(exc.status_code, str(exc.detail))
    return FhirResponse(outcome("error", code, text), status_code=exc.status_code, headers=exc.headers)


async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("query", "path"))
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return FhirResponse(
        outcome("error", "invalid", "Bad request parameter(s): " + "; ".join(problems)), status_code=400
    )


class _Guard:
    """Outermost own layer: a request log line (method, route template, status, time: never the
    raw path's query, a body or a header), and an OperationOutcome instead of a stack trace for
    anything the handlers did not expect."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        state = {"status": 500, "started": False}

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            log.error("%s %s: internal error (%s)", scope["method"], _template(scope), type(exc).__name__)
            if not state["started"]:
                body = outcome("fatal", "exception", "Internal error; this is a bug in facet-adapter.")
                await FhirResponse(body, status_code=500)(scope, receive, watch)
        finally:
            log.info(
                "%s %s %s %.1f ms",
                scope["method"],
                _template(scope),
                state["status"],
                (time.monotonic() - started) * 1000,
            )


def _template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "(no route)"
