"""The checks a pack and the jurisdiction table pass when they are loaded, as pydantic models.

Loading validates the TOML with these models, then turns the result into the immutable classes
the rules read (`adapter.rules.packs`, `adapter.rules.dated`, `adapter.rules.jurisdictions`), which
`adapter.tablecache` keeps until a source file changes: pydantic and these models are imported
only when a table is validated, not on every run. Each model here has a runtime class of the same
name and fields; `to_runtime` maps one onto the other.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..model import Family
from .dated import SECTIONS, check_history
from .terms import IssueType, Severity

__all__ = ["JurisdictionTable", "Pack", "ValidationError", "problems", "to_runtime"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- dated sections


class SectionVersion(_Strict):
    version: str = Field(min_length=3)
    effective: dt.date
    until: dt.date | None = None
    confirmed: StrictBool
    note: str = ""

    @model_validator(mode="after")
    def _dates_in_order(self) -> SectionVersion:
        if self.until is not None and self.until < self.effective:
            raise ValueError(f"{self.version}: until {self.until} is before effective {self.effective}")
        if not self.confirmed and not self.note:
            raise ValueError(f"{self.version}: an unconfirmed version needs a note saying what is not confirmed")
        return self


class LimitsVersion(SectionVersion):
    """A dated version of [limits]: the keys it sets override the pack's undated limits."""

    levels_per_region: int | None = Field(default=None, ge=1)
    regions_per_session: int | None = Field(default=None, ge=1)
    diagnostic_sessions_per_12_months: int | None = Field(default=None, ge=1)
    therapeutic_sessions_per_12_months: int | None = Field(default=None, ge=1)
    rfa_sessions_per_12_months: int | None = Field(default=None, ge=1)
    min_pain_months: int | None = Field(default=None, ge=0)
    min_conservative_care_days: int | None = Field(default=None, ge=0)
    min_block_interval_days: int | None = Field(default=None, ge=0)
    min_relief_percent: float | None = Field(default=None, ge=0, le=100)
    required_diagnostic_blocks: int | None = Field(default=None, ge=0)
    covered_guidance: tuple[str, ...] | None = None


class CodingVersion(SectionVersion):
    thoraco_lumbar: StrictBool | None = None


class DiagnosesVersion(SectionVersion):
    covered_list: str | None = None  # another covered list (mappings/dx/) for this version


class DatedSections(_Strict):
    """The dated versions of each section, oldest first (docs/input.md, versions in force)."""

    limits: tuple[LimitsVersion, ...] = ()
    coding: tuple[CodingVersion, ...] = ()
    diagnoses: tuple[DiagnosesVersion, ...] = ()

    @model_validator(mode="after")
    def _histories(self) -> DatedSections:
        for section in SECTIONS:
            check_history(section, getattr(self, section))
        return self


# --------------------------------------------------------------------------- packs


class Document(_Strict):
    """A pack writes a document as its title alone, or as a table `{ title = "…", url = "https://…" }`."""

    title: str = Field(min_length=3)
    url: str | None = Field(default=None, pattern=r"^https://[^\s]+$")

    @model_validator(mode="before")
    @classmethod
    def _title_alone(cls, value: Any) -> Any:
        return {"title": value} if isinstance(value, str) else value


class RuleSpec(_Strict):
    id: str
    version: int = Field(ge=1)
    severity: Severity
    issue: IssueType
    title: str = Field(min_length=3)
    citation: str = Field(min_length=3)
    carc: str | None = Field(default=None, pattern=r"^[A-Z]?\d{1,3}$")
    hint: str = Field(min_length=3)


class Billing(_Strict):
    bilateral: Literal["modifier-50", "rt-lt"]
    kx_on_diagnostic_injections: bool


