"""The rule reference in docs/rules.md, generated from the packs (a test fails when it is stale)."""

from __future__ import annotations

from .rules.packs import Pack


def rules_markdown(packs: list[Pack]) -> str:
    out = [
        "# Rule reference",
        "",
        "Generated from `mappings/packs/` by `facet-adapter rules --format markdown > docs/rules.md`;",
        "do not edit by hand (`tests/test_docs.py` fails when this file is stale).",
        "",
    ]
    for pack in packs:
        out.append(f"## `{pack.name}` {pack.version}")
        out.append("")
        out.append(f"{pack.title}. Extends: {' → '.join(pack.chain)}.")
        out.append("")
        limits = pack.limits
        out.append(
            f"Limits: {limits.levels_per_region} levels per region, {limits.regions_per_session} region per session; "
            f"per region per 12 months {limits.diagnostic_sessions_per_12_months} diagnostic, "
            f"{limits.therapeutic_sessions_per_12_months} therapeutic, {limits.rfa_sessions_per_12_months} RFA "
            f"sessions; pain ≥ {limits.min_pain_months} months; conservative care ≥ "
            f"{limits.min_conservative_care_days} days; blocks ≥ {limits.min_block_interval_days} days apart with "
            f"≥ {limits.min_relief_percent:g}% relief. Bilateral format: {pack.billing.bilateral}; KX on diagnostic "
            f"injections: {'yes' if pack.billing.kx_on_diagnostic_injections else 'no'}."
        )
        pa = pack.prior_authorization
        if pa.codes:
            out.append("")
            out.append(
                f"Prior authorization: {', '.join(pa.codes)} at POS {', '.join(pa.places_of_service)} "
                f"(use: {', '.join(pa.uses)})."
            )
        out.append("")
        out.append(f"Covered diagnoses: {len(pack.covered)} codes ({pack.covered_source}, {pack.covered_version}).")
        out.append("")
        out.append("| rule | version | severity | CARC | citation |")
        out.append("|---|---|---|---|---|")
        for rule_id, spec in pack.rules.items():
            citation = pack.citation(rule_id).replace("|", "\\|")
            out.append(f"| `{rule_id}` | {spec.version} | {spec.severity} | {spec.carc or ''} | {citation} |")
        out.append("")
    return "\n".join(out)
