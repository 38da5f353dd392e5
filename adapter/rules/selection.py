"""Which pack applies (docs/input.md, payer profile): `--payer`; else the pack whose `[selection]`
matches the Coverage (a site pack, or the Medicare contractor the payor names); else, for a
Medicare Coverage that names no contractor, the contractor of the place of service's state
(mappings/jurisdictions.toml); else a default, which `payer-defaulted` reports with the reason.

A pack's `[selection]` table lists match entries on the payor's names and identifiers and on the
Coverage's type, classes and plan, with a priority. Only a pack's own file counts (see
`adapter.rules.packs`), so a site pack is chosen from a Coverage without code, and a pack that
extends another is not chosen by the other's words. A Medicare Advantage site pack is laid over the
contractor's pack of the place of service (CMS-4201-F: MA plans follow the contractor's LCD).
"""

from __future__ import annotations

import logging
import re
from typing import NamedTuple

from ..model import CoverageFacts
from .context import ProfileSource
from .packs import Pack, SelectionMatch, read_pack, selectable_names
from .registry import RULE_IDS

log = logging.getLogger(__name__)

# The pack used when there is no --payer and no pack's selection matches the Coverage.
DEFAULT_PACK = "commercial"
_WORD = re.compile(r"[a-z0-9]+")
_CHOICES_KEPT = 4096