class Limits(_Strict):
    levels_per_region: int = Field(ge=1)
    regions_per_session: int = Field(ge=1)
    diagnostic_sessions_per_12_months: int = Field(ge=1)
    therapeutic_sessions_per_12_months: int = Field(ge=1)
    rfa_sessions_per_12_months: int = Field(ge=1)
    min_pain_months: int = Field(ge=0)
    min_conservative_care_days: int = Field(ge=0)
    min_block_interval_days: int = Field(ge=0)
    min_relief_percent: float = Field(ge=0, le=100)
    required_diagnostic_blocks: int = Field(ge=0)
    covered_guidance: tuple[str, ...]


class CodingRules(_Strict):
    # T12-L1 with L1-L2 in one session is one lumbar session (docs/coding.md, thoraco-lumbar rule).
    thoraco_lumbar: StrictBool = True


class SourceDocument(_Strict):
    id: str = Field(pattern=r"^[LA]\d{5}$")
    title: str = Field(min_length=3)
    version: str | None = None
    effective: dt.date | None = None
    confirmed: StrictBool  # whether id, version and date were confirmed against the contractor's documents
    note: str = ""

    @model_validator(mode="after")
    def _says_why(self) -> SourceDocument:
        if not self.confirmed and not self.note:
            raise ValueError(f"{self.id}: an unconfirmed document needs a note saying what is not confirmed")
        return self


class Contractor(_Strict):
    mac: str = Field(min_length=2)
    jurisdictions: tuple[str, ...] = Field(min_length=1)


class PriorAuthorization(_Strict):
    uses: tuple[Literal["claim", "preauthorization"], ...]
    places_of_service: tuple[str, ...]
    codes: tuple[str, ...]


class CoveredCode(_Strict):
    families: tuple[Family, ...] = Field(min_length=1)


class CoveredList(_Strict):
    codes: dict[str, CoveredCode]
    source: str
    version: str


class Diagnoses(_Strict):
    covered_list: str
    max_on_claim: int = Field(ge=1, le=12)
    max_pointers_per_line: int = Field(ge=1, le=4)


class IdentifierMatch(_Strict):
    system: str | None = None
    value: str = Field(min_length=1)


class CodeMatch(_Strict):
    system: str | None = None
    code: str = Field(min_length=1)


class ClassMatch(_Strict):
    type: str = Field(min_length=1)
    value: str | None = Field(default=None, min_length=1)


class SelectionMatch(_Strict):
    payor_contains: str | None = Field(default=None, min_length=1)
    payor_words: tuple[str, ...] = ()
    plan_contains: str | None = Field(default=None, min_length=1)
    payor_identifier: IdentifierMatch | None = None
    coverage_type: CodeMatch | None = None
    coverage_class: ClassMatch | None = None
    by_place: bool = False
    medicare_advantage: bool = False

    @model_validator(mode="after")
    def _says_something(self) -> SelectionMatch:
        conditions = (
            self.payor_contains,
            self.payor_words,
            self.plan_contains,
            self.payor_identifier,
            self.coverage_type,
            self.coverage_class,
        )
        if not any(conditions):
            raise ValueError(
                "a match entry needs payor_contains, payor_words, plan_contains, payor_identifier, coverage_type "
                "or coverage_class"
            )
        return self


class Selection(_Strict):
    priority: int = 0
    match: tuple[SelectionMatch, ...] = Field(min_length=1)
    medicare_advantage: bool = False


