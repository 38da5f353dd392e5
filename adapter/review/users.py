"""The /review users file (`facet-adapter users add|remove|list --file PATH`, docs/server.md):

    {"version": 1, "users": {"alice": {"role": "coder", "password": "$argon2id$v=19$..."}}}

Roles: `viewer` reads the worklist and claims; `coder` also overrides held claims and re-checks
them. Passwords are stored only as argon2id hashes (argon2-cffi's defaults, RFC 9106's second
recommended parameter set); a user without a password signs in only through the single sign-on
header. The file is written whole, atomically, readable by its owner only; the service reads it
again whenever it changes, so an added user can sign in and a removed one is signed out at once.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..errors import UsageError

Role = Literal["viewer", "coder"]
ROLES: tuple[Role, ...] = ("viewer", "coder")
DEFAULT_USERS_FILE = Path("facet-adapter-users.json")
MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_HASHER = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verified against when the user is unknown or has no password, so that a wrong name takes
    as long to refuse as a wrong password (no telling which names exist by the time taken)."""
    return _HASHER.hash("not a password of anyone")


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    password_hash: str | None = None

    @property
    def can_act(self) -> bool:
        """Override and re-check are a coder's."""
        return self.role == "coder"


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise UsageError(
            f"A user name is 1 to 64 letters, digits and . _ @ - (starting with a letter or digit), not {name[:70]!r}."
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise UsageError(f"A password has at least {MIN_PASSWORD_CHARS} characters.")
    if len(password) > MAX_PASSWORD_CHARS:
        raise UsageError(f"A password has at most {MAX_PASSWORD_CHARS} characters.")
    return password


def hash_password(password: str) -> str:
    return _HASHER.hash(check_password(password))


def load_users(path: Path) -> dict[str, User]:
    """The users in the file; a missing file has none. A file that is not a users file is a
    UsageError naming it (never a partial read)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"The users file {path} cannot be read: {exc.strerror or exc}.") from None
    try:
        data = json.loads(raw)
        entries = data["users"]
        if data.get("version") != 1 or not isinstance(entries, Mapping):
            raise ValueError
        users: dict[str, User] = {}
        for name, entry in entries.items():
            role = entry["role"]
            password = entry.get("password")
            if role not in ROLES or not NAME_RE.fullmatch(name) or not isinstance(password, str | None):
                raise ValueError
            users[name] = User(name, cast(Role, role), password)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UsageError(
            f"{path} is not a facet-adapter users file (make one with `facet-adapter users add`)."
        ) from None
    return users


def save_users(path: Path, users: Mapping[str, User]) -> None:
    """Write the whole file atomically (a reader sees the old or the new one), mode 0600."""
    body = {
        "version": 1,
        "users": {
            name: {"role": user.role, **({"password": user.password_hash} if user.password_hash else {})}
            for name, user in sorted(users.items())
        },
    }
    folder = path.parent if str(path.parent) else Path()
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(body, out, indent=2)
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, 0o600)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise UsageError(f"The users file {path} cannot be written: {exc.strerror or exc}.") from None


class UserDirectory:
    """The service's view of the users file: read again when the file changes (its modification
    time, size and inode), so `users add|remove` take effect without a restart."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._users: dict[str, User] = {}

    def users(self) -> dict[str, User]:
        if self.path is None:
            return {}
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except FileNotFoundError:
            stamp = (0, 0, 0)
        with self._lock:
            if stamp != self._stamp:
                self._users = load_users(self.path) if stamp != (0, 0, 0) else {}
                self._stamp = stamp
            return self._users

    def get(self, name: str) -> User | None:
        return self.users().get(name)

    def verify(self, name: str, password: str) -> User | None:
        """The user when the password is theirs; None otherwise (the same work either way)."""
        user = self.users().get(name)
        stored = user.password_hash if user is not None and user.password_hash else _dummy_hash()
        ok: bool
        try:
            ok = _HASHER.verify(stored, password[:MAX_PASSWORD_CHARS])
        except (VerificationError, InvalidHashError):
            ok = False
        return user if ok and user is not None and user.password_hash else None
