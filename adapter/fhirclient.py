"""A small FHIR R4 REST client (requests) that works the same against HAPI FHIR, the local test
server (Medplum engine) and other R4 servers.

What it adds over plain requests:

- Retries with exponential backoff and full jitter on 429, 502, 503, 504, connection errors and
  timeouts, honouring `Retry-After` (seconds or an HTTP date, capped). Other 4xx are never
  retried. A request is repeated only when that cannot write twice:
  - reads, searches, `$validate`, DELETE and PUT (an update with `If-Match` that did land
    before its answer was lost comes back 412, and the caller reads again);
  - a conditional create (`If-None-Exist`) and a transaction whose entries are all PUTs,
    conditional creates or reads (`_bundle_is_idempotent`): the repeat finds what the first
    attempt wrote. The adapter's Claims and Tasks carry deterministic identifiers for this;
  - any request when the server certainly did not act on it: 429 and 503 (refused before
    processing) or a connection that was never made. After a 502/504 or a read timeout a plain
    create may have happened, so it is not repeated.
- Errors as typed exceptions (`FhirError` and subclasses, all `adapter.errors.UpstreamError`,
  exit status 4) carrying the HTTP status and the server's OperationOutcome.
- Auth: a static bearer token or SMART Backend Services (client credentials with a signed JWT
  assertion), with the token cached and refreshed once on a 401.
- Paging through `Bundle.link[relation=next]` (absolute or relative URLs, HAPI `_getpages` or
  `_offset` links alike) with a page cap. A search that reaches the cap (or whose links loop)
  raises instead of returning a prefix: a partial patient record would make the frequency and
  prerequisite rules pass that should fail.
- Bounded responses: a body is read in pieces up to `max_response_bytes` (64 MiB by default;
  `FhirResponseTooLarge` beyond it), and each exchange has an overall `deadline` (120 s by
  default; `FhirDeadlineExceeded`), so a slow-drip server cannot hold a worker by sending a byte
  just before every read timeout.
- Server differences absorbed: transaction-response statuses `"201 Created"` (HAPI) and `"201"`
  (Medplum), numeric or UUID version ids, relative or absolute `Location` headers with or
  without `/_history/<vid>`.

Logging names the method, the path with query *names* only, the status and resource ids; never
query values or bodies, which can hold patient data.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import random
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol
from urllib.parse import parse_qsl, urlsplit

import orjson
import requests
import urllib3.exceptions

from .errors import ErrorDetail, UpstreamError

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
DEFAULT_USER_AGENT = "facet-adapter/0.1 (+https://github.com/facet-adapter)"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Statuses that say the server did not act on the request, so even a non-idempotent request may
# be repeated: 429 (rate limited before processing) and 503 (not accepting requests).
NOT_PROCESSED_STATUSES = frozenset({429, 503})
MAX_RETRY_AFTER_S = 60.0
MAX_BACKOFF_S = 30.0
DEFAULT_MAX_PAGES = 100
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
DEFAULT_DEADLINE_S = 120.0
_READ_CHUNK = 64 * 1024
# HAPI reuses the results of an identical search for up to a minute by default; a sync that
# looks for the Claim it has just written must see it.
_NO_CACHE = {"Cache-Control": "no-cache"}

Params = Mapping[str, str | Sequence[str]] | Sequence[tuple[str, str]] | None


# --------------------------------------------------------------------------- errors


class FhirError(UpstreamError):
    """A FHIR server failed or refused a request (exit status 4)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        outcome: dict[str, Any] | None = None,
        method: str | None = None,
        path: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, outcome=outcome, details=_outcome_details(outcome))
        self.method = method
        self.path = path
        self.retry_after = retry_after


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
    """The server did not finish an answer within the client's overall `deadline` (per attempt),
    e.g. a body that trickles in slower than the read timeout could notice."""

    def __init__(self, message: str, *, deadline: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.deadline = deadline


def _outcome_details(outcome: dict[str, Any] | None) -> list[ErrorDetail]:
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


# --------------------------------------------------------------------------- auth


class Auth(Protocol):
    def headers(self, client: FhirClient) -> dict[str, str]:
        """Headers to add to a request."""
        ...

    def invalidate(self) -> bool:
        """Forget a cached credential after a 401; True when a new one may help."""
        ...


@dataclass
class BearerToken:
    """A static access token (`Authorization: Bearer <token>`)."""

    token: str

    def headers(self, client: FhirClient) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def invalidate(self) -> bool:
        return False

    def __repr__(self) -> str:  # keep tokens out of logs and tracebacks
        return "BearerToken(***)"


class SmartBackendServices:
    """SMART Backend Services: client credentials with a signed JWT assertion (RFC 7523).

    The access token is cached until `refresh_margin` seconds before `expires_in`, and fetched
    again once when the server answers 401.
    """

    ASSERTION_TYPE: ClassVar[str] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    ASSERTION_LIFETIME_S: ClassVar[int] = 300  # SMART: "no more than five minutes in the future"

    def __init__(
        self,
        token_url: str,
        client_id: str,
        private_key_pem: str | bytes,
        key_id: str,
        scope: str,
        algorithm: str = "RS384",
        *,
        refresh_margin: float = 60.0,
    ) -> None:
        if algorithm not in ("RS384", "ES384"):
            # SMART Backend Services requires support for RS384 and ES384; others are not interoperable.
            raise ValueError("SMART Backend Services signs with RS384 or ES384.")
        self.token_url = token_url
        self.client_id = client_id
        self._key = private_key_pem
        self.key_id = key_id
        self.scope = scope
        self.algorithm = algorithm
        self.refresh_margin = refresh_margin
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SmartBackendServices(token_url={self.token_url!r}, client_id={self.client_id!r})"

    def assertion(self, now: float | None = None) -> str:
        import jwt

        issued = int(now if now is not None else time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "iat": issued,
            "exp": issued + self.ASSERTION_LIFETIME_S,
            "jti": uuid.uuid4().hex,
        }
        headers = {"kid": self.key_id, "typ": "JWT"}
        return str(jwt.encode(claims, self._key, algorithm=self.algorithm, headers=headers))

    def headers(self, client: FhirClient) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token(client)}"}

    def invalidate(self) -> bool:
        with self._lock:
            self._token, self._expires_at = None, 0.0
        return True

    def access_token(self, client: FhirClient) -> str:
        with self._lock:
            if self._token is not None and time.monotonic() < self._expires_at:
                return self._token
            token, lifetime = self._fetch(client)
            margin = min(self.refresh_margin, lifetime / 2)
            self._token, self._expires_at = token, time.monotonic() + lifetime - margin
            return token

    def _fetch(self, client: FhirClient) -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": self.ASSERTION_TYPE,
            "client_assertion": self.assertion(),
        }
        # A token request only mints a token, so it is safe to repeat.
        response = client.send_raw(
            "POST",
            self.token_url,
            data=form,
            headers={"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"},
            idempotent=True,
            authenticate=False,
        )
        path = urlsplit(self.token_url).path or "/"
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), str) else None
            # The OAuth `error` code is a fixed vocabulary (invalid_client, invalid_scope...), safe to show.
            raise FhirAuthError(
                f"The token endpoint refused the client ({response.status_code}"
                + (f", {error}" if error else "")
                + ").",
                status=response.status_code,
                method="POST",
                path=path,
            )
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise FhirAuthError("The token endpoint answered without an access_token.", status=response.status_code)
        expires_in = body.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, (int, float)) and expires_in > 0 else 300.0
        log.info("SMART token obtained for client %s (expires in %.0f s)", self.client_id, lifetime)
        return token, lifetime


