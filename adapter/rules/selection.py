"""Which pack applies: by name (`--payer`), else the pack whose `[selection]` matches the
Coverage, else the default.

A pack's `[selection]` table lists match entries on the payor's names and identifiers and on the
Coverage's type and classes, with a priority. Only a pack's own file counts (see
`adapter.rules.packs`), so a site pack is chosen from a Coverage without code, and a pack that
extends another is not chosen by the other's words.
"""

from __future__ import annotations

import logging
from functools import cache

from ..errors import RulePackError
from ..model import CoverageFacts
from .context import ProfileSource
from .packs import Pack, SelectionMatch, own_table, pack_files, read_pack
from .registry import RULE_IDS

log = logging.getLogger(__name__)

# The pack used when there is no --payer and no pack's selection matches the Coverage.
DEFAULT_PACK = "commercial"


@cache
def load_pack(name: str) -> Pack:
    """The pack `name`, validated against the rule registry (read once per process)."""
    return read_pack(name, RULE_IDS)


def matches(entry: SelectionMatch, facts: CoverageFacts) -> bool:
    """Whether every condition of one match entry holds for the Coverage."""
    if entry.payor_contains is not None:
        wanted = entry.payor_contains.lower()
        if not any(wanted in name.lower() for name in facts.payor_names):
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


def selectable_packs() -> list[Pack]:
    """The packs whose own file has a `[selection]` table, highest priority first, then by name."""
    found: list[Pack] = []
    for name, path in pack_files().items():
        table = own_table(name)
        if "selection" not in table:
            continue
        if table.get("abstract", False):
            raise RulePackError(f"Rule pack {name!r} ({path}) is a shared base pack: it cannot have a [selection].")
        found.append(load_pack(name))
    return sorted(found, key=lambda pack: (-(pack.selection.priority if pack.selection else 0), pack.name))


def select_pack(facts: CoverageFacts) -> Pack | None:
    """The pack the Coverage chooses, or None when no pack's selection matches it."""
    for pack in selectable_packs():
        if pack.selection is not None and any(matches(entry, facts) for entry in pack.selection.match):
            return pack
    return None


def choose_pack(payer: str | None, facts: CoverageFacts) -> tuple[Pack, ProfileSource]:
    """--payer; else the pack the Coverage chooses; else the default pack (docs/cli.md, options of claim and check)."""
    if payer is not None:
        return load_pack(payer), "option"
    chosen = select_pack(facts)
    if chosen is not None:
        # Pack names only: what the Coverage says about the payer stays out of the log.
        log.debug("pack %s chosen from the Coverage", chosen.name)
        return chosen, "coverage"
    return load_pack(DEFAULT_PACK), "default"
