"""The EHR's JWT on every CDS Hooks call (docs/cds-hooks.md, security).

`Authorization: Bearer <JWT>` signed with an asymmetric key (RSA, RSA-PSS or EC; never `none` or
an HMAC) whose `kid` is in one of the operator's JSON Web Key Sets (`--cds-client-jwks`, files or
URLs read at start; a URL is read again, at most once a minute, when a token names a key it does
not have). A `jku` header is not followed: keys come only from the operator. The claims: `iss`
one of `--cds-issuer`, `aud` the URL of the endpoint called, `exp` and `iat` (at most five
minutes apart, 30 s of clock skew allowed), and a `jti` not seen before while the token lives.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jwt
import orjson
import requests
from jwt import PyJWK

from ..errors import UsageError
from .settings import CLOCK_LEEWAY_S, MAX_TOKEN_LIFETIME_S, REPLAY_CACHE_SIZE

log = logging.getLogger(__name__)

ALGORITHMS: dict[str, str] = {
    **{f"RS{n}": "RSA" for n in (256, 384, 512)},
    **{f"PS{n}": "RSA" for n in (256, 384, 512)},
    **{f"ES{n}": "EC" for n in (256, 384, 512)},
}
_MAX_JWKS_BYTES = 1024 * 1024
_REFRESH_S = 60.0
_JWKS_TIMEOUT = (5.0, 10.0)


class TokenRefused(Exception):
    """No valid JWT: HTTP 401. The message says why, never what the token held."""


class ReplayCacheFull(Exception):
    """More live tokens than the replay cache holds: HTTP 503 (try again)."""


Fetch = Callable[[str], bytes]


def _fetch(url: str) -> bytes:
    with requests.get(url, timeout=_JWKS_TIMEOUT, stream=True, headers={"Accept": "application/json"}) as response:
        response.raise_for_status()
        body = response.raw.read(_MAX_JWKS_BYTES + 1, decode_content=True)
    if len(body) > _MAX_JWKS_BYTES:
        raise ValueError("the key set is over 1 MiB")
    return bytes(body)


def _is_url(source: str) -> bool:
    return source.startswith(("https://", "http://"))


class KeyStore:
    """The EHRs' public keys by `kid`."""

    def __init__(self, sources: Sequence[str], *, fetch: Fetch = _fetch) -> None:
        self.sources = tuple(sources)
        self._fetch = fetch
        self._lock = threading.Lock()
        self._refreshed = 0.0
        self._keys: dict[str, dict[str, Any]] = {}
        self._parsed: dict[tuple[str, str], PyJWK] = {}
        for source in self.sources:
            self._add(source, self._read(source), strict=True)

    def __len__(self) -> int:
        return len(self._keys)

    def _read(self, source: str) -> list[dict[str, Any]]:
        where = f"--cds-client-jwks {source}"
        try:
            raw = self._fetch(source) if _is_url(source) else Path(source).read_bytes()
            data = orjson.loads(raw)
        except (OSError, ValueError, requests.RequestException) as exc:
            raise UsageError(f"{where} cannot be read as a JSON Web Key Set ({type(exc).__name__}).") from None
        keys = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(keys, list):
            raise UsageError(f"{where} is not a JSON Web Key Set (no keys list).")
        for key in keys:
            if not isinstance(key, dict) or not isinstance(key.get("kid"), str) or not key["kid"]:
                raise UsageError(f"{where}: every key needs a kid.")
            if key.get("kty") not in ("RSA", "EC"):
                raise UsageError(f"{where}: key {key['kid']!r} is not an RSA or EC public key.")
            if "d" in key:
                raise UsageError(f"{where}: key {key['kid']!r} is a private key; give the public key set.")
        return keys

    def _add(self, source: str, keys: list[dict[str, Any]], *, strict: bool) -> None:
        for key in keys:
            kid = key["kid"]
            if kid in self._keys and self._keys[kid] != key:
                if strict:
                    raise UsageError(f"--cds-client-jwks {source}: kid {kid!r} is already used by another key.")
                continue
            self._keys[kid] = key

    def key(self, kid: str, algorithm: str) -> PyJWK | None:
        """The key `kid` for `algorithm`; None when there is none (a key set URL is read again
        first, at most once a minute)."""
        with self._lock:
            if kid not in self._keys and time.monotonic() - self._refreshed > _REFRESH_S:
                self._refreshed = time.monotonic()
                for source in filter(_is_url, self.sources):
                    try:
                        self._add(source, self._read(source), strict=False)
                    except UsageError as exc:
                        log.warning("CDS Hooks: key set not refreshed: %s", exc.message)
            data = self._keys.get(kid)
            if data is None:
                return None
            if data.get("alg") not in (None, algorithm) or ALGORITHMS.get(algorithm) != data.get("kty"):
                return None
            cached = self._parsed.get((kid, algorithm))
            if cached is None:
                try:
                    cached = PyJWK(data, algorithm=algorithm)
                except jwt.PyJWTError:
                    return None
                self._parsed[(kid, algorithm)] = cached
            return cached