# --------------------------------------------------------------------------- results


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


# --------------------------------------------------------------------------- the client


class FhirClient:
    """A FHIR R4 server at `base_url` (e.g. `http://127.0.0.1:8080/fhir`)."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: Auth | None = None,
        timeout: float | tuple[float, float] = (5, 30),
        retries: int = 4,
        backoff: float = 0.5,
        session: Any = None,
        user_agent: str = DEFAULT_USER_AGENT,
        max_pages: int = DEFAULT_MAX_PAGES,
        max_retry_after: float = MAX_RETRY_AFTER_S,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        deadline: float = DEFAULT_DEADLINE_S,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            from .errors import UsageError

            raise UsageError("The FHIR base URL must be an absolute http(s) URL, e.g. https://fhir.example.org/r4.")
        if max_response_bytes < 1 or deadline <= 0:
            raise ValueError("max_response_bytes and deadline must be positive.")
        self.base_url = base_url.rstrip("/")
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._base_path = parts.path.rstrip("/")
        self.auth = auth
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.session = session if session is not None else requests.Session()
        self.user_agent = user_agent
        self.max_pages = max_pages
        self.max_retry_after = max_retry_after
        self.max_response_bytes = max_response_bytes
        self.deadline = deadline
        self._capabilities: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"FhirClient({self.base_url!r})"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- references

    def relative(self, reference: str) -> str:
        """`{base}/Type/id[/_history/v]` → `Type/id`; other references unchanged."""
        if reference.startswith(self.base_url + "/"):
            location = parse_location(reference[len(self.base_url) + 1 :])
            if location is not None:
                return location.reference
        return reference

    def url(self, path: str) -> str:
        """An absolute URL for a path relative to the base, an absolute path or a URL on the
        server. Links to another host are refused: the client would send its token there."""
        if "://" in path:
            parts = urlsplit(path)
            if f"{parts.scheme}://{parts.netloc}" == self._origin:
                return path
            if parts.path.startswith(self._base_path + "/") or parts.path == self._base_path:
                # A server behind a proxy can write its internal host name into paging links.
                log.warning("rebasing a link from another host onto %s", self._origin)
                return self._origin + parts.path + (f"?{parts.query}" if parts.query else "")
            raise FhirProtocolError("The server sent a link to another host; it was not followed.")
        if path.startswith("/"):
            return self._origin + path
        return f"{self.base_url}/{path}" if path else self.base_url

    # -- interactions

    def read(self, type_: str, id_: str) -> dict[str, Any]:
        return self._json("GET", f"{type_}/{id_}", idempotent=True)

    def vread(self, type_: str, id_: str, version: str) -> dict[str, Any]:
        return self._json("GET", f"{type_}/{id_}/_history/{version}", idempotent=True)

    def read_reference(self, reference: str) -> dict[str, Any]:
        """Read `Type/id` or an absolute reference on this server."""
        location = parse_location(self.relative(reference))
        if location is None or ("://" in reference and not reference.startswith(self.base_url + "/")):
            raise FhirProtocolError("Only references to resources on this server can be read.")
        return self.read(location.type, location.id)

    def search_bundle(self, type_: str | None, params: Params = None) -> dict[str, Any]:
        """The first page of a search (a searchset Bundle)."""
        return self._json("GET", type_ or "", params=params, headers=_NO_CACHE, idempotent=True)

    def pages(
        self, type_: str | None, params: Params = None, *, max_pages: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Each page of a search, following `Bundle.link[relation=next]`.

        Never a silent prefix: when page `max_pages` still links to a next page,
        `FhirPageLimitError` is raised (after the pages before it were yielded), and a next link
        seen before is a `FhirProtocolError`. A caller that collects the results gets an error
        instead of a truncated record."""
        cap = max_pages or self.max_pages
        where = type_ or "the server"
        bundle = self.search_bundle(type_, params)
        seen: set[str] = set()
        page = 1
        while True:
            yield bundle
            next_url = next(
                (
                    link.get("url")
                    for link in bundle.get("link") or []
                    if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str)
                ),
                None,
            )
            if not next_url or not bundle.get("entry"):
                return
            if next_url in seen:
                raise FhirProtocolError(
                    f"The server's paging links for a search on {where} loop (page {page}); the result is incomplete."
                )
            if page >= cap:
                raise FhirPageLimitError(
                    f"A search on {where} has more than {cap} pages (the client's page cap); "
                    "the result would be incomplete, so it is not used.",
                    max_pages=cap,
                )
            seen.add(next_url)
            bundle = self._json("GET", next_url, headers=_NO_CACHE, idempotent=True)
            page += 1

    def search(
        self, type_: str | None, params: Params = None, *, max_pages: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every resource of every page (matches and `_include`d ones), in order."""
        for bundle in self.pages(type_, params, max_pages=max_pages):
            for entry in bundle.get("entry") or []:
                resource = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(resource, dict) and resource.get("resourceType") != "OperationOutcome":
                    yield resource

    def create(self, resource: Mapping[str, Any], if_none_exist: str | None = None) -> tuple[dict[str, Any], bool]:
        """POST a resource; with `if_none_exist` (`identifier=sys|val`) a conditional create.

        Returns (the stored resource, created). A conditional create that matched an existing
        resource returns that resource and False.
        """
        type_ = str(resource["resourceType"])
        headers = {"Prefer": "return=representation"}
        if if_none_exist:
            headers["If-None-Exist"] = if_none_exist
        # A plain create repeated after a lost answer would create twice; a conditional one not.
        response = self._request("POST", type_, body=resource, headers=headers, idempotent=bool(if_none_exist))
        created = response.status_code == 201
        stored = self._resource_from_write(response, type_)
        log.info("%s %s/%s", "created" if created else "matched", type_, stored.get("id"))
        return stored, created

    def update(self, resource: Mapping[str, Any], if_match: str | None = None) -> dict[str, Any]:
        """PUT `Type/id`; `if_match` is a version id (`3`, a UUID or `W/"3"`): 412 → FhirConflict."""
        type_, id_ = str(resource["resourceType"]), str(resource["id"])
        headers = {"Prefer": "return=representation"}
        if if_match:
            headers["If-Match"] = f'W/"{parse_etag(if_match)}"'
        response = self._request("PUT", f"{type_}/{id_}", body=resource, headers=headers, idempotent=True)
        return self._resource_from_write(response, type_)

    def delete(self, type_: str, id_: str) -> None:
        self._request("DELETE", f"{type_}/{id_}", idempotent=True)

    def transaction(self, bundle: Mapping[str, Any]) -> dict[str, Any]:
        """POST a transaction (or batch) Bundle; returns the response Bundle (see `entry_results`)."""
        response = self._json("POST", "", body=bundle, idempotent=_bundle_is_idempotent(bundle))
        if response.get("resourceType") != "Bundle":
            raise FhirProtocolError("The server answered a transaction with something other than a Bundle.")
        return response

    def validate(self, resource: Mapping[str, Any], profile: str | None = None) -> dict[str, Any]:
        """`$validate`: the server's OperationOutcome, whether the resource is valid or not
        (servers answer an invalid resource with 200, 400, 412 or 422 and an OperationOutcome)."""
        type_ = str(resource["resourceType"])
        parameters: dict[str, Any] = {
            "resourceType": "Parameters",
            "parameter": [{"name": "resource", "resource": resource}],
        }
        if profile:
            parameters["parameter"].append({"name": "profile", "valueUri": profile})
        response = self._request("POST", f"{type_}/$validate", body=parameters, idempotent=True, accept=(400, 412, 422))
        body = _body(response)
        if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
            raise FhirProtocolError("$validate did not answer with an OperationOutcome.", status=response.status_code)
        return body

    def capabilities(self) -> dict[str, Any]:
        """The server's CapabilityStatement (fetched once)."""
        if self._capabilities is None:
            self._capabilities = self._json("GET", "metadata", idempotent=True)
        return self._capabilities

    def supports_include(self, type_: str, include: str, *, reverse: bool = False) -> bool:
        """Whether the CapabilityStatement lists this `_include` (`*` counts)."""
        try:
            statement = self.capabilities()
        except FhirError:
            return False
        key = "searchRevInclude" if reverse else "searchInclude"
        for rest in statement.get("rest") or []:
            for resource in rest.get("resource") or [] if isinstance(rest, dict) else []:
                if isinstance(resource, dict) and resource.get("type") == type_:
                    listed = resource.get(key) or []
                    return "*" in listed or include in listed
        return False

    # -- plumbing

    def _json(
        self,
        method: str,
        path: str,
        *,
        params: Params = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool,
    ) -> dict[str, Any]:
        response = self._request(method, path, params=params, body=body, headers=headers, idempotent=idempotent)
        data = _body(response)
        if not isinstance(data, dict):
            raise FhirProtocolError(
                f"The server answered {method} {_safe_path(path)} without a JSON resource.",
                status=response.status_code,
                method=method,
                path=_safe_path(path),
            )
        return data

    def _resource_from_write(self, response: Any, type_: str) -> dict[str, Any]:
        data = _body(response)
        if isinstance(data, dict) and data.get("resourceType") == type_:
            return data
        # Some servers answer a write with no body (or an OperationOutcome): read what was stored.
        location = parse_location(response.headers.get("Location") or response.headers.get("Content-Location"))
        if location is None:
            raise FhirProtocolError("The server answered a write without the resource or a Location.")
        if location.version:
            return self.vread(location.type, location.id, location.version)
        return self.read(location.type, location.id)

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Params = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool,
        accept: Iterable[int] = (),
    ) -> Any:
        send_headers = {"Accept": FHIR_JSON}
        data = None
        if body is not None:
            send_headers["Content-Type"] = f"{FHIR_JSON}; charset=utf-8"
            data = orjson.dumps(body)
        send_headers.update(headers or {})
        response = self.send_raw(
            method, self.url(path), params=params, data=data, headers=send_headers, idempotent=idempotent
        )
        if response.status_code < 400 or response.status_code in tuple(accept):
            return response
        raise _error_for(response, method, path)

    def send_raw(
        self,
        method: str,
        url: str,
        *,
        params: Params = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool,
        authenticate: bool = True,
    ) -> Any:
        """One HTTP exchange with retries; returns the final response whatever its status."""
        on_server = url.startswith(self.base_url + "/") or url == self.base_url
        path = _safe_path(url[len(self.base_url) + 1 :] if on_server else urlsplit(url).path)
        query_names = _param_names(params) or _query_names(url)
        shown = f"{path}?{'&'.join(query_names)}" if query_names else path
        attempt = 0
        refreshed = False
        while True:
            send_headers = {"User-Agent": self.user_agent, **(headers or {})}
            if authenticate and self.auth is not None:
                send_headers.update(self.auth.headers(self))
            started = time.monotonic()
            try:
                response = self._exchange(
                    method, url, params=params, data=data, headers=send_headers, deadline_at=started + self.deadline
                )
            except _TooLarge:
                raise FhirResponseTooLarge(
                    f"The FHIR server's answer to {method} {path} is larger than the limit of "
                    f"{self.max_response_bytes:,} bytes.",
                    limit=self.max_response_bytes,
                    method=method,
                    path=path,
                ) from None
            except requests.exceptions.RequestException as exc:
                kind = _exception_kind(exc)
                # Only failures before the request left this machine are safe to repeat for a
                # non-idempotent request; after a read timeout the server may have acted on it.
                safe = idempotent or kind == "connect"
                if kind != "other" and safe and attempt < self.retries:
                    delay = self._backoff(attempt)
                    log.info("%s %s failed (%s); retry %d in %.2f s", method, shown, kind, attempt + 1, delay)
                    time.sleep(delay)
                    attempt += 1
                    continue
                if isinstance(exc, _DeadlineExceeded):
                    raise FhirDeadlineExceeded(
                        f"The FHIR server did not finish its answer to {method} {path} within the "
                        f"{self.deadline:g} s deadline ({attempt + 1} attempt(s)).",
                        deadline=self.deadline,
                        method=method,
                        path=path,
                    ) from None
                raise FhirServerUnavailable(
                    f"The FHIR server could not be reached ({kind}) for {method} {path} "
                    f"after {attempt + 1} attempt(s).",
                    method=method,
                    path=path,
                ) from None
            elapsed_ms = (time.monotonic() - started) * 1000
            status = response.status_code
            log.info("%s %s -> %d (%.0f ms)", method, shown, status, elapsed_ms)
            if status == 401 and authenticate and self.auth is not None and not refreshed and self.auth.invalidate():
                refreshed = True
                continue
            if status in RETRY_STATUSES and attempt < self.retries and (idempotent or status in NOT_PROCESSED_STATUSES):
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                delay = min(retry_after, self.max_retry_after) if retry_after is not None else self._backoff(attempt)
                log.info("%s %s -> %d; retry %d in %.2f s", method, shown, status, attempt + 1, delay)
                response.close()
                time.sleep(delay)
                attempt += 1
                continue
            return response

    def _exchange(
        self,
        method: str,
        url: str,
        *,
        params: Params,
        data: Any,
        headers: Mapping[str, str],
        deadline_at: float,
    ) -> Any:
        """One HTTP exchange with its body read under the size cap and the deadline. The response
        comes back with its body loaded (`.content`, `.json()` work); requests exceptions (and
        `_DeadlineExceeded`, a Timeout) and `_TooLarge` are raised as they are."""
        response = self.session.request(
            method,
            url,
            params=_param_list(params),
            data=data,
            headers=headers,
            timeout=self._timeouts(),
            allow_redirects=False,
            stream=True,
        )
        try:
            body = self._read_body(response, deadline_at)
        except BaseException:
            response.close()
            raise
        response._content = body
        response._content_consumed = True
        release = getattr(response.raw, "release_conn", None)
        if callable(release):
            release()  # the body was read to its end: the connection can be reused
        return response

    def _timeouts(self) -> tuple[float, float]:
        """(connect, read) timeouts, each no longer than the deadline."""
        connect, read = self.timeout if isinstance(self.timeout, tuple) else (self.timeout, self.timeout)
        return min(connect, self.deadline), min(read, self.deadline)

    def _read_body(self, response: Any, deadline_at: float) -> bytes:
        """Read the body in pieces: each read returns what has arrived (`read1`), so the deadline
        is checked at least once per read timeout, and the size is checked before the next piece
        is kept. A declared Content-Length over the cap is refused before anything is read; the
        size counted is the decoded one (a small gzip body cannot expand past the cap)."""
        limit = self.max_response_bytes
        declared = str(response.headers.get("Content-Length") or "").strip()
        if declared.isdigit() and int(declared) > limit:
            raise _TooLarge
        raw = response.raw
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() > deadline_at:
                raise _DeadlineExceeded("deadline")
            try:
                chunk = raw.read1(_READ_CHUNK, decode_content=True)
            except urllib3.exceptions.ReadTimeoutError:
                raise requests.exceptions.ReadTimeout("read timeout") from None
            except urllib3.exceptions.DecodeError:
                raise requests.exceptions.ContentDecodingError("content decoding") from None
            except (urllib3.exceptions.HTTPError, OSError):
                # A connection reset or cut short mid-body: as for a failed connection.
                raise requests.exceptions.ConnectionError("connection broken while reading") from None
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)

    def _backoff(self, attempt: int) -> float:
        # Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): spreads the
        # retries of many clients instead of having them return in waves.
        ceiling = min(MAX_BACKOFF_S, self.backoff * (2**attempt))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography


