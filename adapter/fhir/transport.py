"""HTTP to one FHIR server: the exchange under its limits, the retries, and the idempotency policy.

- One `requests.Session` per transport, so connections are reused.
- Timeouts (connect, read) and three deadlines: `deadline` bounds one attempt, body included, so a
  slow-drip server cannot hold a worker by sending a byte just before every read timeout;
  `total_deadline` bounds the whole request, retries and waits included; `within(seconds)` bounds
  every request made inside it together (the service's one sync), on the calling thread.
- A response body is read in pieces up to `max_response_bytes` (a declared Content-Length over
  it is refused before anything is read; the size counted is the decoded one, so a small gzip
  body cannot expand past the cap).
- Retries with exponential backoff and full jitter on 429, 502, 503, 504, connection errors and
  timeouts, honouring `Retry-After` (seconds or an HTTP date, capped). Other 4xx are never
  retried. A request is repeated only when that cannot write twice: the caller says whether it is
  idempotent (reads, searches, `$validate`, DELETE, PUT, conditional creates, transactions of
  such entries), or the server certainly did not act on it: 429 and 503 (refused before
  processing) or a connection that was never made. After a 502/504, a read timeout or a broken
  connection a plain create may have happened, so it is not repeated.

Only the public API of requests is used, and of the urllib3 response it hands out as
`Response.raw` for streamed bodies: the body is read into `HttpResponse`, a value of our own, and
failures are told apart by their exception classes.

Logging names the method, the path with query *names* only, the status and the time; never query
values or bodies, which can hold patient data.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import orjson
import requests
import urllib3.exceptions

from ..errors import FhirDeadlineExceeded, FhirResponseTooLarge, FhirServerUnavailable, UsageError

log = logging.getLogger(__name__)

DEFAULT_USER_AGENT = "facet-adapter/0.1 (+https://github.com/facet-adapter)"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Statuses that say the server did not act on the request, so even a non-idempotent request may
# be repeated: 429 (rate limited before processing) and 503 (not accepting requests).
NOT_PROCESSED_STATUSES = frozenset({429, 503})
MAX_RETRY_AFTER_S = 60.0
MAX_BACKOFF_S = 30.0
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
DEFAULT_DEADLINE_S = 120.0
DEFAULT_TOTAL_DEADLINE_S = 300.0
_READ_CHUNK = 64 * 1024

Params = Mapping[str, str | Sequence[str]] | Sequence[tuple[str, str]] | None


class Auth(Protocol):
    """What the transport asks of a credential (see `adapter.fhir.auth`)."""

    def headers(self, transport: Transport) -> dict[str, str]:
        """Headers to add to a request."""
        ...

    def invalidate(self) -> bool:
        """Forget a cached credential after a 401; True when a new one may help."""
        ...


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """An answer with its body read (within the size cap and the deadline)."""

    status: int
    headers: Mapping[str, str]  # case-insensitive, as requests gives them
    content: bytes
    url: str

    @property
    def content_type(self) -> str | None:
        """The media type without parameters: `application/fhir+json`."""
        value = self.headers.get("Content-Type") or ""
        return value.split(";", 1)[0].strip().lower() or None

    def json(self) -> Any:
        """The body as JSON; None when it is empty or not JSON."""
        if not self.content:
            return None
        try:
            return orjson.loads(self.content)
        except orjson.JSONDecodeError:
            return None


class _Failed(Exception):
    """Internal: one attempt failed before a complete answer. `kind` decides the retry:
    connect (nothing was sent), timeout, connection, deadline, too-large, undecodable, other."""

    def __init__(self, kind: str, response: requests.Response | None = None) -> None:
        super().__init__(kind)
        self.kind = kind
        self.status = response.status_code if response is not None else None
        content_type = response.headers.get("Content-Type") if response is not None else None
        self.content_type = content_type.split(";", 1)[0].strip().lower() if content_type else None

    @property
    def retryable(self) -> bool:
        return self.kind in ("connect", "timeout", "connection", "deadline")

    def answer(self) -> str:
        """`200 (application/fhir+json)` when the status line and headers had come."""
        if self.status is None:
            return ""
        return f"{self.status} ({self.content_type or 'no content type'})"


class Transport:
    """HTTP exchanges with the FHIR server at `base_url` (and its token endpoint)."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: Auth | None = None,
        timeout: float | tuple[float, float] = (5, 30),
        retries: int = 4,
        backoff: float = 0.5,
        session: requests.Session | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
        max_retry_after: float = MAX_RETRY_AFTER_S,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        deadline: float = DEFAULT_DEADLINE_S,
        total_deadline: float = DEFAULT_TOTAL_DEADLINE_S,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError("The FHIR base URL must be an absolute http(s) URL, e.g. https://fhir.example.org/r4.")
        if max_response_bytes < 1 or deadline <= 0 or total_deadline <= 0:
            raise ValueError("max_response_bytes, deadline and total_deadline must be positive.")
        self.base_url = base_url.rstrip("/")
        # Messages name the server; credentials in the URL (user:password@) are left out.
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port else ""
        self.shown_base = f"{parts.scheme}://{host}{port}{parts.path.rstrip('/')}"
        self.auth = auth
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.session = session if session is not None else requests.Session()
        if self.session.trust_env:
            # What the environment says for this server (proxy variables, CA bundle), read once:
            # requests would read it again on every request (a walk of os.environ, about a
            # millisecond each). Without trust_env, requests also stops putting a ~/.netrc
            # login in place of the bearer token.
            settings = self.session.merge_environment_settings(self.base_url, {}, None, None, None)
            self.session.proxies.update(settings.get("proxies") or {})
            if isinstance(settings.get("verify"), str):
                self.session.verify = settings["verify"]
            self.session.trust_env = False
        self.user_agent = user_agent
        self.max_retry_after = max_retry_after
        self.max_response_bytes = max_response_bytes
        self.deadline = deadline
        self.total_deadline = total_deadline
        self._scope = threading.local()  # the stop time and limit of `within`, per thread

    @contextmanager
    def within(self, seconds: float) -> Iterator[None]:
        """Every request made inside (on this thread), retries included, ends by `seconds` from
        now: the last one fails with FhirDeadlineExceeded. Nested scopes keep the earlier end."""
        outer = getattr(self._scope, "limit", None)
        stop_at = time.monotonic() + seconds
        if outer is not None and outer[0] <= stop_at:
            yield
            return
        self._scope.limit = (stop_at, seconds)
        try:
            yield
        finally:
            self._scope.limit = outer

    def close(self) -> None:
        self.session.close()

    def describe(self, method: str, url: str, params: Params = None) -> str:
        """`GET Patient?identifier`: the path relative to the base URL (`[base]` for the base
        itself, the absolute URL without query for another host) with query parameter names only."""
        names = _param_names(params) or _query_names(url)
        return f"{method} {self.path_of(url)}" + (f"?{'&'.join(names)}" if names else "")

    def path_of(self, url: str) -> str:
        """The path without its query (query values can be patient data, e.g. identifier=MRN)."""
        if url == self.base_url or url.startswith((self.base_url + "/", self.base_url + "?")):
            relative = url[len(self.base_url) + 1 :].split("?", 1)[0]
            return relative or "[base]"
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path or '/'}"

    def send(
        self,
        method: str,
        url: str,
        *,
        params: Params = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool,
        authenticate: bool = True,
    ) -> HttpResponse:
        """One request with its retries; returns the final answer whatever its status. Raises
        FhirServerUnavailable (FhirDeadlineExceeded) when no complete answer came, and
        FhirResponseTooLarge when the answer passed the size cap."""
        shown = self.describe(method, url, params)
        stop_at = time.monotonic() + self.total_deadline
        scope = getattr(self._scope, "limit", None)
        if scope is not None and scope[0] < stop_at:
            stop_at = scope[0]
            if time.monotonic() >= stop_at:
                raise self._error(_Failed("deadline"), method, url, shown, 0, stop_at)
        attempt = 0
        refreshed = False
        while True:
            send_headers = {"User-Agent": self.user_agent, **(headers or {})}
            if authenticate and self.auth is not None:
                send_headers.update(self.auth.headers(self))
            started = time.monotonic()
            try:
                response = self._exchange(
                    method,
                    url,
                    params=params,
                    data=data,
                    headers=send_headers,
                    deadline_at=min(started + self.deadline, stop_at),
                )
            except _Failed as failure:
                # Only failures before the request left this machine are safe to repeat for a
                # non-idempotent request; after a read timeout the server may have acted on it.
                safe = idempotent or failure.kind == "connect"
                if failure.retryable and safe and attempt < self.retries:
                    delay = self._backoff(attempt)
                    if time.monotonic() + delay < stop_at:
                        log.info("%s failed (%s); retry %d in %.2f s", shown, failure.kind, attempt + 1, delay)
                        time.sleep(delay)
                        attempt += 1
                        continue
                raise self._error(failure, method, url, shown, attempt + 1, stop_at) from None
            elapsed_ms = (time.monotonic() - started) * 1000
            status = response.status
            log.info("%s -> %d (%.0f ms)", shown, status, elapsed_ms)
            if status == 401 and authenticate and self.auth is not None and not refreshed and self.auth.invalidate():
                refreshed = True
                continue
            if status in RETRY_STATUSES and attempt < self.retries and (idempotent or status in NOT_PROCESSED_STATUSES):
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                delay = min(retry_after, self.max_retry_after) if retry_after is not None else self._backoff(attempt)
                if time.monotonic() + delay < stop_at:
                    log.info("%s -> %d; retry %d in %.2f s", shown, status, attempt + 1, delay)
                    time.sleep(delay)
                    attempt += 1
                    continue
            return response

    def _error(
        self, failure: _Failed, method: str, url: str, shown: str, attempts: int, stop_at: float
    ) -> FhirServerUnavailable | FhirResponseTooLarge:
        where = f"The FHIR server at {self.shown_base}"
        answer = failure.answer()
        context: dict[str, Any] = {
            "method": method,
            "path": self.path_of(url),
            "base_url": self.shown_base,
            "status": failure.status,
            "content_type": failure.content_type,
        }
        if failure.kind == "too-large":
            return FhirResponseTooLarge(
                f"{where} answered {answer} to {shown} with a body larger than the limit of "
                f"{self.max_response_bytes:,} bytes.",
                limit=self.max_response_bytes,
                **context,
            )
        if failure.kind == "deadline":
            scope = getattr(self._scope, "limit", None)
            if scope is not None and scope[0] == stop_at and time.monotonic() >= stop_at:
                limit, what = scope[1], "limit of the whole sync"
            elif time.monotonic() >= stop_at:
                limit, what = self.total_deadline, "overall limit of one request"
            else:
                limit, what = self.deadline, "deadline"
            return FhirDeadlineExceeded(
                f"{where} did not finish its answer{f' {answer}' if answer else ''} to {shown} within the "
                f"{limit:g} s {what} ({attempts} attempt(s)).",
                deadline=limit,
                **context,
            )
        if failure.kind == "undecodable":
            return FhirServerUnavailable(
                f"{where} answered {answer or 'with a body'} to {shown} that could not be decoded.", **context
            )
        if answer:
            return FhirServerUnavailable(
                f"{where} broke off its answer {answer} to {shown} ({failure.kind}) after {attempts} attempt(s).",
                **context,
            )
        return FhirServerUnavailable(
            f"{where} could not be reached ({failure.kind}) for {shown} after {attempts} attempt(s).", **context
        )

    def _exchange(
        self,
        method: str,
        url: str,
        *,
        params: Params,
        data: Any,
        headers: Mapping[str, str],
        deadline_at: float,
    ) -> HttpResponse:
        """One HTTP exchange, its body read under the size cap and the deadline."""
        try:
            response = self.session.request(
                method,
                url,
                params=param_list(params),
                data=data,
                headers=dict(headers),
                timeout=self._timeouts(deadline_at),
                allow_redirects=False,
                stream=True,
            )
        except requests.exceptions.RequestException as exc:
            raise _Failed(_request_failure(exc)) from None
        # Closing after the whole body was read keeps the connection in the pool (urllib3 released
        # it at the body's end); after a failure it closes the connection, which is then unusable.
        with response:
            body = self._read_body(response, deadline_at)
            return HttpResponse(response.status_code, response.headers, body, response.url)

    def _timeouts(self, deadline_at: float) -> tuple[float, float]:
        """(connect, read) timeouts, each no longer than what is left of the deadline."""
        connect, read = self.timeout if isinstance(self.timeout, tuple) else (self.timeout, self.timeout)
        left = max(deadline_at - time.monotonic(), 0.001)
        return min(connect, left), min(read, left)

    def _read_body(self, response: requests.Response, deadline_at: float) -> bytes:
        """Read the body in pieces. `read1` returns what has arrived (where `iter_content` waits
        for a full chunk), so the deadline is checked at least once per read timeout, and the size
        is checked before the next piece is kept."""
        limit = self.max_response_bytes
        declared = str(response.headers.get("Content-Length") or "").strip()
        if declared.isdigit() and int(declared) > limit:
            raise _Failed("too-large", response)
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() > deadline_at:
                raise _Failed("deadline", response)
            try:
                chunk = response.raw.read1(_READ_CHUNK, decode_content=True)
            except urllib3.exceptions.ReadTimeoutError:
                raise _Failed("timeout", response) from None
            except urllib3.exceptions.DecodeError:
                raise _Failed("undecodable", response) from None
            except (urllib3.exceptions.HTTPError, OSError):
                # A connection reset or cut short mid-body: as for a failed connection.
                raise _Failed("connection", response) from None
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise _Failed("too-large", response)
            chunks.append(chunk)

    def _backoff(self, attempt: int) -> float:
        # Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): spreads the
        # retries of many clients instead of having them return in waves.
        ceiling = min(MAX_BACKOFF_S, self.backoff * (2**attempt))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography


