"""The CDS Hooks services and their prefetch templates (docs/cds-hooks.md, discovery).

The templates are derived from the reader's declaration (`adapter.read.uses`), the same one the
server `gather` derives its searches from, so a call answered from prefetch and a call answered
from the EHR's FHIR server read the same record: the Patient, one key per resource type of the
patient's record (with the `_include`s of the references the reader follows and the
`_revinclude`s of the Observations that report on a block), and the order's Encounter with its
Location.

Two differences from `gather`, because a prefetch token can only be a context field: the
Encounter key reads the Encounter of the order (`context.encounterId`), not those of the date of
service, and the Procedure key cannot be limited to the 24 months before the order's date.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Literal
from urllib.parse import quote

from ..read.uses import FOLLOWED, PATIENT_TYPES, REVERSE, code_tokens

Hook = Literal["order-sign", "order-select"]
HOOKS: tuple[Hook, ...] = ("order-sign", "order-select")
SERVICE_IDS: dict[str, Hook] = {"facet-order-sign": "order-sign", "facet-order-select": "order-select"}
CRD_VERSIONS = ("2.0", "2.2")  # the CRD builds whose coverage-information the service writes
DEFAULT_CRD_VERSION = "2.2"
DEFAULT_MAX_CARDS = 10

# The keys CRD names for its standard templates keep their names; the others are the type's name.
_KEY_NAMES = {"Coverage": "coverage", "Encounter": "encounter"}


@dataclass(frozen=True, slots=True)
class PrefetchKey:
    key: str
    type: str  # the resource type the key brings
    template: str
    needs: Literal["patientId", "encounterId"]  # the context field the template is filled from


def _query(resource_type: str, params: list[tuple[str, str]]) -> str:
    # `|` in a token search is percent-encoded; the prefetch token itself stays as written.
    return resource_type + "?" + "&".join(f"{name}={quote(value, safe=':/,{}.')}" for name, value in params)


@cache
def prefetch_keys() -> tuple[PrefetchKey, ...]:
    keys = [PrefetchKey("patient", "Patient", "Patient/{{context.patientId}}", "patientId")]
    for wanted in PATIENT_TYPES:
        includes = [("_include", f.include) for f in FOLLOWED if f.source == wanted.type and f.include]
        reverse = [("_revinclude", r.revinclude) for r in REVERSE if r.target == wanted.type]
        name = _KEY_NAMES.get(wanted.type, wanted.type[0].lower() + wanted.type[1:] + "s")
        if wanted.window == "day":
            params = [("_id", "{{context.encounterId}}"), *includes, *reverse]
            keys.append(PrefetchKey(name, wanted.type, _query(wanted.type, params), "encounterId"))
            continue
        params = [(wanted.search_param, "Patient/{{context.patientId}}")]
        if wanted.codes is not None:
            params.append(("code", code_tokens(wanted.codes)))
        params += [*wanted.fixed_params, *includes, *reverse]
        keys.append(PrefetchKey(name, wanted.type, _query(wanted.type, params), "patientId"))
    return tuple(keys)


def service_id_of(hook: Hook) -> str:
    return next(service_id for service_id, named in SERVICE_IDS.items() if named == hook)


def discovery_document() -> dict[str, Any]:
    """`GET /cds-services`: one service per hook, with CRD's version and configuration extensions."""
    prefetch = {key.key: key.template for key in prefetch_keys()}
    options = [
        {
            "code": "coverage-info",
            "type": "boolean",
            "name": "Coverage Information",
            "description": "Whether the facet joint intervention ordered is covered, needs prior authorization "
            "or documentation, as a coverage-information extension on the order",
            "default": True,
        },
        {
            "code": "max-cards",
            "type": "integer",
            "name": "Maximum cards",
            "description": "The most cards an answer holds (one card per planned session with something to act on)",
            "default": DEFAULT_MAX_CARDS,
        },
    ]
    services = []
    for service_id, hook in SERVICE_IDS.items():
        services.append(
            {
                "hook": hook,
                "id": service_id,
                "title": f"Facet joint interventions: coverage requirements ({hook})",
                "description": (
                    "Whether a facet joint injection or radiofrequency ablation order (CPT 64490-64495, "
                    "64633-64636) is covered, needs prior authorization, documentation or more detail, "
                    "checked with the rule pack of the payer the Coverage names, citing the LCD and article."
                ),
                "prefetch": prefetch,
                "usageRequirements": (
                    "Send every prefetch key, or fhirServer with fhirAuthorization for a FHIR server this "
                    "service is allowed to read; every call carries a signed JWT (CDS Hooks security)."
                ),
                "extension": {
                    "davinci-crd.version": list(CRD_VERSIONS),
                    "davinci-crd.configuration-options": options,
                },
            }
        )
    return {"services": services}
