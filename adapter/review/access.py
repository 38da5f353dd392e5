"""Who is signed in to /review, and the guards around it (docs/server.md, the /review worklist):

- **Sessions** live in the service's memory (a restart signs everyone out): a random token in a
  cookie `HttpOnly`, `SameSite=Strict`, `Path=/review`, `Secure` when the request came over https
  (directly, or as a trusted proxy says with `X-Forwarded-Proto`). A session ends after 30 idle
  minutes or 12 hours, at sign-out, and when its user leaves the users file. Signing in replaces
  the session (no fixation).
- **CSRF**: every session, the anonymous one that shows the sign-in form included, has its own
  token; every form carries it and every POST must return it (compared in constant time), else 403.
- **Single sign-on**: a request whose peer is a `--review-trusted-proxy` and that carries the user
  header is that user (their role from the users file, `viewer` when not listed there). The header
  from any other peer is ignored. The proxy must set the header itself on every request.
- **Rate limit**: after 5 failed sign-ins within 15 minutes from one address, or for one user
  name, further attempts are refused (429 with `Retry-After`) until the window has passed.

The hook token (`--hook-token`) is not a way in here, and a session is not a way into `/notify`,
`/claim` or `/check`: each side checks only its own credential.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from fastapi import Request

from .settings import ReviewSettings
from .users import User, UserDirectory

log = logging.getLogger(__name__)

COOKIE = "facet_review"
COOKIE_PATH = "/review"
ANONYMOUS_SECONDS = 15 * 60.0  # how long an unused sign-in form stays valid
MAX_SESSIONS = 10_000
_SSO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


@dataclass(slots=True)
class Session:
    token: str
    csrf: str
    user: str | None  # None: not signed in yet (the sign-in form's session)
    sso: bool
    created: float
    seen: float
    flash: list[str] = field(default_factory=list)


class Sessions:
    """The sessions in memory, bounded: the oldest are dropped beyond `MAX_SESSIONS`."""

    def __init__(self, settings: ReviewSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def new(self, user: str | None, *, sso: bool = False) -> Session:
        now = self.clock()
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), user, sso, now, now)
        with self._lock:
            self._prune(now)
            self._sessions[session.token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        now = self.clock()
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            if self._expired(session, now):
                del self._sessions[token]
                return None
            session.seen = now
            return session

    def drop(self, session: Session | None) -> None:
        if session is not None:
            with self._lock:
                self._sessions.pop(session.token, None)

    def _expired(self, session: Session, now: float) -> bool:
        idle = self.settings.idle_seconds if session.user else ANONYMOUS_SECONDS
        return now - session.seen > idle or now - session.created > self.settings.max_seconds

    def _prune(self, now: float) -> None:
        for token in [t for t, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[token]
        while len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions.values(), key=lambda s: s.seen)
            del self._sessions[oldest.token]


class LoginLimiter:
    """Failed sign-ins per key (an address, a user name) in a sliding window."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, keys: Iterable[str]) -> float | None:
        """Seconds until a sign-in is allowed again, when one of the keys is over the limit."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                times = self._recent(key, now)
                if len(times) >= self.limit:
                    wait = max(wait, times[0] + self.window - now)
        return wait if wait > 0 else None

    def failed(self, keys: Iterable[str]) -> None:
        now = self.clock()
        with self._lock:
            if len(self._failures) > MAX_SESSIONS:
                self._failures = {k: v for k, v in self._failures.items() if v and v[-1] > now - self.window}
            for key in keys:
                self._failures.setdefault(key, deque()).append(now)

    def forget(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times


@dataclass(frozen=True, slots=True)
class Visitor:
    """Who made a request: the session (possibly new, then its cookie must be set) and the user."""

    session: Session | None
    user: User | None
    new_session: bool = False


class Access:
    def __init__(self, settings: ReviewSettings, directory: UserDirectory) -> None:
        self.settings = settings
        self.directory = directory
        self.sessions = Sessions(settings)
        self.limiter = LoginLimiter(settings.login_failures, settings.login_window_seconds)
        self._warned_header = False

    def peer(self, request: Request) -> str | None:
        return request.client.host if request.client else None

    def client_address(self, request: Request) -> str:
        """The address a sign-in is counted against: behind a trusted proxy, the one it saw."""
        peer = self.peer(request) or "unknown"
        if self.settings.trusts(peer):
            forwarded = [a.strip() for a in request.headers.get("x-forwarded-for", "").split(",") if a.strip()]
            if forwarded:
                return forwarded[-1]
        return peer

    def secure(self, request: Request) -> bool:
        if request.url.scheme == "https":
            return True
        return self.settings.trusts(self.peer(request)) and (
            request.headers.get("x-forwarded-proto", "").strip().lower() == "https"
        )

    def visitor(self, request: Request) -> Visitor:
        session = self.sessions.get(request.cookies.get(COOKIE))
        header = request.headers.get(self.settings.user_header)
        if self.settings.trusts(self.peer(request)):
            if header is not None and header.strip():
                return self._single_sign_on(session, header.strip())
        elif header is not None and self.settings.trusted_proxies and not self._warned_header:
            self._warned_header = True
            log.warning("review: a %s header from an untrusted address was ignored", self.settings.user_header)
        if session is None or session.user is None:
            return Visitor(session, None)
        if session.sso and not self.settings.trusts(self.peer(request)):
            self.sessions.drop(session)  # a single sign-on session is good only through the proxy
            return Visitor(None, None)
        user = self.directory.get(session.user)
        if user is None:
            log.info("review: user %s is no longer in the users file; signed out", session.user)
            self.sessions.drop(session)
            return Visitor(None, None)
        return Visitor(session, user)

    def _single_sign_on(self, session: Session | None, name: str) -> Visitor:
        if not _SSO_NAME.fullmatch(name):
            return Visitor(session, None)
        user = self.directory.get(name) or User(name, "viewer")
        if session is not None and session.user == name and session.sso:
            return Visitor(session, user)
        self.sessions.drop(session)
        log.info("review: %s signed in through single sign-on", name)
        return Visitor(self.sessions.new(name, sso=True), user, new_session=True)

    def csrf_ok(self, session: Session | None, token: str | None) -> bool:
        if session is None or not token:
            return False
        return hmac.compare_digest(session.csrf.encode(), token.encode())
