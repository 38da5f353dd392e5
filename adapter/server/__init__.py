"""The adapter against a FHIR server: read a session's record (`gather`), write its Claim and
Task back (`writeback`), cancel the Claims a new one supersedes (`retire`), all three driven by
`sync`; `loader` puts input files on a server (the `sandbox` command)."""
