"""Payer rule packs: versioned data in mappings/packs/, validated when loaded.

A pack names its limits, billing format, covered diagnoses, prior-authorization list and, for
every rule, its version, severity, citation and CARC. A pack may `extends` another; the merged
result is validated as a whole, so a broken pack is a clear error at load time, not a wrong
finding later. A pack's `[selection]` table (which Coverages choose it) is its own: it is not
inherited, so a pack that extends `medicare` is not chosen by the words that choose `medicare`.

A pack may also version its `limits`, `coding` and `diagnoses` sections by date (`[[dated.<section>]]`,
see `adapter.rules.dated`); `Pack.on(date)` is the pack as in force on a date of service. A Medicare
contractor's pack names the contractor and the documents it follows (`[contractor]`, `[sources]`),
each with its version, effective date and whether that was confirmed.

The classes below are what the rules read: named tuples, immutable values whose classes cost a
one-file run little to create (a frozen dataclass compiles six generated methods at import: as
dataclasses, these twenty-one classes took about 10 ms of `claim`'s start). The checks a pack
passes when it is loaded are pydantic models of the same names in `adapter.rules.table_schemas`,
used only when a pack's files changed since the last run (`adapter.tablecache` keeps the
validated pack), so a run does not pay for building them either.

This module knows the pack format, not the rules: the rule ids a pack must define are passed in
by `adapter.rules.selection.load_pack`, which takes them from the rule registry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from string import Formatter
from typing import Any, Literal, NamedTuple

from ..errors import RulePackError, UsageError
from ..model import Family
from ..spine import Region
from ..tablecache import cached
from ..tables import load_toml, mappings_dir, overlay_dir
from . import dated
from .dated import InForce, version_on
from .terms import IssueType, Severity


class Document(NamedTuple):
    """A document citations name: its title, and its public address when it has one (an LCD or
    article in the CMS Medicare Coverage Database, a regulation), so a review can link to it.
    A pack writes a document as its title alone, or as a table `{ title = "…", url = "https://…" }`."""

    title: str
    url: str | None


class RuleSpec(NamedTuple):
    id: str
    version: int
    severity: Severity
    issue: IssueType
    title: str
    citation: str
    carc: str | None
    hint: str


class Billing(NamedTuple):
    bilateral: Literal["modifier-50", "rt-lt"]
    kx_on_diagnostic_injections: bool


class Limits(NamedTuple):
    levels_per_region: int
    regions_per_session: int
    diagnostic_sessions_per_12_months: int
    therapeutic_sessions_per_12_months: int
    rfa_sessions_per_12_months: int
    min_pain_months: int
    min_conservative_care_days: int
    min_block_interval_days: int
    min_relief_percent: float
    required_diagnostic_blocks: int
    covered_guidance: tuple[str, ...]

    def sessions_allowed(self, category: str) -> int:
        return {
            "diagnostic": self.diagnostic_sessions_per_12_months,
            "therapeutic": self.therapeutic_sessions_per_12_months,
            "rfa": self.rfa_sessions_per_12_months,
        }[category]


class LimitsVersion(NamedTuple):
    """A dated version of [limits]: the keys it sets override the pack's undated limits."""

    version: str  # the document revision it follows, e.g. "A58364 v32"
    effective: dt.date
    until: dt.date | None
    confirmed: bool
    note: str
    levels_per_region: int | None = None
    regions_per_session: int | None = None
    diagnostic_sessions_per_12_months: int | None = None
    therapeutic_sessions_per_12_months: int | None = None
    rfa_sessions_per_12_months: int | None = None
    min_pain_months: int | None = None
    min_conservative_care_days: int | None = None
    min_block_interval_days: int | None = None
    min_relief_percent: float | None = None
    required_diagnostic_blocks: int | None = None
    covered_guidance: tuple[str, ...] | None = None

    def overrides(self) -> dict[str, Any]:
        return dated.overrides(self)


class CodingRules(NamedTuple):
    # T12-L1 with L1-L2 in one session is one lumbar session (docs/coding.md, thoraco-lumbar rule).
    thoraco_lumbar: bool


class CodingVersion(NamedTuple):
    """A dated version of [coding]: the keys it sets override the pack's undated coding rules."""

    version: str  # the document revision it follows, e.g. "A58364 v32"
    effective: dt.date
    until: dt.date | None
    confirmed: bool
    note: str
    thoraco_lumbar: bool | None = None

    def overrides(self) -> dict[str, Any]:
        return dated.overrides(self)


class DiagnosesVersion(NamedTuple):
    """A dated version of [diagnoses]: the covered list it names replaces the pack's own."""

    version: str  # the document revision it follows, e.g. "A58364 v32"
    effective: dt.date
    until: dt.date | None
    confirmed: bool
    note: str
    covered_list: str | None = None  # another covered list (mappings/dx/) for this version

    def overrides(self) -> dict[str, Any]:
        return dated.overrides(self)