class Pack(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    version: str
    title: str
    abstract: bool = False
    documents: dict[str, Document]
    billing: Billing
    limits: Limits
    diagnoses: Diagnoses
    prior_authorization: PriorAuthorization
    rules: dict[str, RuleSpec]
    selection: Selection | None = None
    contractor: Contractor | None = None
    sources: dict[str, SourceDocument] = {}
    coding: CodingRules = CodingRules()
    dated: DatedSections = DatedSections()
    covered: dict[str, CoveredCode]
    covered_source: str
    covered_version: str
    covered_lists: dict[str, CoveredList] = {}
    chain: tuple[str, ...]

    @field_validator("rules")
    @classmethod
    def _all_rules(cls, rules: dict[str, RuleSpec], info: ValidationInfo) -> dict[str, RuleSpec]:
        # The ids come from the rule registry, which the caller passes in: this module is below it.
        context = info.context or {}
        if "rule_ids" not in context:
            raise TypeError("a Pack is validated against the rule ids: pass context={'rule_ids': ...}")
        rule_ids: Sequence[str] = context["rule_ids"]
        missing = [rule_id for rule_id in rule_ids if rule_id not in rules]
        unknown = [rule_id for rule_id in rules if rule_id not in rule_ids]
        if missing or unknown:
            raise ValueError(f"rules missing: {missing}; unknown rules: {unknown}")
        return rules

    @model_validator(mode="after")
    def _citations_resolve(self) -> Pack:
        titles = {name: document.title for name, document in self.documents.items()}
        for rule in self.rules.values():
            try:
                rule.citation.format_map(titles)
            except (KeyError, ValueError) as exc:
                raise ValueError(f"rule {rule.id}: citation names an unknown document {exc}") from exc
        return self

    @model_validator(mode="after")
    def _dated_lists_loaded(self) -> Pack:
        for version in self.dated.diagnoses:
            if version.covered_list is not None and version.covered_list not in self.covered_lists:
                raise ValueError(f"dated.diagnoses {version.version}: covered list {version.covered_list} not loaded")
        return self


# --------------------------------------------------------------------------- jurisdictions


class Jurisdiction(_Strict):
    code: str = Field(pattern=r"^J[0-9A-Z]{1,2}$")
    mac: str = Field(min_length=2)
    pack: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    states: tuple[str, ...] = Field(min_length=1)


class JurisdictionTable(_Strict):
    version: str
    source: str = Field(min_length=3)
    jurisdictions: dict[str, Jurisdiction]
    state_names: dict[str, str]
    countries: dict[str, tuple[str, ...]]

    @model_validator(mode="after")
    def _each_state_once(self) -> JurisdictionTable:
        seen: dict[str, str] = {}
        for code, jurisdiction in self.jurisdictions.items():
            if jurisdiction.code != code:
                raise ValueError(f"jurisdictions.{code}: its code says {jurisdiction.code}")
            for state in jurisdiction.states:
                if not re.fullmatch(r"[A-Z]{2}", state):
                    raise ValueError(f"jurisdictions.{code}: {state!r} is not a two-letter state code")
                if state in seen:
                    raise ValueError(f"state {state} is in both {seen[state]} and {code}")
                seen[state] = code
        unknown = sorted({value for value in self.state_names.values() if value not in seen})
        if unknown:
            raise ValueError(f"state_names name states no jurisdiction lists: {', '.join(unknown)}")
        return self


# --------------------------------------------------------------------------- to the runtime classes


def problems(error: ValidationError) -> str:
    """The first ten problems of a validation error, each with where it is."""
    return "; ".join(f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors()[:10])


def to_runtime(value: Any, classes: Mapping[str, type]) -> Any:
    """A validated model as the runtime class of the same name (`classes`), fields as they were
    validated; equal immutable values are shared, so a cached pack stores each once."""
    shared: dict[Any, Any] = {}

    def convert(item: Any) -> Any:
        if isinstance(item, BaseModel):
            runtime = classes[type(item).__name__]
            built = runtime(**{name: convert(getattr(item, name)) for name in type(item).model_fields})
            try:
                # Keyed by class too: named tuples of two classes with the same values are equal.
                return shared.setdefault((runtime, built), built)
            except TypeError:  # a value with a dict inside is not hashable: kept as it is
                return built
        if isinstance(item, tuple):
            return tuple(convert(part) for part in item)
        if isinstance(item, dict):
            return {key: convert(part) for key, part in item.items()}
        return item

    return convert(value)
