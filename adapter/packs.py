"""Payer rule packs: versioned data in mappings/packs/, validated when loaded.

A pack names its limits, billing format, covered diagnoses, prior-authorization list and, for
every rule, its version, severity, citation and CARC. A pack may `extends` another; the merged
result is validated as a whole, so a broken pack is a clear error at load time, not a wrong
finding later.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .data import load_toml, mappings_dir, overlay_dir
from .errors import RulePackError, UsageError
from .spine import Region

Severity = Literal["error", "warning", "information"]
IssueType = Literal[
    "business-rule",
    "required",
    "invalid",
    "code-invalid",
    "informational",
    "exception",
    "value",
    "not-supported",
]
Family = Literal["injection", "ablation"]

# Every rule id a pack must define, the adapter's own safety rules included (docs/output.md, rule ids).
RULE_IDS: tuple[str, ...] = (
    "dx-not-covered",
    "dx-invalid",
    "levels-exceed-limit",
    "multiple-regions",
    "levels-unknown",
    "guidance-not-covered",
    "guidance-unknown",
    "frequency-limit",
    "diagnostic-block-prerequisite",
    "block-interval",
    "pain-duration",
    "pain-score-missing",
    "conservative-care",
    "radiculopathy",
    "imaging-line-bundled",
    "prior-auth-required",
    "laterality-unknown",
    "intent-unknown",
    "levels-inferred",
    "input-corrected",
    "claim-data-missing",
    "pos-defaulted",
    "payer-defaulted",
    "procedure-undated",
    "rule-not-applied",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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

    def sessions_allowed(self, category: str) -> int:
        return {
            "diagnostic": self.diagnostic_sessions_per_12_months,
            "therapeutic": self.therapeutic_sessions_per_12_months,
            "rfa": self.rfa_sessions_per_12_months,
        }[category]


class PriorAuthorization(_Strict):
    uses: tuple[Literal["claim", "preauthorization"], ...]
    places_of_service: tuple[str, ...]
    codes: tuple[str, ...]


class CoveredCode(_Strict):
    families: tuple[Family, ...] = Field(min_length=1)


class Diagnoses(_Strict):
    covered_list: str
    max_on_claim: int = Field(ge=1, le=12)
    max_pointers_per_line: int = Field(ge=1, le=4)


class Pack(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    version: str
    title: str
    abstract: bool = False
    documents: dict[str, str]
    billing: Billing
    limits: Limits
    diagnoses: Diagnoses
    prior_authorization: PriorAuthorization
    rules: dict[str, RuleSpec]
    covered: dict[str, CoveredCode]
    covered_source: str
    covered_version: str
    chain: tuple[str, ...]

    @field_validator("rules")
    @classmethod
    def _all_rules(cls, rules: dict[str, RuleSpec]) -> dict[str, RuleSpec]:
        missing = [rule_id for rule_id in RULE_IDS if rule_id not in rules]
        unknown = [rule_id for rule_id in rules if rule_id not in RULE_IDS]
        if missing or unknown:
            raise ValueError(f"rules missing: {missing}; unknown rules: {unknown}")
        return rules

    @model_validator(mode="after")
    def _citations_resolve(self) -> Pack:
        for rule in self.rules.values():
            try:
                rule.citation.format_map(self.documents)
            except (KeyError, ValueError) as exc:
                raise ValueError(f"rule {rule.id}: citation names an unknown document {exc}") from exc
        return self

    def rule(self, rule_id: str) -> RuleSpec:
        return self.rules[rule_id]

    def citation(self, rule_id: str) -> str:
        return self.rules[rule_id].citation.format_map(self.documents)

    def covered_for(self, code: str, region: Region, family: Family) -> bool:
        entry = self.covered.get(code)
        return entry is not None and family in entry.families and region in dx_regions(code)


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


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _raw_chain(name: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    seen: list[str] = []
    layers: list[dict[str, Any]] = []
    current: str | None = name
    while current is not None:
        if current in seen:
            raise RulePackError(f"Rule pack {name!r}: circular 'extends' ({' -> '.join([*seen, current])}).")
        seen.append(current)
        raw = load_toml(f"packs/{current}.toml")
        layers.append(raw)
        parent = raw.get("extends")
        current = str(parent) if parent is not None else None
    merged: dict[str, Any] = {}
    for layer in reversed(layers):
        merged = _merge(merged, {k: v for k, v in layer.items() if k not in ("extends", "abstract")})
    merged["abstract"] = bool(layers[0].get("abstract", False))
    return merged, tuple(seen)


def _pack_files() -> dict[str, Path]:
    folders = [mappings_dir() / "packs"]
    overlay = overlay_dir()
    if overlay is not None:
        folders.append(overlay / "packs")
    return {path.stem: path for folder in folders for path in sorted(folder.glob("*.toml"))}


def available_packs() -> list[str]:
    return sorted(name for name in _pack_files() if not load_toml(f"packs/{name}.toml").get("abstract", False))


@cache
def load_pack(name: str) -> Pack:
    if name not in _pack_files():
        raise UsageError(f"Unknown payer profile {name!r}; available: {', '.join(available_packs())}.")
    merged, chain = _raw_chain(name)
    if merged.get("abstract"):
        raise UsageError(
            f"{name!r} is a shared base pack, not a payer profile; available: {', '.join(available_packs())}."
        )
    rules = {rule_id: {"id": rule_id, **spec} for rule_id, spec in merged.get("rules", {}).items()}
    unknown = sorted(set(rules) - set(RULE_IDS))
    if unknown:
        raise RulePackError(f"Rule pack {name!r} ({_pack_files()[name]}) has unknown rules: {', '.join(unknown)}.")
    covered_path = merged.get("diagnoses", {}).get("covered_list", "")
    covered_raw = load_toml(str(covered_path)) if covered_path else {}
    try:
        return Pack.model_validate(
            {
                **{k: v for k, v in merged.items() if k != "rules"},
                "rules": rules,
                "covered": {str(code): entry for code, entry in covered_raw.get("codes", {}).items()},
                "covered_source": str(covered_raw.get("source", "")),
                "covered_version": str(covered_raw.get("version", "")),
                "chain": chain,
            }
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()[:10]
        )
        raise RulePackError(f"Rule pack {name!r} ({_pack_files()[name]}) is invalid: {problems}") from None
