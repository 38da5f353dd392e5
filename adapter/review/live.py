"""The FHIR server as the review pages see it: a claim coded afresh from the current record (what
the claim page shows; nothing written), and a coder's override (adapter.server.override).

Each thread of the request pool has its own client, built from the service's FHIR options as the
sync workers build theirs; every call runs within the service's sync deadline."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import AdapterError, NoFacetProcedureError, UpstreamError
from ..model import Use
from ..pipeline import Options, Result
from .store import ClaimRow

if TYPE_CHECKING:
    from ..fhir.client import FhirClient
    from ..server.override import Overridden
    from ..service.settings import Settings


@dataclass(frozen=True, slots=True)
class Coded:
    """The claim as the record codes it now, or why it cannot be shown."""

    result: Result | None
    fingerprint: str | None
    problem: str | None = None


class LiveRecord:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[FhirClient] = []

    def client(self) -> FhirClient:
        client: FhirClient | None = getattr(self._local, "client", None)
        if client is None:
            from ..fhir.client import make_client

            client = make_client(self.settings.fhir_server)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients.clear()

    def options(self, row: ClaimRow) -> Options:
        use: Use = "preauthorization" if row.use == "preauthorization" else "claim"
        return Options(payer=self.settings.payer, use=use)

    def code(self, row: ClaimRow) -> Coded:
        """Never raises for the server's or the record's sake: the page then shows the stored row."""
        from ..server.override import fingerprint_of, recode

        client = self.client()
        try:
            with client.transport.within(self.settings.sync_deadline):
                result = recode(client, row.focus, self.options(row))
                return Coded(result, fingerprint_of(client, result))
        except NoFacetProcedureError as exc:
            return Coded(None, None, f"{row.focus} is no longer a billable facet procedure: {exc.message}")
        except UpstreamError as exc:
            return Coded(None, None, f"The FHIR server could not be read: {exc.message}")
        except AdapterError as exc:
            return Coded(None, None, f"The record cannot be coded now: {exc.message}")

    def override(self, row: ClaimRow, *, user: str, reason: str, fingerprint: str) -> tuple[Overridden, Result]:
        """Raises OverrideRefused, NoFacetProcedureError or UpstreamError (nothing recorded then)."""
        from ..server.override import override_claim, recode

        client = self.client()
        with client.transport.within(self.settings.sync_deadline):
            result = recode(client, row.focus, self.options(row))
            if result.decision.identifier != row.identifier:
                from ..server.override import OverrideRefused

                raise OverrideRefused(
                    "The session's procedures changed since this claim was coded; re-check it, then review the "
                    "claim that replaces it."
                )
            done = override_claim(client, result, user=user, reason=reason, fingerprint=fingerprint)
        return done, result
