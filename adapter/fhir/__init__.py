"""FHIR plumbing shared by every stage: JSON access, parsing and indexing input, the R4 schema,
and the HTTP client (transport, auth) for FHIR servers. Nothing here knows facet coding."""
