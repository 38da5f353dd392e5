"""Rules on the patient's earlier facet sessions: sessions per 12 months, the diagnostic blocks a
treatment needs, and the interval between blocks."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

from ..coding import Group, group_levels
from ..fhir.values import add_months
from ..model import FacetProcedure, Session
from ..spine import Region
from .context import Context, Hit, levels_text, who

_CATEGORY_WORD = {"diagnostic": "diagnostic", "therapeutic": "therapeutic", "rfa": "RFA"}


def _window_start(day: dt.date) -> dt.date:
    """First day of the 12 calendar months ending on `day`."""
    return add_months(day, -12) + dt.timedelta(days=1)


def _session_categories(session_groups: list[Group]) -> set[tuple[Region, str]]:
    found: set[tuple[Region, str]] = set()
    for group in session_groups:
        for proc in group.procedures:
            found.add((group.region, proc.category))
    return found


# Searched only for an earlier procedure that names no level: compiled on first use (re keeps them).
_REGION_WORDS: tuple[tuple[Region, str], ...] = (
    ("cervical-thoracic", r"\bcervical|\bthoracic"),
    ("lumbar-sacral", r"\blumbar|\bsacral|\blumbosacral"),
)


def _history_categories(ctx: Context, session: Session) -> set[tuple[Region, str]]:
    """(region, category) pairs of an earlier session. A procedure that names no level still
    counts: in the region its words name, else in every region of the session being checked
    (history counts every other facet session, docs/input.md, history)."""
    found = _session_categories(_history_groups(ctx, session))
    current = {group.region for group in ctx.coding.groups}
    for proc in session.procedures:
        if proc.levels:
            continue
        text = " ".join(filter(None, [proc.text]))
        named = {region for region, words in _REGION_WORDS if re.search(words, text, re.IGNORECASE)}
        found |= {(region, proc.category) for region in (named or current)}
    return found


def _history_groups(ctx: Context, session: Session) -> list[Group]:
    cached = ctx.memo.get(id(session))
    if cached is None:
        # An earlier session counts in the regions its own date's coding rules give it
        # (docs/input.md, versions in force): CGS's thoraco-lumbar rule only from 2025-01-01.
        rules = ctx.pack.on(session.date).coding if ctx.pack.dated.coding else ctx.pack.coding
        cached = ctx.memo[id(session)] = group_levels(session.procedures, thoraco_lumbar=rules.thoraco_lumbar)
    return cached


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
                f"{who(ctx.case.session.keys)}: this would be {_CATEGORY_WORD[category]} session "
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
                    f"{who(p.key for p in group.procedures)}: {what} at {levels_text(group)} needs {needed} "
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
                    f"{who(p.key for p in group.procedures)}: a further diagnostic block at {levels_text(group)} "
                    "follows the block of "
                    f"{session.date.isoformat()} ({', '.join(p.key for p in procs)}) with {_relief_text(relief)}; "
                    f"a confirmatory block needs at least {threshold:.0f}% relief after the first.",
                    tuple(p.path for p in group.procedures),
                )


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
                f"{who(p.key for p in group.procedures)}: this diagnostic block is {days} days after the "
                f"diagnostic block of {session.date.isoformat()} "
                f"({', '.join(p.key for p in procs)}) in the {group.region} region; at least {minimum} days are "
                "expected.",
                tuple(p.path for p in group.procedures),
            )