def _request_failure(exc: requests.exceptions.RequestException) -> str:
    """The kind of failure of `Session.request`, by exception class."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect"
    if isinstance(exc, requests.exceptions.Timeout):
        return "timeout"
    if isinstance(exc, requests.exceptions.ConnectionError):
        # urllib3 raises NewConnectionError (NameResolutionError among them) for a connection that
        # was refused or never resolved: nothing was sent, so any request can be repeated.
        if any(isinstance(cause, urllib3.exceptions.NewConnectionError) for cause in _causes(exc)):
            return "connect"
        return "connection"
    if isinstance(exc, requests.exceptions.ContentDecodingError):
        return "undecodable"
    return "other"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it wraps: requests passes urllib3's error as its first argument,
    urllib3's MaxRetryError names its cause as `reason`, and Python chains causes."""
    pending = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            pending.append(reason)
        pending.extend(linked for linked in (current.__cause__, current.__context__) if linked is not None)


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


def _query_names(url: str) -> list[str]:
    query = urlsplit(url).query if "?" in url else ""
    return list(dict.fromkeys(name for name, _ in parse_qsl(query, keep_blank_values=True)))


def _param_names(params: Params) -> list[str]:
    return list(dict.fromkeys(name for name, _ in param_list(params) or []))


def param_list(params: Params) -> list[tuple[str, str]] | None:
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