class ReplayCache:
    """The `jti`s of the tokens seen, each kept until its token expires."""

    def __init__(self, size: int = REPLAY_CACHE_SIZE) -> None:
        self.size = size
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def first_use(self, issuer: str, jti: str, expires: float, now: float) -> bool:
        with self._lock:
            if len(self._seen) >= self.size:
                self._seen = {key: exp for key, exp in self._seen.items() if exp + CLOCK_LEEWAY_S > now}
                if len(self._seen) >= self.size:
                    raise ReplayCacheFull
            if (issuer, jti) in self._seen:
                return False
            self._seen[(issuer, jti)] = expires
            return True


class JwtVerifier:
    def __init__(
        self,
        keys: KeyStore,
        issuers: Iterable[str],
        *,
        replay: ReplayCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.issuers = tuple(issuers)
        self.replay = replay or ReplayCache()
        self.clock = clock

    def verify(self, authorization: str | None, audience: str) -> Mapping[str, Any]:
        """The token's claims, or TokenRefused."""
        if not self.keys.sources:
            raise TokenRefused("This service has no EHR keys configured (--cds-client-jwks).")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise TokenRefused("A CDS Hooks call needs Authorization: Bearer <JWT>.")
        token = token.strip()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRefused("The bearer token is not a JWT.") from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
            raise TokenRefused("The JWT is not signed with an accepted algorithm (RS*, PS* or ES*).")
        if not isinstance(kid, str) or not kid:
            raise TokenRefused("The JWT header names no kid.")
        if "typ" in header and str(header["typ"]).upper() != "JWT":
            raise TokenRefused("The JWT header's typ is not JWT.")
        key = self.keys.key(kid, algorithm)
        if key is None:
            raise TokenRefused("The JWT is signed with a key this service does not know.")
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[algorithm],
                audience=audience,
                issuer=self.issuers,
                leeway=CLOCK_LEEWAY_S,
                options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRefused("The JWT has expired.") from None
        except jwt.InvalidAudienceError:
            raise TokenRefused("The JWT's aud is not this endpoint's URL.") from None
        except jwt.InvalidIssuerError:
            raise TokenRefused("The JWT's iss is not an EHR this service accepts.") from None
        except jwt.ImmatureSignatureError:
            raise TokenRefused("The JWT's iat is in the future.") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRefused(f"The JWT has no {exc.claim} claim.") from None
        except jwt.PyJWTError:
            raise TokenRefused("The JWT's signature or claims are not valid.") from None
        jti, issued, expires = claims["jti"], claims["iat"], claims["exp"]
        if not isinstance(jti, str) or not 0 < len(jti) <= 256:
            raise TokenRefused("The JWT's jti is not a string.")
        if expires - issued > MAX_TOKEN_LIFETIME_S + CLOCK_LEEWAY_S:
            raise TokenRefused(f"The JWT lives longer than {MAX_TOKEN_LIFETIME_S} s (exp - iat).")
        if not self.replay.first_use(str(claims["iss"]), jti, float(expires), self.clock()):
            raise TokenRefused("The JWT's jti was used before (a replayed token).")
        return claims
