"""What writing a session's Claim back reads first, in one round trip: the Claim and its Task by
their identifiers (adapter.server.writeback) and the patient's Claims of the same use, the ones a
new Claim may supersede (adapter.server.retire). Where the server offers `batch`, the three
searches go in one batch Bundle (before: three round trips per sync). A search the batch did not
answer whole (an error, more than one page) is left to its own request, as before.

The searches are the ones the writer and the retirement make on their own, made earlier: before
the Claim is written instead of after. Nothing changes for what is written: every update carries
`If-Match` with the version these reads saw, so a resource changed in between is re-read (the
Claim) or makes the job retry (a Task, a superseded Claim), and a create is conditional on the
identifier. The Claim written in between is the one the retirement keeps.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import FhirProtocolError, FhirRequestRejected
from ..fhir.client import FhirClient
from ..writers.fhir_claim import IDENTIFIER_SYSTEM
from .gather import whole_page

log = logging.getLogger(__name__)

_COUNT = "100"


@dataclass(frozen=True, slots=True)
class Lookups:
    """The matches of each search; None where it was not made (the reader searches then)."""

    claim: list[dict[str, Any]] | None = None
    task: list[dict[str, Any]] | None = None
    patient_claims: list[dict[str, Any]] | None = None


def identifier_query(ident: str) -> str:
    """The search for the adapter's Claim (or Task) by its identifier `urn:uuid:{ident}`."""
    return f"identifier={IDENTIFIER_SYSTEM}|urn:uuid:{ident}"


def patient_claims_params(client: FhirClient, patient: str, use: str) -> list[tuple[str, str]]:
    """The search for a patient's Claims of one use (`claim` or `preauthorization`)."""
    return [("patient", client.relative(patient)), ("use", use)]


def look_up(client: FhirClient, *, claim_query: str, task_query: str, patient: str | None, use: str) -> Lookups:
    """The three searches in one batch where the server offers batch; else nothing looked up."""
    if not client.supports_batch():
        return Lookups()
    searches: list[tuple[str, list[tuple[str, str]]]] = [
        ("Claim", [_param(claim_query)]),
        ("Task", [_param(task_query)]),
    ]
    if patient:
        searches.append(("Claim", [*patient_claims_params(client, patient, use), ("_count", _COUNT)]))
    try:
        answers = client.batch_get(searches)
    except (FhirRequestRejected, FhirProtocolError) as exc:
        log.info("the server did not take the batch of lookups (%s); searching one by one", type(exc).__name__)
        return Lookups()
    found = [_matches(type_, status, bundle) for (type_, _), (status, bundle) in zip(searches, answers, strict=True)]
    return Lookups(claim=found[0], task=found[1], patient_claims=found[2] if patient else None)


def _param(query: str) -> tuple[str, str]:
    name, _, value = query.partition("=")
    return name, value


def _matches(type_: str, status: int, bundle: Mapping[str, Any] | None) -> list[dict[str, Any]] | None:
    if status != 200 or bundle is None or not whole_page(bundle):
        return None
    entries: Sequence[Any] = bundle.get("entry") or []
    return [
        entry["resource"]
        for entry in entries
        if isinstance(entry, Mapping)
        and isinstance(entry.get("resource"), dict)
        and entry["resource"].get("resourceType") == type_
    ]
