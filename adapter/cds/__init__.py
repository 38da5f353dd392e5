"""Coverage requirements at the moment of ordering: a CDS Hooks service in the Da Vinci CRD
style, mounted into `facet-adapter serve` (docs/cds-hooks.md).

- `discovery`: the services (order-sign, order-select) and their prefetch templates, derived from
  the reader's declaration (`adapter.read.uses`).
- `request`: the hook request, validated (pydantic); `security`: the EHR's JWT.
- `record`: the record a call is answered from: prefetch, and what is missing read from the EHR's
  FHIR server (`adapter.server.gather`), or HTTP 412.
- `assessment`: a `ClaimDecision` for a draft order → covered / pa-needed / doc-needed /
  info-needed, billing codes, reasons, details and the coverage-assertion-id.
- `extension`: the coverage-information extension (CRD 2.2, or 2.0 for an STU2 client) and its
  invariants; `cards`: the cards a person must act on.
- `hooks`: one call, end to end; `routes`: the HTTP endpoints; `options`: the `serve` options.
"""
