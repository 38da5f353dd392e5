"""A FHIR R4 REST client that works the same against HAPI FHIR, the local test server (Medplum
engine) and other R4 servers: read, vread, search with paging, create (plain or conditional),
update (with If-Match), delete, transaction, `$validate`, the CapabilityStatement.

HTTP, retries and limits are `adapter.fhir.transport`'s, credentials `adapter.fhir.auth`'s,
answers are read by `adapter.fhir.responses`; errors are `adapter.errors.FhirError` subclasses.

Paging follows `Bundle.link[relation=next]` (absolute or relative URLs, HAPI `_getpages` or
`_offset` links alike) up to a page cap. A search that reaches the cap (or whose links loop)
raises instead of returning a prefix: a partial patient record would make the frequency and
prerequisite rules pass that should fail.

`ServerOptions` and `make_client` are the one way the commands and the service build a client.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import quote_plus, urlsplit

import orjson
import requests

from ..errors import FhirError, FhirPageLimitError, FhirProtocolError
from .auth import AuthOptions, build_auth
from .responses import answered, parse_etag, parse_location, status_error
from .transport import (
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TOTAL_DEADLINE_S,
    DEFAULT_USER_AGENT,
    MAX_RETRY_AFTER_S,
    Auth,
    HttpResponse,
    Params,
    Transport,
    param_list,
)

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
DEFAULT_MAX_PAGES = 100
# HAPI reuses the results of an identical search for up to a minute by default; a sync that
# looks for the Claim it has just written must see it.
_NO_CACHE = {"Cache-Control": "no-cache"}


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
        session: requests.Session | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
        max_pages: int = DEFAULT_MAX_PAGES,
        max_retry_after: float = MAX_RETRY_AFTER_S,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        deadline: float = DEFAULT_DEADLINE_S,
        total_deadline: float = DEFAULT_TOTAL_DEADLINE_S,
    ) -> None:
        self.transport = Transport(
            base_url,
            auth=auth,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            session=session,
            user_agent=user_agent,
            max_retry_after=max_retry_after,
            max_response_bytes=max_response_bytes,
            deadline=deadline,
            total_deadline=total_deadline,
        )
        self.base_url = self.transport.base_url
        parts = urlsplit(self.base_url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._base_path = parts.path.rstrip("/")
        self.max_pages = max_pages
        self._capabilities: dict[str, Any] | None = None
        self._includes: dict[str, tuple[set[str], set[str]]] | None = None

    @property
    def auth(self) -> Auth | None:
        return self.transport.auth

    @property
    def session(self) -> requests.Session:
        return self.transport.session

    @property
    def max_response_bytes(self) -> int:
        return self.transport.max_response_bytes

    @property
    def deadline(self) -> float:
        return self.transport.deadline

    def __repr__(self) -> str:
        return f"FhirClient({self.transport.shown_base!r})"

    def close(self) -> None:
        self.transport.close()

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
            raise FhirProtocolError(
                f"The FHIR server at {self.transport.shown_base} sent a link to another host; it was not followed.",
                base_url=self.transport.shown_base,
            )
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
        where = f"{type_ or 'the server'} at {self.transport.shown_base}"
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
                    f"The server's paging links for a search on {where} loop (page {page}); the result is incomplete.",
                    base_url=self.transport.shown_base,
                )
            if page >= cap:
                raise FhirPageLimitError(
                    f"A search on {where} has more than {cap} pages (the client's page cap); "
                    "the result would be incomplete, so it is not used.",
                    max_pages=cap,
                    base_url=self.transport.shown_base,
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
        created = response.status == 201
        stored = self._resource_from_write(response, "POST", type_)
        log.info("%s %s/%s", "created" if created else "matched", type_, stored.get("id"))
        return stored, created

    def update(self, resource: Mapping[str, Any], if_match: str | None = None) -> dict[str, Any]:
        """PUT `Type/id`; `if_match` is a version id (`3`, a UUID or `W/"3"`): 412 → FhirConflict."""
        type_, id_ = str(resource["resourceType"]), str(resource["id"])
        headers = {"Prefer": "return=representation"}
        if if_match:
            headers["If-Match"] = f'W/"{parse_etag(if_match)}"'
        response = self._request("PUT", f"{type_}/{id_}", body=resource, headers=headers, idempotent=True)
        return self._resource_from_write(response, "PUT", f"{type_}/{id_}")

    def delete(self, type_: str, id_: str) -> None:
        self._request("DELETE", f"{type_}/{id_}", idempotent=True)

    def transaction(self, bundle: Mapping[str, Any]) -> dict[str, Any]:
        """POST a transaction (or batch) Bundle; returns the response Bundle (see `entry_results`)."""
        response = self._json("POST", "", body=bundle, idempotent=_bundle_is_idempotent(bundle))
        if response.get("resourceType") != "Bundle":
            raise FhirProtocolError(
                f"The FHIR server at {self.transport.shown_base} answered a transaction with a "
                f"{response.get('resourceType')!s:.40}, not a Bundle.",
                method="POST",
                path="[base]",
                base_url=self.transport.shown_base,
            )
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
        path = f"{type_}/$validate"
        response = self._request("POST", path, body=parameters, idempotent=True, accept=(400, 412, 422))
        body = response.json()
        if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
            raise self._protocol_error(response, "POST", path, "without an OperationOutcome")
        return body

    def capabilities(self) -> dict[str, Any]:
        """The server's CapabilityStatement (fetched once)."""
        if self._capabilities is None:
            self._capabilities = self._json("GET", "metadata", idempotent=True)
        return self._capabilities

    def supports_batch(self) -> bool:
        """Whether the CapabilityStatement lists the system `batch` interaction."""
        try:
            statement = self.capabilities()
        except FhirError:
            return False
        return any(
            isinstance(interaction, dict) and interaction.get("code") == "batch"
            for rest in statement.get("rest") or []
            if isinstance(rest, dict)
            for interaction in rest.get("interaction") or []
        )

    def batch_get(self, requests: Sequence[tuple[str, Params]]) -> list[tuple[int, dict[str, Any] | None]]:
        """Several reads and searches in one round trip: a `batch` Bundle of GET entries
        (`(path, params)` each). Returns each entry's (status, resource), in order; an entry's
        failure is its status, not an exception."""
        entries = [
            {"request": {"method": "GET", "url": path + (f"?{_query(param_list(params) or [])}" if params else "")}}
            for path, params in requests
        ]
        response = self.transaction({"resourceType": "Bundle", "type": "batch", "entry": entries})
        answered_entries = response.get("entry") or []
        if len(answered_entries) != len(entries):
            raise FhirProtocolError(
                f"The FHIR server at {self.transport.shown_base} answered a batch of {len(entries)} entries "
                f"with {len(answered_entries)}.",
                method="POST",
                path="[base]",
                base_url=self.transport.shown_base,
            )
        results: list[tuple[int, dict[str, Any] | None]] = []
        for entry in answered_entries:
            entry = entry if isinstance(entry, dict) else {}
            status_text = str((entry.get("response") or {}).get("status") or "").split(" ", 1)[0]
            resource = entry.get("resource")
            results.append(
                (int(status_text) if status_text.isdigit() else 0, resource if isinstance(resource, dict) else None)
            )
        return results

    def supports_include(self, type_: str, include: str, *, reverse: bool = False) -> bool:
        """Whether the CapabilityStatement lists this `_include` (`*` counts)."""
        try:
            statement = self.capabilities()
        except FhirError:
            return False
        if self._includes is None:
            # type -> (searchInclude, searchRevInclude), from the statement fetched once
            self._includes = {}
            for rest in statement.get("rest") or []:
                for resource in rest.get("resource") or [] if isinstance(rest, dict) else []:
                    if isinstance(resource, dict) and isinstance(resource.get("type"), str):
                        self._includes.setdefault(
                            resource["type"],
                            (set(resource.get("searchInclude") or []), set(resource.get("searchRevInclude") or [])),
                        )
        listed = self._includes.get(type_, (set(), set()))[1 if reverse else 0]
        return "*" in listed or include in listed

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
        data = response.json()
        if not isinstance(data, dict):
            raise self._protocol_error(response, method, path, "without a JSON resource", params)
        return data

    def _resource_from_write(self, response: HttpResponse, method: str, path: str) -> dict[str, Any]:
        type_ = path.split("/", 1)[0]
        data = response.json()
        if isinstance(data, dict) and data.get("resourceType") == type_:
            return data
        # Some servers answer a write with no body (or an OperationOutcome): read what was stored.
        location = parse_location(response.headers.get("Location") or response.headers.get("Content-Location"))
        if location is None:
            raise self._protocol_error(response, method, path, "without the resource or a Location")
        if location.version:
            return self.vread(location.type, location.id, location.version)
        return self.read(location.type, location.id)

    def _protocol_error(
        self, response: HttpResponse, method: str, path: str, what: str, params: Params = None
    ) -> FhirProtocolError:
        url = self.url(path)
        return FhirProtocolError(
            f"The FHIR server at {self.transport.shown_base} answered {answered(response)} to "
            f"{self.transport.describe(method, url, params)} {what}.",
            status=response.status,
            method=method,
            path=self.transport.path_of(url),
            base_url=self.transport.shown_base,
            content_type=response.content_type,
        )

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
    ) -> HttpResponse:
        send_headers = {"Accept": FHIR_JSON}
        data = None
        if body is not None:
            send_headers["Content-Type"] = f"{FHIR_JSON}; charset=utf-8"
            data = orjson.dumps(body)
        send_headers.update(headers or {})
        url = self.url(path)
        response = self.transport.send(
            method, url, params=params, data=data, headers=send_headers, idempotent=idempotent
        )
        if response.status < 400 or response.status in tuple(accept):
            return response
        raise status_error(
            response,
            method=method,
            request=self.transport.describe(method, url, params),
            path=self.transport.path_of(url),
            base_url=self.transport.shown_base,
        )


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


# --------------------------------------------------------------------------- building a client


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """What the server commands (`sync`, `sandbox`, `subscribe`, `serve`) know about the FHIR
    server: its base URL, how to authenticate, the read timeout and the number of retries."""

    base_url: str
    auth: AuthOptions = field(default_factory=AuthOptions)
    timeout: float = 30.0
    retries: int = 4


CONNECT_TIMEOUT_S = 5.0


def make_client(options: ServerOptions) -> FhirClient:
    """The client `options` describe (bearer token, SMART Backend Services or no auth)."""
    return FhirClient(
        options.base_url,
        auth=build_auth(options.auth),
        timeout=(CONNECT_TIMEOUT_S, options.timeout),
        retries=options.retries,
    )


# urlencode quotes character by character in Python; a sync's batch repeats the same long values
# (the facet and evidence code lists) in every search, so each value is quoted once.
_quoted = lru_cache(maxsize=4096)(quote_plus)


def _query(params: Sequence[tuple[str, str]]) -> str:
    """`urlencode(params)` for string pairs."""
    return "&".join(f"{_quoted(name)}={_quoted(value)}" for name, value in params)
