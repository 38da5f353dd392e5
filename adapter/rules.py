"""The rule functions, one per rule id (docs/output.md, rule ids).

Each function reads the check context and yields a Hit per occurrence. Limits, severities and
citations come from the pack; these functions hold only the logic a coder would apply.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator

from .check import Context, Hit, rule
from .code import Group, group_levels
from .fhirpath import add_months
from .model import FacetProcedure, Session, label_guidance
from .spine import Region

_CATEGORY_WORD = {"diagnostic": "diagnostic", "therapeutic": "therapeutic", "rfa": "RFA"}


def _who(keys: Iterable[str | None]) -> str:
    """The resources a message is about, named by id (paths alone are ambiguous in NDJSON)."""
    names = list(dict.fromkeys(k for k in keys if k))
    return ", ".join(names[:4]) + (" …" if len(names) > 4 else "")


def _levels_text(group: Group) -> str:
    return ", ".join(entry.level.label for entry in group.levels)


# --------------------------------------------------------------------------- reading and coding


@rule("levels-unknown")
def levels_unknown(ctx: Context) -> Iterator[Hit]:
    for proc in ctx.case.session.procedures:
        if not proc.levels:
            yield Hit(
                f"{proc.key} names no facet joint level (no bodySite level, BodyStructure, level or nerve "
                "wording, or facet CPT code); no line was written for it.",
                (proc.path,),
            )


@rule("levels-inferred")
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


@rule("laterality-unknown")
def laterality_unknown(ctx: Context) -> Iterator[Hit]:
    # Per level of the session, after merging: a side from any procedure of the level beats none.
    for group in ctx.coding.groups:
        for entry in group.levels:
            if entry.side is None:
                keys = [p.key for p in entry.procedures]
                paths = [f.path for p in entry.procedures for f in p.levels if f.level == entry.level]
                yield Hit(
                    f"{_who(keys)}: level {entry.level.label} has no side (left, right or bilateral); its line has "
                    "no RT, LT or 50 modifier.",
                    tuple(dict.fromkeys(paths)),
                )


@rule("intent-unknown")
def intent_unknown(ctx: Context) -> Iterator[Hit]:
    for proc in ctx.case.session.procedures:
        if proc.family == "injection" and proc.intent is None:
            yield Hit(
                f"{proc.key}: nothing says whether the injection is diagnostic or therapeutic (category, code "
                "text, notes); it gets no KX and counts as therapeutic for frequency.",
                (f"{proc.path}.category",),
            )


@rule("guidance-unknown")
def guidance_unknown(ctx: Context) -> Iterator[Hit]:
    for proc in ctx.case.session.procedures:
        if proc.guidance == "unknown":
            yield Hit(f"{proc.key}: nothing says how the procedure was guided.", (proc.path,))


@rule("guidance-not-covered")
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


@rule("imaging-line-bundled")
def imaging_line_bundled(ctx: Context) -> Iterator[Hit]:
    for proc in ctx.case.session.procedures:
        for code in proc.imaging_codes:
            yield Hit(
                f"{proc.key}: imaging guidance code {code} was dropped; it is included in the facet code.",
                (proc.code_path,),
            )
    for key in ctx.case.guidance_resources:
        yield Hit(f"{key}: imaging guidance procedure was not billed; its code is included in the facet code.", ())


@rule("input-corrected")
def input_corrected(ctx: Context) -> Iterator[Hit]:
    for correction in ctx.coding.corrections:
        group = correction.group
        changes = []
        if correction.removed:
            changes.append("removed " + ", ".join(correction.removed))
        if correction.added:
            changes.append("added " + ", ".join(correction.added))
        yield Hit(
            f"{_who(p.key for p in group.procedures)}: the input coded {', '.join(correction.input_codes)} for the "
            f"{group.label} levels {_levels_text(group)}; "
            f"the levels code as {', '.join(correction.derived_codes)} ({'; '.join(changes)}).",
            tuple(p.code_path for p in group.procedures),
        )


@rule("levels-exceed-limit")
def levels_exceed_limit(ctx: Context) -> Iterator[Hit]:
    limit = ctx.pack.limits.levels_per_region
    by_region: dict[Region, list[Group]] = {}
    for group in ctx.coding.groups:
        by_region.setdefault(group.region, []).append(group)
    for region, groups in by_region.items():
        labels = list(dict.fromkeys(entry.level.label for group in groups for entry in group.levels))
        if len(labels) > limit:
            yield Hit(
                f"{_who(p.key for g in groups for p in g.procedures)}: {len(labels)} levels in the {region} region "
                f"in one session ({', '.join(labels)}); the profile "
                f"allows {limit}. The further-level line is written but will be denied.",
                tuple(p.path for group in groups for p in group.procedures),
            )


@rule("multiple-regions")
def multiple_regions(ctx: Context) -> Iterator[Hit]:
    regions = list(dict.fromkeys(group.region for group in ctx.coding.groups))
    if len(regions) > ctx.pack.limits.regions_per_session:
        yield Hit(
            f"{_who(ctx.case.session.keys)}: the session treats {len(regions)} regions ({', '.join(regions)}); "
            "one region per session is allowed "
            "(T12-L1 with L1-L2 counts as lumbar).",
            tuple(p.path for p in ctx.case.session.procedures),
        )


@rule("claim-data-missing")
def claim_data_missing(ctx: Context) -> Iterator[Hit]:
    if ctx.case.provider is None:
        yield Hit(
            f"{_who(ctx.case.session.keys)}: no provider: the facet procedures have no performer (or requester) "
            "and the encounter no service provider; the Claim names the provider by display only.",
            tuple(f"{p.path}.performer" for p in ctx.case.session.procedures),
        )
    if ctx.case.coverage is None:
        yield Hit(
            f"{ctx.case.patient}: no Coverage for the patient; the Claim names the insurance by display only.", ()
        )


@rule("pos-defaulted")
def pos_defaulted(ctx: Context) -> Iterator[Hit]:
    if ctx.case.place_of_service_source == "default":
        yield Hit("No place of service on the encounter's location and no --pos: 11 (office) was used.", ())


@rule("payer-defaulted")
def payer_defaulted(ctx: Context) -> Iterator[Hit]:
    if ctx.profile_source == "default":
        yield Hit(f"No --payer and no Coverage naming Medicare: the {ctx.pack.name!r} profile was used.", ())


@rule("procedure-undated")
def procedure_undated(ctx: Context) -> Iterator[Hit]:
    for proc in ctx.case.undated:
        yield Hit(f"{proc.key} has no date of service; it is not claimed and not counted in history.", (proc.path,))


# --------------------------------------------------------------------------- diagnoses


@rule("dx-invalid")
def dx_invalid(ctx: Context) -> Iterator[Hit]:
    for dx, status in ctx.diagnoses.invalid:
        why = (
            "is not billable (a category, not a complete code)"
            if status == "not-billable"
            else "is not an ICD-10-CM code"
        )
        yield Hit(f"{dx.owner}: diagnosis {dx.code} {why}; it is left off the Claim.", (dx.path,))


@rule("dx-not-covered")
def dx_not_covered(ctx: Context) -> Iterator[Hit]:
    codes = [dx.code for dx in ctx.diagnoses.valid]
    for group in ctx.coding.groups:
        if any(ctx.pack.covered_for(code, group.region, group.family) for code in codes):
            continue
        listed = ", ".join(codes) if codes else "none"
        yield Hit(
            f"{_who(p.key for p in group.procedures)}: no diagnosis supports {group.label} at "
            f"{_levels_text(group)}: the session's diagnoses ({listed}) are "
            f"not on the covered list for the {group.region} region.",
            tuple(dx.path for dx in ctx.diagnoses.valid) or tuple(p.path for p in group.procedures),
        )


@rule("radiculopathy")
def radiculopathy(ctx: Context) -> Iterator[Hit]:
    for dx in ctx.case.radiculopathy:
        yield Hit(f"{dx.owner}: diagnosis {dx.code} is a radiculopathy or neurogenic claudication.", (dx.path,))


# --------------------------------------------------------------------------- history


def _window_start(day: dt.date) -> dt.date:
    """First day of the 12 calendar months ending on `day`."""
    return add_months(day, -12) + dt.timedelta(days=1)


def _session_categories(session_groups: list[Group]) -> set[tuple[Region, str]]:
    found: set[tuple[Region, str]] = set()
    for group in session_groups:
        for proc in group.procedures:
            found.add((group.region, proc.category))
    return found


_REGION_WORDS: tuple[tuple[Region, re.Pattern[str]], ...] = (
    ("cervical-thoracic", re.compile(r"\bcervical|\bthoracic", re.IGNORECASE)),
    ("lumbar-sacral", re.compile(r"\blumbar|\bsacral|\blumbosacral", re.IGNORECASE)),
)


def _history_categories(ctx: Context, session: Session) -> set[tuple[Region, str]]:
    """(region, category) pairs of an earlier session. A procedure that names no level still
    counts, because history counts every other facet session (docs/input.md, history): in the
    region its words name, else in every region of the session being checked."""
    found = _session_categories(_history_groups(ctx, session))
    current = {group.region for group in ctx.coding.groups}
    for proc in session.procedures:
        if proc.levels:
            continue
        text = " ".join(filter(None, [proc.text]))
        named = {region for region, words in _REGION_WORDS if words.search(text)}
        found |= {(region, proc.category) for region in (named or current)}
    return found


def _history_groups(ctx: Context, session: Session) -> list[Group]:
    cached = ctx.memo.get(id(session))
    if cached is None:
        cached = ctx.memo[id(session)] = group_levels(session.procedures)
    return cached


@rule("frequency-limit")
def frequency_limit(ctx: Context) -> Iterator[Hit]:
    dos = ctx.case.session.date
    start = _window_start(dos)
    past: dict[tuple[Region, str], list[Session]] = {}
    for session in ctx.case.history:
        if not start <= session.date < dos:
            continue
        for key in _history_categories(ctx, session):
            past.setdefault(key, []).append(session)
    for region, category in sorted(_session_categories(ctx.coding.groups)):
        earlier = past.get((region, category), [])
        allowed = ctx.pack.limits.sessions_allowed(category)
        if len(earlier) + 1 > allowed:
            dates = ", ".join(s.date.isoformat() for s in earlier)
            yield Hit(
                f"{_who(ctx.case.session.keys)}: this would be {_CATEGORY_WORD[category]} session "
                f"{len(earlier) + 1} in the {region} region in the 12 "
                f"months {start.isoformat()} to {dos.isoformat()} (earlier: {dates}); the profile allows {allowed}.",
                tuple(p.path for p in ctx.case.session.procedures),
            )


def _overlaps(group: Group, proc: FacetProcedure) -> bool:
    joints = {entry.level.joint for entry in group.levels}
    theirs = {f.level.joint for f in proc.levels}
    if None in joints or None in theirs:
        return True  # a level known only by count may be any level of the region
    return bool(joints & theirs)


def _earlier_blocks(ctx: Context, group: Group, *, overlapping: bool) -> list[tuple[Session, list[FacetProcedure]]]:
    """Earlier diagnostic injection sessions in the group's region, newest last."""
    found: list[tuple[Session, list[FacetProcedure]]] = []
    for session in ctx.case.history:
        if session.date >= ctx.case.session.date:
            continue
        procs: list[FacetProcedure] = []
        for past_group in _history_groups(ctx, session):
            if past_group.region != group.region or past_group.family != "injection":
                continue
            for proc in past_group.procedures:
                if proc.intent == "diagnostic" and (not overlapping or _overlaps(group, proc)) and proc not in procs:
                    procs.append(proc)
        if procs:
            found.append((session, procs))
    return found


