"""The rule engine: payer rule packs, the rule functions and the check that runs them.

- `packs`: the pack format (mappings/packs/*.toml), validated when loaded.
- `selection`: which pack applies: by name (`--payer`), else from the Coverage, else the default.
- `registry`: the one ordered tuple of (rule id, function); `RULE_IDS` derives from it.
- `reading`, `diagnoses`, `history`, `documentation`: the rule functions, by subject.
- `context`: what a rule function reads (`Context`) and yields (`Hit`).
- `engine`: `check_case`, which runs every registered rule; `findings`: what it returns.

This file imports nothing, so importing `adapter.rules.packs` (as the coder does for its billing
settings) does not load the rule functions.
"""
