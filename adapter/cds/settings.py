"""What the CDS Hooks service is configured with (`serve --cds-…`, docs/cds-hooks.md)."""

from __future__ import annotations

from dataclasses import dataclass

# How long a JWT may live and how far clocks may disagree (CDS Hooks: exp SHOULD be at most five
# minutes after iat); the replay cache holds each jti until its token expires.
MAX_TOKEN_LIFETIME_S = 300
CLOCK_LEEWAY_S = 30
REPLAY_CACHE_SIZE = 100_000


@dataclass(frozen=True, slots=True)
class CdsSettings:
    # The URL EHRs call this service at (scheme, host, port, path prefix): the JWT's `aud` must be
    # `{base_url}/cds-services` for discovery and `{base_url}/cds-services/{id}` for a hook.
    base_url: str = "http://127.0.0.1"
    jwks_sources: tuple[str, ...] = ()  # files or URLs of the EHRs' JSON Web Key Sets
    issuers: tuple[str, ...] = ()  # the EHRs' `iss` values the service accepts
    allowed_fhir_bases: tuple[str, ...] = ()  # fhirServer values the service may read from
    max_concurrency: int = 4  # hook calls answered at once; more wait for a slot

    @property
    def enabled(self) -> bool:
        """The endpoints are served only to EHRs whose keys the operator gave."""
        return bool(self.jwks_sources)
