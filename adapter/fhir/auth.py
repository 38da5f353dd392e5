"""Credentials for a FHIR server: a static bearer token, or SMART Backend Services (client
credentials with a signed JWT assertion, RFC 7523), and `build_auth`, which makes one of them from
the options every server command shares (`AuthOptions`)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from ..errors import FhirAuthError, UsageError
from .transport import Auth, Transport

log = logging.getLogger(__name__)

DEFAULT_SMART_SCOPE = "system/*.read system/Claim.write system/Task.write"
SMART_ALGORITHMS = ("RS384", "ES384")


@dataclass
class BearerToken:
    """A static access token (`Authorization: Bearer <token>`)."""

    token: str

    def headers(self, transport: Transport) -> dict[str, str]:
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
        if algorithm not in SMART_ALGORITHMS:
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

    def headers(self, transport: Transport) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token(transport)}"}

    def invalidate(self) -> bool:
        with self._lock:
            self._token, self._expires_at = None, 0.0
        return True

    def access_token(self, transport: Transport) -> str:
        with self._lock:
            if self._token is not None and time.monotonic() < self._expires_at:
                return self._token
            token, lifetime = self._fetch(transport)
            margin = min(self.refresh_margin, lifetime / 2)
            self._token, self._expires_at = token, time.monotonic() + lifetime - margin
            return token

    def _fetch(self, transport: Transport) -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": self.ASSERTION_TYPE,
            "client_assertion": self.assertion(),
        }
        # A token request only mints a token, so it is safe to repeat.
        response = transport.send(
            "POST",
            self.token_url,
            data=form,
            headers={"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"},
            idempotent=True,
            authenticate=False,
        )
        path = urlsplit(self.token_url).path or "/"
        shown = transport.path_of(self.token_url)
        answered = f"{response.status} ({response.content_type or 'no content type'})"
        context: dict[str, Any] = {
            "status": response.status,
            "method": "POST",
            "path": path,
            "base_url": transport.shown_base,
            "content_type": response.content_type,
        }
        body = response.json()
        if response.status >= 400 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), str) else None
            # The OAuth `error` code is a fixed vocabulary (invalid_client, invalid_scope...), safe to show.
            raise FhirAuthError(
                f"The token endpoint {shown} of the FHIR server at {transport.shown_base} refused the client: "
                f"it answered {answered}" + (f", {error}" if error else "") + ".",
                **context,
            )
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise FhirAuthError(
                f"The token endpoint {shown} of the FHIR server at {transport.shown_base} answered {answered} "
                "without an access_token.",
                **context,
            )
        expires_in = body.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, (int, float)) and expires_in > 0 else 300.0
        log.info("SMART token obtained for client %s (expires in %.0f s)", self.client_id, lifetime)
        return token, lifetime


@dataclass(frozen=True, slots=True)
class AuthOptions:
    """How to authenticate to the FHIR server, as the server commands take it: a bearer token,
    the SMART Backend Services settings (`smart_key` is the path of a PEM private key), or
    neither."""

    bearer_token: str | None = field(default=None, repr=False)
    smart_token_url: str | None = None
    smart_client_id: str | None = None
    smart_key: str | None = None
    smart_kid: str | None = None
    smart_scope: str = DEFAULT_SMART_SCOPE
    smart_alg: str = "RS384"


def build_auth(options: AuthOptions) -> Auth | None:
    """The credential `options` describe; UsageError for an incomplete or contradictory set."""
    smart = [options.smart_token_url, options.smart_client_id, options.smart_key, options.smart_kid]
    if any(smart):
        if not all(smart):
            raise UsageError(
                "SMART Backend Services needs --smart-token-url, --smart-client-id, --smart-key and --smart-kid."
            )
        if options.bearer_token:
            raise UsageError("Give either a bearer token or the SMART options, not both.")
        if options.smart_alg not in SMART_ALGORITHMS:
            raise UsageError("--smart-alg is RS384 or ES384.")
        try:
            key = Path(str(options.smart_key)).read_bytes()
        except OSError as exc:
            raise UsageError(f"The SMART key file {options.smart_key} cannot be read ({exc.strerror}).") from None
        return SmartBackendServices(
            str(options.smart_token_url),
            str(options.smart_client_id),
            key,
            str(options.smart_kid),
            options.smart_scope,
            options.smart_alg,
        )
    if options.bearer_token:
        return BearerToken(options.bearer_token)
    return None
