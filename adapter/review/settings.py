"""What the /review worklist is configured with (`serve --review-…`, docs/server.md)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ReviewSettings:
    users_file: Path | None = None  # `users add|remove|list --file`; None: no password sign-in
    # Proxies (addresses or networks) whose user header is believed: the hospital's single sign-on.
    trusted_proxies: tuple[Network, ...] = ()
    user_header: str = "X-Remote-User"
    idle_seconds: float = 30 * 60.0  # a session unused this long is over
    max_seconds: float = 12 * 3600.0  # and any session after this long (a working day)
    login_failures: int = 5  # failed sign-ins per address, and per user name, within the window
    login_window_seconds: float = 15 * 60.0
    recheck_wait_seconds: float = 20.0  # how long a re-check's answer waits for its job to run

    @property
    def enabled(self) -> bool:
        """/review is served only when someone can sign in to it."""
        return self.users_file is not None or bool(self.trusted_proxies)

    def trusts(self, address: str | None) -> bool:
        """Whether a request from this peer address comes through a trusted proxy."""
        if not address or not self.trusted_proxies:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted_proxies)