def _relief(ctx: Context, procs: list[FacetProcedure]) -> float | None:
    values = [r.percent for p in procs if (r := ctx.case.reliefs.get(p.key)) is not None and r.percent is not None]
    return max(values) if values else None


def _relief_text(value: float | None) -> str:
    return "relief unknown" if value is None else f"{value:.0f}% relief"


@rule("diagnostic-block-prerequisite")
def diagnostic_block_prerequisite(ctx: Context) -> Iterator[Hit]:
    needed = ctx.pack.limits.required_diagnostic_blocks
    threshold = ctx.pack.limits.min_relief_percent
    for group in ctx.coding.groups:
        intents = {p.intent for p in group.procedures}
        earlier = _earlier_blocks(ctx, group, overlapping=True)
        described = (
            "; ".join(f"{s.date.isoformat()} ({_relief_text(_relief(ctx, procs))})" for s, procs in earlier) or "none"
        )
        if group.family == "ablation" or "therapeutic" in intents:
            qualifying = [s for s, procs in earlier if (r := _relief(ctx, procs)) is not None and r >= threshold]
            if len(qualifying) < needed:
                what = "RFA" if group.family == "ablation" else "A therapeutic injection"
                yield Hit(
                    f"{_who(p.key for p in group.procedures)}: {what} at {_levels_text(group)} needs {needed} "
                    f"earlier diagnostic blocks in the {group.region} "
                    f"region at overlapping levels, each with at least {threshold:.0f}% relief; found "
                    f"{len(qualifying)} (earlier diagnostic blocks: {described}).",
                    tuple(p.path for p in group.procedures),
                )
        elif "diagnostic" in intents and earlier:
            session, procs = earlier[-1]
            relief = _relief(ctx, procs)
            if relief is None or relief < threshold:
                yield Hit(
                    f"{_who(p.key for p in group.procedures)}: a further diagnostic block at {_levels_text(group)} "
                    "follows the block of "
                    f"{session.date.isoformat()} ({', '.join(p.key for p in procs)}) with {_relief_text(relief)}; "
                    f"a confirmatory block needs at least {threshold:.0f}% relief after the first.",
                    tuple(p.path for p in group.procedures),
                )


