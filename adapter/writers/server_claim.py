"""The Claim as it is written to a FHIR server (docs/output.md, Claims written to a FHIR server): the
Claim the Bundle holds (the PAS Claim for a prior-authorization request), with no id and its
references as the server holds them (`Type/id`).

Entry point: `server_claim(decision, index, base_url)`.
"""

from __future__ import annotations

from typing import Any

from ..decision import ClaimDecision
from ..fhir.ingest import ResourceIndex
from .entries import ServerReferences
from .fhir_claim import claim_resource
from .pas import pas_claim


def server_claim(decision: ClaimDecision, index: ResourceIndex, base_url: str) -> dict[str, Any]:
    references = ServerReferences(index, base_url)
    write = pas_claim if decision.use == "preauthorization" else claim_resource
    claim = write(decision, references)
    claim.pop("id", None)
    if references.contained:
        ordered: dict[str, Any] = {}
        for name, value in claim.items():
            ordered[name] = value
            if name == "meta":
                ordered["contained"] = list(references.contained.values())
        claim = ordered
    return claim
