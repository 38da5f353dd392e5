"""The sandbox payer (`facet-adapter payer serve`, docs/payer.md): a FHIR base that answers
`Claim/$submit` and `Claim/$inquire` by adjudicating with the same rule packs from the payer's side.
`policy` holds its tables (adjudication policy, fee table), `adjudicate` runs the library on what it
receives, `answers` writes the ClaimResponse or PAS response, `app` is the HTTP service."""
