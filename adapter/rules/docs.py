"""The rule reference: `facet-adapter rules` as text, and docs/rules.md generated from the packs (a
test fails when it is stale)."""

from __future__ import annotations

import textwrap

from .dated import SECTIONS
from .packs import Pack, SelectionMatch
from .selection import DEFAULT_PACK


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
        out.append(_chosen_when(pack))
        out.append("")
        if pack.contractor is not None:
            out.append(f"Contractor: {pack.contractor.mac}, jurisdiction {', '.join(pack.contractor.jurisdictions)}.")
            out.append("")
        for line in _sources(pack):
            out.append(f"- {line}")
        if pack.sources:
            out.append("")
        versions = _versions(pack)
        if versions:
            out.append("Versions in force by date of service:")
            out.append("")
            out.append("| section | version | from | until | sets | confirmed |")
            out.append("|---|---|---|---|---|---|")
            out.extend("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in versions)
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


def _sources(pack: Pack) -> list[str]:
    lines = []
    for role, doc in pack.sources.items():
        version = f" v{doc.version}" if doc.version else ""
        effective = f", effective {doc.effective.isoformat()}" if doc.effective else ""
        state = "confirmed" if doc.confirmed else f"unconfirmed: {doc.note}"
        lines.append(f"{role}: {doc.id}{version} {doc.title}{effective} ({state})")
    return lines


def _versions(pack: Pack) -> list[tuple[str, str, str, str, str, str]]:
    rows: list[tuple[str, str, str, str, str, str]] = []
    for section in SECTIONS:
        for version in getattr(pack.dated, section):
            sets = ", ".join(f"{key} = {_toml(value)}" for key, value in version.overrides().items()) or "-"
            confirmed = "yes" if version.confirmed else f"no: {version.note}"
            until = version.until.isoformat() if version.until else ""
            rows.append((section, version.version, version.effective.isoformat(), until, sets, confirmed))
    return rows


def _toml(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _chosen_when(pack: Pack) -> str:
    if pack.selection is not None:
        entries = "; or ".join(_match_text(entry) for entry in pack.selection.match)
        text = f"Chosen from a Coverage (priority {pack.selection.priority}) when {entries}."
        if pack.selection.medicare_advantage:
            text += " A Medicare Advantage plan's pack: laid over the contractor's pack of the place of service."
        return text
    if pack.name == DEFAULT_PACK:
        return "Chosen when there is no `--payer` and no pack's selection matches the Coverage (`payer-defaulted`)."
    return f"Chosen only by `--payer {pack.name}`."


def _match_text(entry: SelectionMatch) -> str:
    conditions: list[str] = []
    if entry.payor_contains is not None:
        conditions.append(f'the payor\'s name, display or identifier contains "{entry.payor_contains}" (any case)')
    if entry.payor_words:
        words = ", ".join(f'"{word}"' for word in entry.payor_words)
        conditions.append(f"one payor name has the words {words}")
    if entry.plan_contains is not None:
        conditions.append(f'the Coverage\'s plan (type or class) says "{entry.plan_contains}"')
    if entry.payor_identifier is not None:
        ident = entry.payor_identifier
        system = f" (system `{ident.system}`)" if ident.system else ""
        conditions.append(f"a payor identifier is `{ident.value}`{system}")
    if entry.coverage_type is not None:
        code = entry.coverage_type
        system = f" (system `{code.system}`)" if code.system else ""
        conditions.append(f"Coverage.type has code `{code.code}`{system}")
    if entry.coverage_class is not None:
        kind = entry.coverage_class
        conditions.append(
            f"a Coverage.class of type `{kind.type}`" + (f" has value `{kind.value}`" if kind.value else " is present")
        )
    text = " and ".join(conditions)
    if entry.by_place:
        plan = "Medicare Advantage" if entry.medicare_advantage else "Medicare"
        text += f" ({plan}: the contractor's pack of the place of service, this one when its state is unknown)"
    return text


def rules_text(pack: Pack) -> str:
    out = [f"{pack.name}@{pack.version}: {pack.title}", f"extends: {' -> '.join(pack.chain)}"]
    if pack.contractor is not None:
        out.append(f"contractor: {pack.contractor.mac} ({', '.join(pack.contractor.jurisdictions)})")
    for line in _sources(pack):
        out.extend(textwrap.wrap(line, 100, initial_indent="document ", subsequent_indent="    "))
    for section, version, start, until, sets, confirmed in _versions(pack):
        span = f"{start}..{until}" if until else f"from {start}"
        text = f"{section}: {version} ({span}; {sets}; confirmed: {confirmed})"
        out.extend(textwrap.wrap(text, 100, initial_indent="dated ", subsequent_indent="    "))
    out.append("")
    out.append(f"{'Rule':<31} {'Ver':>3}  {'Severity':<11} {'CARC':<5} Citation")
    for rule_id, spec in pack.rules.items():
        citation = pack.citation(rule_id)
        wrapped = textwrap.wrap(citation, 70) or [""]
        out.append(f"{rule_id:<31} {spec.version:>3}  {spec.severity:<11} {spec.carc or '-':<5} {wrapped[0]}")
        out.extend(" " * 55 + more for more in wrapped[1:])
    return "\n".join(out) + "\n"