class _Packs:
    """The packs of this process, each read once: `load_pack(name, over)`, and the selectable packs
    in the order they are tried. `load_pack.cache_clear()` forgets them (a site pack folder that
    changed; also clear `adapter.tables.load_toml`)."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, str | None], Pack] = {}
        self._selectable: tuple[Pack, ...] | None = None
        # Pack choices by (--payer, Coverage facts), with what was logged about each.
        self.choices: dict[tuple[str | None, CoverageFacts], tuple[PackChoice, tuple[str, ...]]] = {}

    def __call__(self, name: str, over: str | None = None) -> Pack:
        """The pack `name` (laid over the pack `over`, for a Medicare Advantage site pack), validated
        against the rule registry."""
        found = self._loaded.get((name, over))
        if found is None:
            found = self._loaded[(name, over)] = read_pack(name, RULE_IDS, over=over)
        return found

    def selectable(self) -> tuple[Pack, ...]:
        """The packs whose own file has a `[selection]` table, highest priority first, then by name
        (read once: a bulk run chooses a pack for every session)."""
        if self._selectable is None:
            found = [self(name) for name in selectable_names()]
            self._selectable = tuple(
                sorted(found, key=lambda pack: (-(pack.selection.priority if pack.selection else 0), pack.name))
            )
        return self._selectable

    def remember(self, key: tuple[str | None, CoverageFacts], choice: tuple[PackChoice, tuple[str, ...]]) -> None:
        if len(self.choices) >= _CHOICES_KEPT:  # a long-running service sees ever new places
            self.choices.clear()
        self.choices[key] = choice

    def cache_clear(self) -> None:
        self._loaded.clear()
        self._selectable = None
        self.choices.clear()


load_pack = _Packs()


class PackChoice(NamedTuple):
    pack: Pack
    source: ProfileSource
    reason: str  # how the pack was chosen, in a coder's words (resource ids, never their content)
    defaulted: bool  # a default stood in for what the record does not say: raises payer-defaulted


def matches(entry: SelectionMatch, facts: CoverageFacts) -> bool:
    """Whether every condition of one match entry holds for the Coverage."""
    if entry.payor_contains is not None:
        wanted = entry.payor_contains.lower()
        if not any(wanted in name.lower() for name in facts.payor_names):
            return False
    if entry.payor_words:
        wanted_words = {word.lower() for word in entry.payor_words}
        if not any(wanted_words <= set(_WORD.findall(name.lower())) for name in facts.payor_names):
            return False
    if entry.plan_contains is not None:
        wanted = entry.plan_contains.lower()
        if not any(wanted in name.lower() for name in facts.plan_names):
            return False
    if entry.payor_identifier is not None:
        ident = entry.payor_identifier
        if not any(
            value == ident.value and ident.system in (None, system) for system, value in facts.payor_identifiers
        ):
            return False
    if entry.coverage_type is not None:
        code_match = entry.coverage_type
        if not any(
            code == code_match.code and code_match.system in (None, system) for system, code in facts.coverage_types
        ):
            return False
    if entry.coverage_class is not None:
        class_match = entry.coverage_class
        if not any(
            kind == class_match.type and class_match.value in (None, value) for kind, value in facts.coverage_classes
        ):
            return False
    return True


def _selected(facts: CoverageFacts) -> tuple[Pack, list[SelectionMatch]] | None:
    for pack in load_pack.selectable():
        if pack.selection is None:
            continue
        entries = [entry for entry in pack.selection.match if matches(entry, facts)]
        if entries:
            return pack, entries
    return None


def select_pack(facts: CoverageFacts) -> Pack | None:
    """The pack whose selection the Coverage matches first, or None."""
    found = _selected(facts)
    return found[0] if found is not None else None


def pack_choice(payer: str | None, facts: CoverageFacts) -> PackChoice:
    """The pack for a session and why (docs/input.md, payer profile)."""
    # The same Coverage and place choose the same pack: a bulk run asks once per patient, not per session.
    found = load_pack.choices.get((payer, facts))
    if found is None:
        found = _choose(payer, facts)
        load_pack.remember((payer, facts), found)
    choice, logged = found
    if logged:
        log.debug(*logged)
    return choice


def _choose(payer: str | None, facts: CoverageFacts) -> tuple[PackChoice, tuple[str, ...]]:
    """The choice, and what to log about it (pack names and jurisdiction codes only)."""
    if payer is not None:
        return PackChoice(load_pack(payer), "option", f"--payer {payer}", False), ()
    found = _selected(facts)
    if found is None:
        default = load_pack(DEFAULT_PACK)
        what = "no pack's selection matches the Coverage" if facts.payor_names else "no Coverage names a payer"
        reason = f"No --payer and {what}: the {default.name!r} profile was used."
        return PackChoice(default, "default", reason, True), ()
    pack, entries = found
    site_advantage = pack.selection is not None and pack.selection.medicare_advantage
    plan = "Medicare Advantage" if site_advantage or any(e.medicare_advantage for e in entries) else "Medicare"
    if not site_advantage and any(not entry.by_place for entry in entries):
        # Pack names only: what the Coverage says about the payer stays out of the log.
        reason = f"the Coverage's payor names the {pack.name!r} profile"
        return PackChoice(pack, "coverage", reason, False), ("pack %s chosen from the Coverage", pack.name)
    # Imported here: only a Medicare Coverage naming no contractor needs the jurisdiction table.
    from .jurisdictions import jurisdiction_of

    state, jurisdiction = jurisdiction_of(facts.place_state, facts.place_country)
    if jurisdiction is not None:
        where = f"{facts.place_from or 'the place of service'} is in {state}, Medicare jurisdiction {jurisdiction.code}"
        if site_advantage:
            chosen = load_pack(pack.name, jurisdiction.pack)
            reason = (
                f"{plan} plan profile {pack.name!r} laid over the {jurisdiction.pack!r} contractor profile: {where}"
            )
        else:
            chosen = load_pack(jurisdiction.pack)
            reason = f"{plan} Coverage naming no contractor; {where} ({jurisdiction.mac}): the {chosen.name!r} profile"
        logged = ("pack %s chosen by jurisdiction %s", chosen.name, jurisdiction.code)
        return PackChoice(chosen, "place", reason, False), logged
    if facts.place_state or facts.place_country:
        why = f"the state of {facts.place_from or 'the place of service'} is not a Medicare jurisdiction's"
    else:
        why = "neither the session's Location nor the billing Organization has an address with a state"
    reason = (
        f"The Coverage is {plan} and names no contractor, and {why}: the {pack.name!r} profile ({pack.title}) was used."
    )
    return PackChoice(pack, "coverage", reason, True), ()


def choose_pack(payer: str | None, facts: CoverageFacts) -> tuple[Pack, ProfileSource]:
    """--payer; else the pack the Coverage (and the place of service) chooses; else the default."""
    choice = pack_choice(payer, facts)
    return choice.pack, choice.source
