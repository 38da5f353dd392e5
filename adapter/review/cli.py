"""`facet-adapter users add|remove|list` and the `serve --review-…` options (loaded lazily by
`adapter.cli`; docs/cli.md, docs/server.md)."""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from ..errors import UsageError
from .settings import Network, ReviewSettings
from .users import DEFAULT_USERS_FILE, ROLES, Role, User, check_name, hash_password, load_users, save_users

F = TypeVar("F", bound=Callable[..., Any])
_FILE_HELP = f"The users file. Default: ./{DEFAULT_USERS_FILE}."
_HEADER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def _file_option() -> Callable[[F], F]:
    return click.option(
        "--file", "users_file", type=click.Path(dir_okay=False), default=str(DEFAULT_USERS_FILE), help=_FILE_HELP
    )


@click.group()
def users() -> None:
    """Manage who may sign in to serve's /review worklist (roles viewer and coder)."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True, help="viewer reads; coder also overrides.")
@_file_option()
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@click.option("--no-password", is_flag=True, help="No password: the user signs in only through single sign-on.")
def add_user(name: str, role: str, users_file: str, password_stdin: bool, no_password: bool) -> None:
    """Add a user, or change a user's role and password. Asks for the password (twice) unless
    --password-stdin or --no-password."""
    path = Path(users_file)
    check_name(name)
    if password_stdin and no_password:
        raise UsageError("Give --password-stdin or --no-password, not both.")
    password_hash: str | None = None
    if password_stdin:
        password_hash = hash_password(sys.stdin.readline().rstrip("\r\n"))
    elif not no_password:
        if not sys.stdin.isatty():
            raise UsageError("No terminal to ask the password on: give --password-stdin (or --no-password).")
        password_hash = hash_password(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    known = dict(load_users(path))
    action = "changed" if name in known else "added"
    known[name] = User(name, cast(Role, role), password_hash)
    save_users(path, known)
    sys.stdout.write(f"User {name} {action} ({role}) in {path}.\n")


@users.command("remove")
@click.argument("name")
@_file_option()
def remove_user(name: str, users_file: str) -> None:
    """Remove a user; a running service signs them out at their next request."""
    path = Path(users_file)
    known = dict(load_users(path))
    if name not in known:
        raise UsageError(f"There is no user {name[:70]!r} in {path}.")
    del known[name]
    save_users(path, known)
    sys.stdout.write(f"User {name} removed from {path}.\n")


@users.command("list")
@_file_option()
def list_users(users_file: str) -> None:
    """List the users: name, role, and whether they have a password."""
    known = load_users(Path(users_file))
    if not known:
        sys.stdout.write("(no users)\n")
        return
    width = max(len("NAME"), *(len(n) for n in known))
    lines = [f"{'NAME'.ljust(width)}  ROLE    PASSWORD"]
    for name, user in sorted(known.items()):
        lines.append(f"{name.ljust(width)}  {user.role.ljust(6)}  {'yes' if user.password_hash else 'no (sso only)'}")
    sys.stdout.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------------- serve's options

_NAMES = ("review_users", "review_trusted_proxies", "review_user_header")


def review_options() -> Callable[[F], F]:
    decorators = [
        click.option(
            "--review-users",
            "review_users",
            type=click.Path(dir_okay=False),
            metavar="FILE",
            help="Serve the /review worklist to the users in FILE (`facet-adapter users add --file FILE`).",
        ),
        click.option(
            "--review-trusted-proxy",
            "review_trusted_proxies",
            multiple=True,
            metavar="ADDRESS",
            help="A single sign-on proxy (address or network, e.g. 10.0.0.5 or 10.0.0.0/24) whose user header "
            "/review believes (repeatable).",
        ),
        click.option(
            "--review-user-header",
            "review_user_header",
            default="X-Remote-User",
            show_default=True,
            metavar="NAME",
            help="The header in which a trusted proxy names the signed-in user.",
        ),
    ]

    def apply(function: F) -> F:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


def review_settings_from(options: MutableMapping[str, Any]) -> ReviewSettings:
    """Take the /review options out of a command's keyword arguments, checked."""
    values = {name: options.pop(name, None) for name in _NAMES}
    proxies: list[Network] = []
    for text in values["review_trusted_proxies"] or ():
        try:
            proxies.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise UsageError(
                f"--review-trusted-proxy {text[:60]!r} is not an address or network (10.0.0.5, 10.0.0.0/24)."
            ) from None
    header = (values["review_user_header"] or "X-Remote-User").strip()
    if not header or not set(header) <= _HEADER_CHARS:
        raise UsageError("--review-user-header must be a header name (letters, digits, - and _).")
    users_file = Path(values["review_users"]) if values["review_users"] else None
    if users_file is not None:
        load_users(users_file)  # a file that is not a users file stops the service now
    return ReviewSettings(users_file=users_file, trusted_proxies=tuple(proxies), user_header=header)
