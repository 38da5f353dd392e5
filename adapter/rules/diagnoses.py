"""Rules on the session's diagnoses: valid billable codes, covered codes for the region treated,
radiculopathy."""

from __future__ import annotations

from collections.abc import Iterator

from .context import Context, Hit, levels_text, who


def dx_invalid(ctx: Context) -> Iterator[Hit]:
    for dx, status in ctx.diagnoses.invalid:
        why = (
            "is not billable (a category, not a complete code)"
            if status == "not-billable"
            else "is not an ICD-10-CM code"
        )
        yield Hit(f"{dx.owner}: diagnosis {dx.code} {why}; it is left off the Claim.", (dx.path,))


def dx_not_covered(ctx: Context) -> Iterator[Hit]:
    codes = [dx.code for dx in ctx.diagnoses.valid]
    for group in ctx.coding.groups:
        if any(ctx.pack.covered_for(code, group.region, group.family) for code in codes):
            continue
        listed = ", ".join(codes) if codes else "none"
        yield Hit(
            f"{who(p.key for p in group.procedures)}: no diagnosis supports {group.label} at "
            f"{levels_text(group)}: the session's diagnoses ({listed}) are "
            f"not on the covered list for the {group.region} region.",
            tuple(dx.path for dx in ctx.diagnoses.valid) or tuple(p.path for p in group.procedures),
        )


def radiculopathy(ctx: Context) -> Iterator[Hit]:
    for dx in ctx.case.radiculopathy:
        yield Hit(f"{dx.owner}: diagnosis {dx.code} is a radiculopathy or neurogenic claudication.", (dx.path,))
