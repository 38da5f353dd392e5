"""Which pack applies: by name (`--payer`), else the pack whose `[selection]` matches the
Coverage, else the default.

A pack's `[selection]` table lists match entries on the payor's names and identifiers and on the
Coverage's type and classes, with a priority. Only a pack's own file counts (see
`adapter.rules.packs`), so a site pack is chosen from a Coverage without code, and a pack that
extends another is not chosen by the other's words.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from ..errors import RulePackError
from ..fhirpath import codings, dicts, get_dict, get_str
from ..ingest import ResourceIndex
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


@dataclass(frozen=True, slots=True)
class CoverageFacts:
    """What pack selection reads from the patient's Coverage (nothing when there is none)."""

    # The payor's display, Organization name and aliases, identifier values and systems, as the
    # reader collects them (`Case.payer_names`).
    payor_names: tuple[str, ...] = ()
    payor_identifiers: tuple[tuple[str | None, str], ...] = ()  # (system, value)
    coverage_types: tuple[tuple[str | None, str], ...] = ()  # (system, code) of Coverage.type
    coverage_classes: tuple[tuple[str, str], ...] = ()  # (type code, value) of Coverage.class


def coverage_facts(index: ResourceIndex, coverage_key: str | None, payer_names: Iterable[str]) -> CoverageFacts:
    """The facts of the Coverage the reader chose (`Case.coverage`), which it has validated."""
    names = tuple(payer_names)
    coverage = next((r for r in index.of_type("Coverage", contained=True) if r.key == coverage_key), None)
    if coverage is None:
        return CoverageFacts(payor_names=names)
    identifiers: list[tuple[str | None, str]] = []
    for _, payor in dicts(coverage.data.get("payor")):
        identifiers.extend(_identifiers([get_dict(payor, "identifier")]))
        target = index.resolve(payor, coverage)
        if target is not None and target.type == "Organization":
            identifiers.extend(_identifiers(item for _, item in dicts(target.data.get("identifier"))))
    classes: list[tuple[str, str]] = []
    for _, entry in dicts(coverage.data.get("class")):
        value = get_str(entry, "value")
        if value is not None:
            classes.extend((code, value) for _, _, code, _ in codings(entry.get("type")) if code)
    return CoverageFacts(
        payor_names=names,
        payor_identifiers=tuple(identifiers),
        coverage_types=tuple((system, code) for _, system, code, _ in codings(coverage.data.get("type")) if code),
        coverage_classes=tuple(classes),
    )


def _identifiers(items: Iterable[dict[str, object]]) -> list[tuple[str | None, str]]:
    found: list[tuple[str | None, str]] = []
    for item in items:
        value = get_str(item, "value")
        if value is not None:
            found.append((get_str(item, "system"), value))
    return found


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
    """--payer; else the pack the Coverage chooses; else the default pack (contract §4.1)."""
    if payer is not None:
        return load_pack(payer), "option"
    chosen = select_pack(facts)
    if chosen is not None:
        # Pack names only: what the Coverage says about the payer stays out of the log.
        log.debug("pack %s chosen from the Coverage", chosen.name)
        return chosen, "coverage"
    return load_pack(DEFAULT_PACK), "default"
