"""Writers: one claim decision, many formats.

Each writer is a module that turns a `ClaimDecision` (and, where the format copies resources, the
input's index) into bytes, plus one entry in `WRITERS` below. Adding a format is one new module
and one registration; no writer decides anything about the claim.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ..decision import ClaimDecision
from ..fhir.ingest import ResourceIndex
from .fhir_claim import claim_bundle
from .outcome import decision_outcome
from .pas import pas_request_bundle
from .review import review_text

JSON_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE


@dataclass(frozen=True, slots=True)
class Writer:
    name: str
    media_type: str
    description: str
    write: Callable[[ClaimDecision, ResourceIndex], bytes]


def request_bundle(decision: ClaimDecision, index: ResourceIndex) -> dict[str, Any]:
    """What `claim` writes: the Claim Bundle, or the PAS request Bundle for a prior authorization."""
    if decision.use == "preauthorization":
        return pas_request_bundle(decision, index)
    return claim_bundle(decision, index)


def _fhir_bundle(decision: ClaimDecision, index: ResourceIndex) -> bytes:
    return orjson.dumps(request_bundle(decision, index), option=JSON_OPTIONS)


def _pas(decision: ClaimDecision, index: ResourceIndex) -> bytes:
    return orjson.dumps(pas_request_bundle(decision, index), option=JSON_OPTIONS)


def _outcome(decision: ClaimDecision, index: ResourceIndex) -> bytes:
    return orjson.dumps(decision_outcome(decision), option=JSON_OPTIONS)


def _review(decision: ClaimDecision, index: ResourceIndex) -> bytes:
    return review_text(decision).encode()


def _html(decision: ClaimDecision, index: ResourceIndex) -> bytes:
    # Imported here: the template engine is not loaded for the commands that write no HTML.
    from .html import review_page

    return review_page(decision).encode()


WRITERS: dict[str, Writer] = {
    writer.name: writer
    for writer in (
        Writer(
            "fhir",
            "application/fhir+json",
            "FHIR R4 Claim Bundle (a Da Vinci PAS request Bundle for prior authorization)",
            _fhir_bundle,
        ),
        Writer("pas", "application/fhir+json", "Da Vinci PAS 2.2.1 request Bundle (prior authorization only)", _pas),
        Writer("outcome", "application/fhir+json", "the findings as a FHIR R4 OperationOutcome", _outcome),
        Writer("text", "text/plain; charset=utf-8", "the coder's pre-claim review", _review),
        Writer("html", "text/html; charset=utf-8", "the coder's pre-claim review as one self-contained page", _html),
    )
}


def writer(name: str) -> Writer:
    return WRITERS[name]
