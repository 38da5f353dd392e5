"""Rules on what the reader found in the facet procedures and how they were coded: levels, sides,
intent, guidance, imaging lines, corrected codes, levels and regions per session, undated and
not-done procedures."""

from __future__ import annotations

from collections.abc import Iterator

from ..coding import Group
from ..model import label_guidance
from ..spine import Region
from .context import Context, Hit, levels_text, who


def levels_unknown(ctx: Context) -> Iterator[Hit]:
    for proc in ctx.case.session.procedures:
        if not proc.levels:
            yield Hit(
                f"{proc.key} names no facet joint level (no bodySite level, BodyStructure, level or nerve "
                "wording, or facet CPT code); no line was written for it.",
                (proc.path,),
            )


def levels_inferred(ctx: Context) -> Iterator[Hit]:
    wording = {
        "nerve": "medial branch nerve wording",
        "text": "free-text level wording",
        "cpt": "the CPT code count",
    }
    for proc in ctx.case.session.procedures:
        if proc.level_source in wording:
            names = ", ".join(f.level.label for f in proc.levels)
            yield Hit(
                f"{proc.key}: levels {names} were read from {wording[proc.level_source]}, not from coded body sites.",
                tuple(dict.fromkeys(f.path for f in proc.levels)),
            )


def laterality_unknown(ctx: Context) -> Iterator[Hit]:
    # Per level of the session, after merging: a side from any procedure of the level beats none.
    for group in ctx.coding.groups:
        for entry in group.levels:
            if entry.side is None:
                keys = [p.key for p in entry.procedures]
                paths = [f.path for p in entry.procedures for f in p.levels if f.level == entry.level]
                yield Hit(
                    f"{who(keys)}: level {entry.level.label} has no side (left, right or bilateral); its line has "
                    "no RT, LT or 50 modifier.",
                    tuple(dict.fromkeys(paths)),
                )


def intent_unknown(ctx: Context) -> Iterator[Hit]:
    for proc in ctx.case.session.procedures:
        if proc.family == "injection" and proc.intent is None:
            yield Hit(
                f"{proc.key}: nothing says whether the injection is diagnostic or therapeutic (category, code "
                "text, notes); it gets no KX and counts as therapeutic for frequency.",
                (f"{proc.path}.category",),
            )


def guidance_unknown(ctx: Context) -> Iterator[Hit]:
    for proc in ctx.case.session.procedures:
        if proc.guidance == "unknown":
            yield Hit(f"{proc.key}: nothing says how the procedure was guided.", (proc.path,))


def guidance_not_covered(ctx: Context) -> Iterator[Hit]:
    covered = set(ctx.pack.limits.covered_guidance)
    for proc in ctx.case.session.procedures:
        if proc.guidance != "unknown" and proc.guidance not in covered:
            coded = "0213T-0218T" if proc.guidance == "ultrasound" and proc.family == "injection" else "the usual codes"
            yield Hit(
                f"{proc.key}: performed with {label_guidance(proc.guidance)}; only fluoroscopy or CT guidance is "
                f"covered (coded with {coded}).",
                tuple(filter(None, [proc.guidance_path])) or (proc.path,),
            )


def imaging_line_bundled(ctx: Context) -> Iterator[Hit]:
    for proc in ctx.case.session.procedures:
        for code in proc.imaging_codes:
            yield Hit(
                f"{proc.key}: imaging guidance code {code} was dropped; it is included in the facet code.",
                (proc.code_path,),
                avoids_denial=True,
            )
    for key in ctx.case.guidance_resources:
        yield Hit(
            f"{key}: the imaging guidance procedure is not billed; its code is included in the facet code.",
            (),
            avoids_denial=True,
        )


def input_corrected(ctx: Context) -> Iterator[Hit]:
    # What the record had, what the claim uses, and the denial the correction avoids: the claim is
    # already corrected, so the finding must not read as if the payer will deny it.
    for correction in ctx.coding.corrections:
        group = correction.group
        changes = []
        if correction.removed:
            changes.append("removed " + ", ".join(correction.removed))
        if correction.added:
            changes.append("added " + ", ".join(correction.added))
        yield Hit(
            f"{who(p.key for p in group.procedures)}: the record codes {levels_text(group)} ({group.label}) "
            f"as {', '.join(correction.input_codes)}; the claim uses {', '.join(correction.derived_codes)} "
            f"({', '.join(changes)}), the codes these levels take, so it is not denied for codes that do not "
            "match the levels.",
            tuple(p.code_path for p in group.procedures),
            avoids_denial=True,
        )


def levels_exceed_limit(ctx: Context) -> Iterator[Hit]:
    limit = ctx.pack.limits.levels_per_region
    by_region: dict[Region, list[Group]] = {}
    for group in ctx.coding.groups:
        by_region.setdefault(group.region, []).append(group)
    for region, groups in by_region.items():
        labels = list(dict.fromkeys(entry.level.label for group in groups for entry in group.levels))
        if len(labels) > limit:
            yield Hit(
                f"{who(p.key for g in groups for p in g.procedures)}: {len(labels)} levels in the {region} region "
                f"in one session ({', '.join(labels)}); the profile "
                f"allows {limit}. The further-level line is written but will be denied.",
                tuple(p.path for group in groups for p in group.procedures),
            )


def multiple_regions(ctx: Context) -> Iterator[Hit]:
    regions = list(dict.fromkeys(group.region for group in ctx.coding.groups))
    if len(regions) > ctx.pack.limits.regions_per_session:
        yield Hit(
            f"{who(ctx.case.session.keys)}: the session treats {len(regions)} regions ({', '.join(regions)}); "
            "one region per session is allowed "
            "(T12-L1 with L1-L2 counts as lumbar).",
            tuple(p.path for p in ctx.case.session.procedures),
        )


def procedure_undated(ctx: Context) -> Iterator[Hit]:
    for proc in ctx.case.undated:
        yield Hit(f"{proc.key} has no date of service; it is not claimed and not counted in history.", (proc.path,))


def procedure_not_done(ctx: Context) -> Iterator[Hit]:
    """A facet procedure of the session's patient and date (or, undated, of the session's Encounter)
    marked not-done is reported rather than dropped in silence (docs/input.md, statuses)."""
    for proc in ctx.case.not_done:
        levels = ", ".join(dict.fromkeys(f.level.label for f in proc.levels))
        yield Hit(
            f"{proc.key}" + (f" ({levels})" if levels else "") + " has status not-done: it was not performed, and "
            "it is not billed or counted in history.",
            (f"{proc.path}.status",),
        )
