"""The `serve` options of the CDS Hooks service (docs/cds-hooks.md, running it), defined here so
`serve` takes them with one decorator and one call."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any, TypeVar

import click

from ..errors import UsageError
from ..service.settings import check_fhir_base
from .settings import CdsSettings

F = TypeVar("F", bound=Callable[..., Any])
_NAMES = ("cds_base_url", "cds_client_jwks", "cds_issuers", "cds_allowed_fhir_bases")


def cds_options() -> Callable[[F], F]:
    decorators = [
        click.option(
            "--cds-base-url",
            "cds_base_url",
            metavar="URL",
            help="The URL EHRs call this service at; a JWT's aud must be URL/cds-services[/ID]. "
            "Default: http://HOST:PORT.",
        ),
        click.option(
            "--cds-client-jwks",
            "cds_client_jwks",
            multiple=True,
            metavar="FILE_OR_URL",
            help="An EHR's JSON Web Key Set, whose keys sign its CDS Hooks JWTs (repeatable).",
        ),
        click.option(
            "--cds-issuer",
            "cds_issuers",
            multiple=True,
            metavar="ISS",
            help="An EHR's JWT issuer (iss) the CDS Hooks service accepts (repeatable).",
        ),
        click.option(
            "--cds-allowed-fhir-base",
            "cds_allowed_fhir_bases",
            multiple=True,
            metavar="URL",
            help="A FHIR base (a hook's fhirServer) the service may read missing prefetch from (repeatable).",
        ),
    ]

    def apply(function: F) -> F:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


def cds_settings_from(options: MutableMapping[str, Any], *, host: str, port: int) -> CdsSettings:
    """Take the CDS options out of a command's keyword arguments, checked."""
    values = {name: options.pop(name, None) for name in _NAMES}
    jwks = tuple(values["cds_client_jwks"] or ())
    issuers = tuple(i.strip() for i in values["cds_issuers"] or () if i.strip())
    if jwks and not issuers:
        raise UsageError("--cds-client-jwks needs --cds-issuer: the EHRs' JWT issuers the service accepts.")
    if values["cds_base_url"]:
        base_url = check_fhir_base(values["cds_base_url"], "--cds-base-url")
    elif jwks and port == 0:
        raise UsageError("--port 0 picks a port at start: give --cds-base-url, the URL EHRs call the service at.")
    else:
        shown_host = f"[{host}]" if ":" in host else host
        base_url = f"http://{shown_host}:{port}"
    allowed = tuple(check_fhir_base(b, "--cds-allowed-fhir-base") for b in values["cds_allowed_fhir_bases"] or ())
    return CdsSettings(base_url=base_url, jwks_sources=jwks, issuers=issuers, allowed_fhir_bases=allowed)