class _TooLarge(Exception):
    """Internal: the body passed `max_response_bytes` (raised as FhirResponseTooLarge)."""


class _DeadlineExceeded(requests.exceptions.Timeout):
    """Internal: the exchange passed its deadline. A Timeout, so it is retried like a read timeout
    (only when that cannot write twice); raised as FhirDeadlineExceeded after the last attempt."""


def _bundle_is_idempotent(bundle: Mapping[str, Any]) -> bool:
    """A transaction is safe to repeat when every entry is: GET/HEAD/PUT/DELETE, or a POST that is
    a conditional create (ifNoneExist) or a search/operation. Conditional creates on the adapter's
    deterministic identifiers find what the first attempt wrote instead of writing it again."""
    for entry in bundle.get("entry") or []:
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(request, dict):
            return False
        method = str(request.get("method", "")).upper()
        if method in ("GET", "HEAD", "PUT", "DELETE"):
            continue
        url = str(request.get("url", ""))
        if method == "POST" and (request.get("ifNoneExist") or "_search" in url or "$" in url):
            continue
        return False
    return True


def _exception_kind(exc: Exception) -> str:
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect"
    if isinstance(exc, requests.exceptions.Timeout):
        return "timeout"
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = repr(exc)
        # urllib3 names a refused or unresolvable connection NewConnectionError / NameResolutionError:
        # nothing was sent, so any request can be repeated.
        if "NewConnectionError" in text or "NameResolutionError" in text or "Connection refused" in text:
            return "connect"
        return "connection"
    return "other"