class DatedSections(NamedTuple):
    """The dated versions of each section, oldest first (docs/input.md, versions in force)."""

    limits: tuple[LimitsVersion, ...]
    coding: tuple[CodingVersion, ...]
    diagnoses: tuple[DiagnosesVersion, ...]


class SourceDocument(NamedTuple):
    """A document a pack follows (an LCD, a billing article) and its latest version on file."""

    id: str
    title: str
    version: str | None
    effective: dt.date | None
    confirmed: bool  # whether id, version and date were confirmed against the contractor's documents
    note: str  # what is not confirmed, when it is not


class Contractor(NamedTuple):
    """The Medicare Administrative Contractor whose documents a pack follows."""

    mac: str
    jurisdictions: tuple[str, ...]


class PriorAuthorization(NamedTuple):
    uses: tuple[Literal["claim", "preauthorization"], ...]
    places_of_service: tuple[str, ...]
    codes: tuple[str, ...]


class CoveredCode(NamedTuple):
    families: tuple[Family, ...]


class CoveredList(NamedTuple):
    codes: dict[str, CoveredCode]
    source: str
    version: str


class Diagnoses(NamedTuple):
    covered_list: str
    max_on_claim: int
    max_pointers_per_line: int


class IdentifierMatch(NamedTuple):
    system: str | None  # any system when not given
    value: str


class CodeMatch(NamedTuple):
    system: str | None  # any system when not given
    code: str


class ClassMatch(NamedTuple):
    type: str  # Coverage.class.type code: plan, group, subplan, ...
    value: str | None  # any value of that type when not given


class SelectionMatch(NamedTuple):
    """One way a Coverage names the pack; every condition the entry gives must hold (at least one
    of the first six is given)."""

    # Text (any case) in the payor's display, Organization name or alias, or identifier value or system.
    payor_contains: str | None
    # Whole words (any case) that must all appear in one of those names: ["noridian", "jf"].
    payor_words: tuple[str, ...]
    # Text (any case) in what the Coverage says of its plan: Coverage.type text and displays,
    # Coverage.class names and values ("Medicare Advantage", "Part C").
    plan_contains: str | None
    payor_identifier: IdentifierMatch | None  # Coverage.payor.identifier or the Organization's
    coverage_type: CodeMatch | None  # a coding of Coverage.type
    coverage_class: ClassMatch | None  # a Coverage.class entry
    # The Coverage is Medicare (Part B or Medicare Advantage) without naming its contractor: the
    # contractor's pack comes from the state of the place of service (mappings/jurisdictions.toml),
    # and this pack is used when that state is not known.
    by_place: bool
    medicare_advantage: bool  # the Coverage is a Medicare Advantage (Part C) plan


class Selection(NamedTuple):
    """When a Coverage chooses this pack: any match entry; among packs that match, the highest
    priority wins, then the name first in alphabetical order."""

    priority: int
    match: tuple[SelectionMatch, ...]
    # A Medicare Advantage plan's site pack: it is applied over the pack of the Medicare contractor of
    # the place of service (CMS-4201-F: MA plans follow the contractor's LCD criteria), with this
    # pack's own settings (its prior authorization list, above all) on top.
    medicare_advantage: bool