@rule("block-interval")
def block_interval(ctx: Context) -> Iterator[Hit]:
    minimum = ctx.pack.limits.min_block_interval_days
    for group in ctx.coding.groups:
        if group.family != "injection" or not any(p.intent == "diagnostic" for p in group.procedures):
            continue
        earlier = _earlier_blocks(ctx, group, overlapping=False)
        if not earlier:
            continue
        session, procs = earlier[-1]
        days = (ctx.case.session.date - session.date).days
        if days < minimum:
            yield Hit(
                f"{_who(p.key for p in group.procedures)}: this diagnostic block is {days} days after the "
                f"diagnostic block of {session.date.isoformat()} "
                f"({', '.join(p.key for p in procs)}) in the {group.region} region; at least {minimum} days are "
                "expected.",
                tuple(p.path for p in group.procedures),
            )


# --------------------------------------------------------------------------- documentation


@rule("pain-duration")
def pain_duration(ctx: Context) -> Iterator[Hit]:
    dos = ctx.case.session.date
    months = ctx.pack.limits.min_pain_months
    onset = ctx.diagnoses.onset
    if onset is None or onset.onset is None:
        supporting = ctx.diagnoses.supporting
        yield Hit(
            f"{_who(c.key for c in supporting) or 'No Condition'}: no onset on record for the supporting "
            "conditions (onsetDateTime, onsetPeriod.start or recordedDate).",
            (),
        )
        return
    if add_months(onset.onset, months) > dos:
        yield Hit(
            f"{onset.key}: pain began {onset.onset.isoformat()}"
            + (f" ({onset.code})" if onset.code else "")
            + f", less than {months} months before the date of service {dos.isoformat()}.",
            tuple(filter(None, [onset.onset_path])),
        )