def parse_retry_after(value: str | None, *, now: dt.datetime | None = None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    current = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - current).total_seconds())


def _error_for(response: Any, method: str, path: str) -> FhirError:
    status = response.status_code
    body = _body(response)
    outcome = body if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome" else None
    shown = _safe_path(path if "://" not in path else urlsplit(path).path)
    message = f"The FHIR server answered {status} to {method} {shown}."
    kwargs: dict[str, Any] = {"status": status, "outcome": outcome, "method": method, "path": shown}
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


def _body(response: Any) -> Any:
    if not response.content:
        return None
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def _safe_path(path: str) -> str:
    """The path without its query (query values can be patient data, e.g. identifier=MRN)."""
    return path.split("?", 1)[0] or "/"


def _query_names(url: str) -> list[str]:
    query = urlsplit(url).query if "?" in url else ""
    return list(dict.fromkeys(name for name, _ in parse_qsl(query, keep_blank_values=True)))


def _param_names(params: Params) -> list[str]:
    return list(dict.fromkeys(name for name, _ in _param_list(params) or []))


def _param_list(params: Params) -> list[tuple[str, str]] | None:
    if params is None:
        return None
    if isinstance(params, Mapping):
        pairs: list[tuple[str, str]] = []
        for name, value in params.items():
            if isinstance(value, str):
                pairs.append((name, value))
            else:
                pairs.extend((name, v) for v in value)
        return pairs
    return [(str(name), str(value)) for name, value in params]