class Pack(NamedTuple):
    name: str
    version: str
    title: str
    abstract: bool
    documents: dict[str, Document]
    billing: Billing
    limits: Limits
    diagnoses: Diagnoses
    prior_authorization: PriorAuthorization
    rules: dict[str, RuleSpec]
    selection: Selection | None
    contractor: Contractor | None
    sources: dict[str, SourceDocument]
    coding: CodingRules
    dated: DatedSections
    covered: dict[str, CoveredCode]
    covered_source: str
    covered_version: str
    covered_lists: dict[str, CoveredList]  # the other lists dated diagnoses versions name
    chain: tuple[str, ...]
    # Set by `on(date)`: the date of service and the section versions in force on it.
    in_force_on: dt.date | None = None
    in_force: tuple[InForce, ...] = ()

    def on(self, day: dt.date) -> Pack:
        """The pack as in force on a date of service: each dated section's version for that date
        replaces the undated one, and `in_force` says which versions were used
        (docs/input.md, versions in force). The same pack on the same day is the same pack: kept
        for the next session of that day."""
        found = _ON.get((id(self), day))
        if found is not None and found[0] is self:
            return found[1]
        dated = self._on(day)
        if len(_ON) >= _ON_KEPT:
            _ON.clear()
        _ON[(id(self), day)] = (self, dated)
        return dated

    def _on(self, day: dt.date) -> Pack:
        update: dict[str, Any] = {"in_force_on": day}
        used: list[InForce] = []
        limits = version_on(self.dated.limits, day)
        if limits is not None:
            update["limits"] = self.limits._replace(**limits[0].overrides())
            used.append(InForce("limits", limits[0], limits[1]))
        coding = version_on(self.dated.coding, day)
        if coding is not None:
            update["coding"] = self.coding._replace(**coding[0].overrides())
            used.append(InForce("coding", coding[0], coding[1]))
        diagnoses = version_on(self.dated.diagnoses, day)
        if diagnoses is not None:
            listed = diagnoses[0].covered_list
            if listed is not None:
                chosen = self.covered_lists[listed]
                update |= {"covered": chosen.codes, "covered_source": chosen.source, "covered_version": chosen.version}
            used.append(InForce("diagnoses", diagnoses[0], diagnoses[1]))
        update["in_force"] = tuple(used)
        return self._replace(**update)

    def section_in_force(self, section: str) -> InForce | None:
        return next((used for used in self.in_force if used.section == section), None)

    @property
    def document_titles(self) -> dict[str, str]:
        return {name: document.title for name, document in self.documents.items()}

    def rule(self, rule_id: str) -> RuleSpec:
        return self.rules[rule_id]

    def citation(self, rule_id: str) -> str:
        return self.rules[rule_id].citation.format_map(self.document_titles)

    def citation_links(self, rule_id: str) -> tuple[tuple[str, str], ...]:
        """(title, address) of each document the rule's citation names that has a public address,
        in the order the citation names them."""
        names = [field for _, field, _, _ in Formatter().parse(self.rules[rule_id].citation) if field]
        links: dict[str, str] = {}
        for name in names:
            document = self.documents[name]
            if document.url is not None:
                links.setdefault(document.title, document.url)
        return tuple(links.items())

    def covered_for(self, code: str, region: Region, family: Family) -> bool:
        entry = self.covered.get(code)
        return entry is not None and family in entry.families and region in dx_regions(code)


# Packs as in force on a day, by (the pack's id, day); the pack itself is kept with its answer, so
# an id is never taken for another pack's.
_ON: dict[tuple[int, dt.date], tuple[Pack, Pack]] = {}
_ON_KEPT = 4096

# The runtime class of each model `adapter.rules.table_schemas` validates a pack with.
_RUNTIME: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        Document,
        RuleSpec,
        Billing,
        Limits,
        LimitsVersion,
        CodingRules,
        CodingVersion,
        DiagnosesVersion,
        DatedSections,
        SourceDocument,
        Contractor,
        PriorAuthorization,
        CoveredCode,
        CoveredList,
        Diagnoses,
        IdentifierMatch,
        CodeMatch,
        ClassMatch,
        SelectionMatch,
        Selection,
        Pack,
    )
}


def dx_regions(code: str) -> frozenset[Region]:
    """Region of a facet diagnosis from its region character (docs/input.md, region of a diagnosis)."""
    compact = code.replace(".", "").upper()
    for stem in ("M4781", "M4789", "M481", "M538"):
        if compact.startswith(stem) and len(compact) > len(stem):
            return _REGION_CHARACTER.get(compact[len(stem)], frozenset())
    return frozenset()


_CT: frozenset[Region] = frozenset({"cervical-thoracic"})
_LS: frozenset[Region] = frozenset({"lumbar-sacral"})
_REGION_CHARACTER: dict[str, frozenset[Region]] = {
    "2": _CT,
    "3": _CT,
    "4": _CT,
    "5": _CT | _LS,
    "6": _LS,
    "7": _LS,
    "8": _LS,
}


def _merge(base: dict[str, Any], override: dict[str, Any], *, atomic: bool = False) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if not atomic and isinstance(value, dict) and isinstance(merged.get(key), dict):
            # A document is replaced whole: a pack that names another LCD must not inherit the
            # address of its parent's.
            merged[key] = _merge(merged[key], value, atomic=key == "documents")
        else:
            merged[key] = value
    return merged


# Keys that belong to one pack file and are not inherited by the packs that extend it.
_OWN_KEYS = ("extends", "abstract", "selection")


