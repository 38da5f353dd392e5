"""The FHIR-server options of every command that talks to a server (`sync`, `sandbox`,
`subscribe`, `serve`), defined once: `fhir_server_options` (a click decorator) and
`server_options_from` (the `ServerOptions` they describe, which `adapter.fhir.client.make_client`
turns into a client). Also the webhook's token option of `serve` and `subscribe`.

The names are `--fhir-token` for the FHIR server's bearer token and `--hook-token` for the
webhook's. The spellings of the previous release keep working as hidden aliases: `--token`
(`sync`, `sandbox`) and `--server-token` (`subscribe`) for `--fhir-token`, `--token` (`serve`,
`subscribe`) for `--hook-token`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from ..fhir.auth import DEFAULT_SMART_SCOPE, SMART_ALGORITHMS, AuthOptions
from ..fhir.client import ServerOptions

FHIR_TOKEN_ENV = "FACET_ADAPTER_FHIR_TOKEN"  # noqa: S105 (the name of a variable, not a secret)
# The secret the FHIR server sends on each notification: `serve --hook-token` checks it and
# `subscribe --hook-token` puts it in the Subscription, so both read the same variable.
HOOK_TOKEN_ENV = "FACET_ADAPTER_HOOK_TOKEN"  # noqa: S105

F = TypeVar("F", bound=Callable[..., Any])


def hidden_alias(old: str, target: str) -> Callable[[F], F]:
    """A hidden option spelled the old way whose value goes to the parameter `target`. Given on
    the command line it wins over `target`'s environment variable and default; given together
    with `target`'s own option, the later one on the command line wins, as for a repeated option."""

    def move(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        if value is not None:
            ctx.params[target] = value
            ctx.set_parameter_source(target, ParameterSource.COMMANDLINE)

    name = f"{target}_as_{old.lstrip('-').replace('-', '_')}"
    return click.option(old, name, hidden=True, expose_value=False, callback=move)


def _apply(function: F, decorators: Sequence[Callable[[F], F]]) -> F:
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def fhir_server_options(*, fhir_token_aliases: Sequence[str] = (), base_required: bool = True) -> Callable[[F], F]:
    """The options every server command shares: base URL, bearer token or SMART Backend
    Services, read timeout and retries. The command receives them as keyword arguments to pass
    to `server_options_from`; `fhir_token_aliases` are the command's old spellings of
    `--fhir-token`. `bulk` reads files or a server, so its `--fhir-base` is optional."""
    decorators: list[Callable[[F], F]] = [
        click.option("--fhir-base", required=base_required, help="FHIR R4 base URL, e.g. http://127.0.0.1:8080/fhir."),
        click.option(
            "--fhir-token",
            "fhir_token",
            envvar=FHIR_TOKEN_ENV,
            help=f"Bearer token for the FHIR server (or {FHIR_TOKEN_ENV}).",
        ),
        *(hidden_alias(old, "fhir_token") for old in fhir_token_aliases),
        click.option("--smart-token-url", help="SMART Backend Services token endpoint."),
        click.option("--smart-client-id", help="SMART client id (iss and sub of the assertion)."),
        click.option("--smart-key", type=click.Path(exists=True, dir_okay=False), help="PEM private key file."),
        click.option("--smart-kid", help="Key id (kid) registered with the server's JWKS."),
        click.option("--smart-scope", default=DEFAULT_SMART_SCOPE, show_default=True),
        click.option("--smart-alg", type=click.Choice(SMART_ALGORITHMS), default="RS384", show_default=True),
        click.option("--timeout", type=float, default=30.0, show_default=True, help="Read timeout in seconds."),
        click.option(
            "--retries",
            type=click.IntRange(0, 10),
            default=4,
            show_default=True,
            help="Retries on 429/502/503/504 and connection errors.",
        ),
    ]
    return lambda function: _apply(function, decorators)


def server_options_from(
    *,
    fhir_base: str,
    fhir_token: str | None = None,
    smart_token_url: str | None = None,
    smart_client_id: str | None = None,
    smart_key: str | None = None,
    smart_kid: str | None = None,
    smart_scope: str = DEFAULT_SMART_SCOPE,
    smart_alg: str = "RS384",
    timeout: float = 30.0,
    retries: int = 4,
) -> ServerOptions:
    """What `fhir_server_options` collected, as one value."""
    auth = AuthOptions(
        bearer_token=fhir_token,
        smart_token_url=smart_token_url,
        smart_client_id=smart_client_id,
        smart_key=smart_key,
        smart_kid=smart_kid,
        smart_scope=smart_scope,
        smart_alg=smart_alg,
    )
    return ServerOptions(fhir_base, auth, timeout, retries)


def hook_token_option(help_text: str) -> Callable[[F], F]:
    """`--hook-token` (hidden alias `--token`), the webhook's shared secret, as `hook_token`."""
    option = click.option("--hook-token", "hook_token", envvar=HOOK_TOKEN_ENV, help=help_text)
    return lambda function: option(hidden_alias("--token", "hook_token")(function))
