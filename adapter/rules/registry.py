"""The rule registry: every rule id with the function that checks it, in the order findings are
listed (within a severity). A rule id is written here once and once in each pack; loading a pack
that lacks one of these ids, or names one that is not here, is an error.
"""

from __future__ import annotations

from . import diagnoses, documentation, history, providers, reading
from .context import RuleFunction

# Raised by the engine itself when a rule function fails, so it has no function of its own.
RULE_NOT_APPLIED = "rule-not-applied"

RULES: tuple[tuple[str, RuleFunction], ...] = (
    ("dx-not-covered", diagnoses.dx_not_covered),
    ("dx-invalid", diagnoses.dx_invalid),
    ("levels-exceed-limit", reading.levels_exceed_limit),
    ("multiple-regions", reading.multiple_regions),
    ("levels-unknown", reading.levels_unknown),
    ("guidance-not-covered", reading.guidance_not_covered),
    ("guidance-unknown", reading.guidance_unknown),
    ("frequency-limit", history.frequency_limit),
    ("diagnostic-block-prerequisite", history.diagnostic_block_prerequisite),
    ("block-interval", history.block_interval),
    ("pain-duration", documentation.pain_duration),
    ("pain-score-missing", documentation.pain_score_missing),
    ("conservative-care", documentation.conservative_care),
    ("radiculopathy", diagnoses.radiculopathy),
    ("imaging-line-bundled", reading.imaging_line_bundled),
    ("prior-auth-required", documentation.prior_auth_required),
    ("laterality-unknown", reading.laterality_unknown),
    ("intent-unknown", reading.intent_unknown),
    ("levels-inferred", reading.levels_inferred),
    ("input-corrected", reading.input_corrected),
    ("claim-data-missing", documentation.claim_data_missing),
    ("npi-invalid", providers.npi_invalid),
    ("pos-defaulted", documentation.pos_defaulted),
    ("payer-defaulted", documentation.payer_defaulted),
    ("procedure-undated", reading.procedure_undated),
    # v1.2 (docs/output.md, rule ids).
    ("several-patients", documentation.several_patients),
    ("evidence-invalid", documentation.evidence_invalid),
    ("procedure-not-done", reading.procedure_not_done),
)

# Every rule id a pack must define (docs/output.md, rule ids), with the adapter's own safety rules, in
# finding order.
RULE_IDS: tuple[str, ...] = (*(rule_id for rule_id, _ in RULES), RULE_NOT_APPLIED)