def _raw_chain(name: str, over: str | None = None) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The pack's layers merged, its own last; with `over`, the pack's own file is laid over the pack
    `over` instead of what it extends (a Medicare Advantage site pack over the contractor's pack)."""
    seen: list[str] = []
    layers: list[dict[str, Any]] = []
    current: str | None = name
    while current is not None:
        if current in seen:
            raise RulePackError(f"Rule pack {name!r}: circular 'extends' ({' -> '.join([*seen, current])}).")
        seen.append(current)
        raw = load_toml(f"packs/{current}.toml")
        layers.append(raw)
        parent = over if over is not None and current == name else raw.get("extends")
        current = str(parent) if parent is not None else None
    merged: dict[str, Any] = {}
    for layer in reversed(layers):
        merged = _merge(merged, {k: v for k, v in layer.items() if k not in _OWN_KEYS})
    merged["abstract"] = bool(layers[0].get("abstract", False))
    if "selection" in layers[0]:
        merged["selection"] = layers[0]["selection"]
    return merged, tuple(seen)


def pack_files() -> dict[str, Path]:
    """Every pack file by name; a site pack replaces a shipped pack of the same name."""
    folders = [mappings_dir() / "packs"]
    overlay = overlay_dir()
    if overlay is not None:
        folders.append(overlay / "packs")
    return {path.stem: path for folder in folders for path in sorted(folder.glob("*.toml"))}


def available_packs() -> list[str]:
    return sorted(name for name in pack_files() if not own_table(name).get("abstract", False))


def own_table(name: str) -> dict[str, Any]:
    """The pack's own file, without what it inherits."""
    return load_toml(f"packs/{name}.toml")


# The modules that validate a pack and hold it: a change to any of them makes every cached pack a miss.
_CODE = (__file__, dated.__file__, str(Path(__file__).with_name("table_schemas.py")))


def read_pack(name: str, rule_ids: Sequence[str], *, over: str | None = None) -> Pack:
    """The pack `name` with everything it extends (or, with `over`, laid over that pack), validated;
    it must define exactly `rule_ids`. Validated once while its files stay the same (see
    `adapter.tablecache`)."""
    if name not in pack_files():
        raise UsageError(f"Unknown payer profile {name!r}; available: {', '.join(available_packs())}.")
    return cached("pack", (name, over or "", *rule_ids), _CODE, lambda: _validated(name, rule_ids, over))


def selectable_names() -> tuple[str, ...]:
    """The packs whose own file has a `[selection]` table (by name); a shared base pack with one is
    an error."""
    files = pack_files()
    return cached("selectable", tuple(f"{name}={path}" for name, path in files.items()), _CODE, _selectable)


def _selectable() -> tuple[tuple[str, ...], list[str]]:
    found: list[str] = []
    files = pack_files()
    for name, path in files.items():
        table = own_table(name)
        if "selection" not in table:
            continue
        if table.get("abstract", False):
            raise RulePackError(f"Rule pack {name!r} ({path}) is a shared base pack: it cannot have a [selection].")
        found.append(name)
    return tuple(found), [f"packs/{name}.toml" for name in files]


def _validated(name: str, rule_ids: Sequence[str], over: str | None) -> tuple[Pack, list[str]]:
    """The pack validated from its files, and the files it was read from."""
    merged, chain = _raw_chain(name, over)
    where = ", ".join(str(pack_files().get(layer, f"packs/{layer}.toml")) for layer in chain)
    if merged.get("abstract"):
        raise UsageError(
            f"{name!r} is a shared base pack, not a payer profile; available: {', '.join(available_packs())}."
        )
    rules = {rule_id: {"id": rule_id, **spec} for rule_id, spec in merged.get("rules", {}).items()}
    unknown = sorted(set(rules) - set(rule_ids))
    if unknown:
        raise RulePackError(f"Rule pack {name!r} ({where}) has unknown rules: {', '.join(unknown)}.")
    covered_path = str(merged.get("diagnoses", {}).get("covered_list", ""))
    covered_raw = load_toml(covered_path) if covered_path else {}
    dated_lists = sorted(
        {
            str(version["covered_list"])
            for version in merged.get("dated", {}).get("diagnoses", [])
            if isinstance(version, dict) and version.get("covered_list")
        }
    )
    # Imported here: pydantic and the models are needed only when a pack is validated.
    from .table_schemas import Pack as PackSchema
    from .table_schemas import ValidationError, problems, to_runtime

    try:
        model = PackSchema.model_validate(
            {
                **{k: v for k, v in merged.items() if k != "rules"},
                "rules": rules,
                "covered": _covered_codes(covered_raw),
                "covered_source": str(covered_raw.get("source", "")),
                "covered_version": str(covered_raw.get("version", "")),
                "covered_lists": {
                    path: {
                        "codes": _covered_codes(raw := load_toml(path)),
                        "source": str(raw.get("source", "")),
                        "version": str(raw.get("version", "")),
                    }
                    for path in dated_lists
                },
                "chain": chain,
            },
            context={"rule_ids": tuple(rule_ids)},
        )
    except ValidationError as exc:
        raise RulePackError(f"Rule pack {name!r} ({where}) is invalid: {problems(exc)}") from None
    files = [f"packs/{layer}.toml" for layer in chain]
    files += [path for path in (covered_path, *dated_lists) if path]
    pack: Pack = to_runtime(model, _RUNTIME)
    return pack, files


def _covered_codes(raw: dict[str, Any]) -> dict[str, Any]:
    return {str(code): entry for code, entry in raw.get("codes", {}).items()}
