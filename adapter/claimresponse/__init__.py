"""A payer's answers: read a ClaimResponse or a Da Vinci PAS response (`answer`), explain it to a
coder with the words of its codes and this product's rule ids (`explain`, `codes`), and the
`response` command (`cli`). docs/payer.md."""