@rule("pain-score-missing")
def pain_score_missing(ctx: Context) -> Iterator[Hit]:
    if not ctx.case.evidence.pain_scores:
        yield Hit(
            "No 0-10 pain score (LOINC 72514-3) in the 12 months up to the date of service.",
            (),
        )


@rule("conservative-care")
def conservative_care(ctx: Context) -> Iterator[Hit]:
    evidence = ctx.case.evidence
    minimum = ctx.pack.limits.min_conservative_care_days
    if not evidence.conservative_care:
        yield Hit(
            "No conservative care on record before the date of service (physical therapy, home exercise, "
            "chiropractic care, NSAIDs or other analgesics).",
            (),
        )
        return
    days = evidence.conservative_days or 0
    if days < minimum:
        kinds = ", ".join(dict.fromkeys(item.text or "care" for item in evidence.conservative_care))
        yield Hit(
            f"{_who(item.source_key for item in evidence.conservative_care)}: conservative care on record "
            f"({kinds}) lasted {days} days before the date of service; the profile "
            f"requires at least {minimum} days ({minimum // 7} weeks).",
            tuple(filter(None, (item.path for item in evidence.conservative_care))),
        )


@rule("prior-auth-required")
def prior_auth_required(ctx: Context) -> Iterator[Hit]:
    policy = ctx.pack.prior_authorization
    case = ctx.case
    if case.use not in policy.uses or case.place_of_service not in policy.places_of_service:
        return
    if case.evidence.prior_auth:
        return
    codes = sorted({line.code for line in ctx.coding.lines if line.code in policy.codes})
    if codes:
        yield Hit(
            f"{_who(case.session.keys)}: codes {', '.join(codes)} at place of service {case.place_of_service} "
            "need prior authorization, and "
            "none is on record (no --prior-auth, no approved preauthorization ClaimResponse).",
            tuple(p.path for p in case.session.procedures),
        )
