"""Writers: one claim decision, many formats.

Each writer is a module that turns a `ClaimDecision` (and, where the format copies resources, the
input's index) into bytes, plus one entry in `WRITERS` below. Adding a format is one new module
and one registration; no writer decides anything about the claim.

A format may need data the others do not (an 837P needs the billing provider's tax id): its
`requirements` turn what the claim lacks into findings, which `prepare` adds to the decision before
writing, so the exit status and the findings show them. A format whose `writes_held` is False
writes a held claim only when the caller forces it (docs/output.md, X12 837P).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from ..decision import ClaimDecision, with_findings
from ..fhir.ingest import ResourceIndex
from ..rules.findings import Finding
from .fhir_claim import claim_bundle, claim_bundle_json
from .outcome import decision_outcome
from .review import review_text

if TYPE_CHECKING:
    from .x12_837p import X12Options, X12Writer

# The 837P's media type, said here so the writer (and x12sdk) is imported only when an 837P is written.
X12_MEDIA_TYPE = "application/EDI-X12"
JSON_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE


class Writer(NamedTuple):
    name: str
    media_type: str
    description: str
    write: Callable[[ClaimDecision, ResourceIndex], bytes]
    # Findings only this format raises: what it needs that the claim lacks.
    requirements: Callable[[ClaimDecision], list[Finding]] | None = None
    # Whether a held claim is written all the same (a draft FHIR Claim is; an 837P is not, unless forced).
    writes_held: bool = True

    def prepare(self, decision: ClaimDecision) -> ClaimDecision:
        """The decision with this format's findings added (the same decision when it has none)."""
        return with_findings(decision, self.requirements(decision)) if self.requirements else decision


def request_bundle(decision: ClaimDecision, index: ResourceIndex) -> dict[str, Any]:
    """What `claim` writes: the Claim Bundle, or the PAS request Bundle for a prior authorization."""
    if decision.use == "preauthorization":
        # Imported here: the PAS profile is needed only for a prior authorization request.
        from .pas import pas_request_bundle

        return pas_request_bundle(decision, index)
    return claim_bundle(decision, index)


def request_bundle_json(decision: ClaimDecision, index: ResourceIndex, outcome: dict[str, Any] | None = None) -> bytes:
    """`request_bundle` as compact JSON (`orjson.dumps`); a Claim Bundle's copies of the input's
    resources are serialised once per index, for all the sessions coded from it. `outcome` is
    `decision_outcome(decision)` when the caller has it already."""
    if decision.use == "preauthorization":
        return orjson.dumps(request_bundle(decision, index))
    return claim_bundle_json(decision, index, outcome)


def _fhir_bundle(decision: ClaimDecision, index: ResourceIndex) -> bytes:
    return orjson.dumps(request_bundle(decision, index), option=JSON_OPTIONS)


def _pas(decision: ClaimDecision, index: ResourceIndex) -> bytes:
    from .pas import pas_request_bundle

    return orjson.dumps(pas_request_bundle(decision, index), option=JSON_OPTIONS)


def _outcome(decision: ClaimDecision, index: ResourceIndex) -> bytes:
    return orjson.dumps(decision_outcome(decision), option=JSON_OPTIONS)


def _review(decision: ClaimDecision, index: ResourceIndex) -> bytes:
    return review_text(decision).encode()


def _html(decision: ClaimDecision, index: ResourceIndex) -> bytes:
    # Imported here: the template engine is not loaded for the commands that write no HTML.
    from .html import review_page

    return review_page(decision).encode()


def x12_837p_writer(options: X12Options | None = None) -> Writer:
    """The 837P writer with the given options; the registered one reads its settings from
    FACET_ADAPTER_X12_CONFIG and keeps control numbers in the state file that names."""
    from .x12_837p import X12Writer

    x12 = X12Writer(options)
    return _x12_837p(x12.write, x12.requirements)


def _x12_837p(
    write: Callable[[ClaimDecision, ResourceIndex], bytes], requirements: Callable[[ClaimDecision], list[Finding]]
) -> Writer:
    return Writer(
        "x12-837p",
        X12_MEDIA_TYPE,
        "ASC X12 005010X222A1 837P professional claim (an interchange of one claim)",
        write,
        requirements,
        writes_held=False,
    )


@cache
def _registered_x12() -> X12Writer:
    # Imported when the registered 837P writer is first used, not when the registry is.
    from .x12_837p import X12Writer

    return X12Writer()


def _x12_write(decision: ClaimDecision, index: ResourceIndex) -> bytes:
    return _registered_x12().write(decision, index)


def _x12_requirements(decision: ClaimDecision) -> list[Finding]:
    return _registered_x12().requirements(decision)


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
        _x12_837p(_x12_write, _x12_requirements),
    )
}


def writer(name: str) -> Writer:
    return WRITERS[name]
