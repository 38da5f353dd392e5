"""facet-adapter: FHIR R4 facet joint intervention coding, policy checks and Claim Bundles."""

__version__ = "0.1.0"
