"""The site's X12 settings: who submits and who receives, delimiters, test or production, where
control numbers are kept (docs/output.md, X12 837P).

They come from a small TOML file (`--x12-config FILE`, else `FACET_ADAPTER_X12_CONFIG`), validated
as a whole when loaded; the command line's options override single values.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ...errors import UsageError

CONFIG_ENV = "FACET_ADAPTER_X12_CONFIG"
NAIC_PAYER_CODE = "urn:oid:2.16.840.1.113883.6.300"
# SBR09 claim filing indicator codes of 005010X222A1.
FilingIndicator = Literal[
    "11", "12", "13", "14", "15", "16", "17", "AM", "BL", "CH", "CI", "DS", "FI", "HM", "LM", "MA", "MB", "MC",
    "OF", "TV", "VA", "WC", "ZZ",
]  # fmt: skip
# ISA05 / ISA07 interchange id qualifiers.
IdQualifier = Literal["01", "14", "20", "27", "28", "29", "30", "33", "ZZ"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Trader(_Strict):
    """The submitter (1000A) or the receiver (1000B), and its interchange address."""

    name: str = Field(min_length=1, max_length=60)
    id: str = Field(min_length=2, max_length=80, pattern=r"^[A-Za-z0-9 .-]+$")  # NM109
    interchange_id_qualifier: IdQualifier = "ZZ"  # ISA05 / ISA07
    interchange_id: str | None = Field(default=None, min_length=2, max_length=15, pattern=r"^[A-Za-z0-9 .-]+$")

    @property
    def interchange(self) -> str:
        """ISA06 / ISA08, also GS02 / GS03."""
        return self.interchange_id or self.id

    @model_validator(mode="after")
    def _fits_the_interchange(self) -> Trader:
        if len(self.interchange) > 15:
            raise ValueError("id is longer than 15 characters: give an interchange_id of at most 15 for ISA and GS")
        return self


class Submitter(Trader):
    contact_name: str = Field(min_length=1, max_length=60)  # PER02
    phone: str | None = Field(default=None, pattern=r"^\d{10,15}$")  # PER TE, digits only
    email: str | None = Field(default=None, min_length=3, max_length=256)  # PER EM

    @model_validator(mode="after")
    def _reachable(self) -> Submitter:
        if self.phone is None and self.email is None:
            raise ValueError("the submitter contact needs a phone or an email (1000A PER)")
        return self


class Delimiters(_Strict):
    element: str = "*"
    component: str = ":"
    repetition: str = "^"
    segment: str = "~"

    @model_validator(mode="after")
    def _usable(self) -> Delimiters:
        chosen = [self.element, self.component, self.repetition, self.segment]
        for char in chosen:
            if len(char) != 1 or char.isalnum() or char.isspace() or not char.isascii() or not char.isprintable():
                raise ValueError(
                    f"delimiter {char!r} must be one printable ASCII character, not a letter, digit or space"
                )
        if len(set(chosen)) != 4:
            raise ValueError("the four delimiters must differ")
        return self

    @property
    def all(self) -> str:
        return self.element + self.component + self.repetition + self.segment


def _medicare_part_b() -> dict[str, FilingIndicator]:
    return {"medicare": "MB"}


class ClaimSettings(_Strict):
    accept_assignment: Literal["A", "B", "C"] = "A"  # CLM07
    filing_indicator: FilingIndicator = "CI"  # SBR09 when no pack below matches
    # SBR09 by rule pack: a claim coded with a pack that is or extends the key gets the code.
    filing_indicator_by_pack: dict[str, FilingIndicator] = Field(default_factory=_medicare_part_b)
    # Identifier systems of the payer Organization that carry the payer id (2010BB NM109), in order.
    payer_id_systems: tuple[str, ...] = (NAIC_PAYER_CODE,)


class X12Settings(_Strict):
    usage_indicator: Literal["T", "P"] = "T"  # ISA15
    acknowledgment_requested: bool = False  # ISA14
    submitter: Submitter
    receiver: Trader
    delimiters: Delimiters = Delimiters()
    segment_newline: bool = True  # a line break after each segment terminator (for people reading it)
    claim: ClaimSettings = ClaimSettings()
    state_file: Path | None = None  # control numbers and claims sent; relative to the configuration file

    @field_validator("state_file")
    @classmethod
    def _a_file(cls, value: Path | None) -> Path | None:
        if value is not None and str(value).strip() == "":
            raise ValueError("state_file is empty")
        return value

    def filing_indicator(self, pack_chain: tuple[str, ...]) -> FilingIndicator:
        for pack in pack_chain:
            if pack in self.claim.filing_indicator_by_pack:
                return self.claim.filing_indicator_by_pack[pack]
        return self.claim.filing_indicator


@dataclass(frozen=True, slots=True)
class Overrides:
    """Command-line values that replace the configuration's."""

    usage_indicator: str | None = None
    submitter_id: str | None = None
    receiver_id: str | None = None
    delimiters: str | None = None  # four characters: element, component, repetition, segment
    state_file: Path | None = None

    def apply(self, raw: dict[str, Any]) -> dict[str, Any]:
        merged = {key: dict(value) if isinstance(value, dict) else value for key, value in raw.items()}
        if self.usage_indicator is not None:
            merged["usage_indicator"] = self.usage_indicator
        for name, value in (("submitter", self.submitter_id), ("receiver", self.receiver_id)):
            if value is not None:
                section = merged.setdefault(name, {})
                if isinstance(section, dict):
                    section["id"] = value
                    section.pop("interchange_id", None)
        if self.delimiters is not None:
            if len(self.delimiters) != 4:
                raise UsageError("--delimiters takes four characters: element, component, repetition, segment.")
            merged["delimiters"] = dict(
                zip(("element", "component", "repetition", "segment"), self.delimiters, strict=True)
            )
        if self.state_file is not None:
            merged["state_file"] = str(self.state_file)
        return merged


def config_path(option: str | Path | None) -> Path | None:
    value = option or os.environ.get(CONFIG_ENV)
    return Path(value) if value else None


def load_settings(path: Path | None, overrides: Overrides = Overrides()) -> X12Settings:
    """The settings of the configuration file (if any) with the overrides, validated; a relative
    `state_file` is relative to the configuration file's folder."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with path.open("rb") as handle:
                raw = tomllib.load(handle)
        except FileNotFoundError:
            raise UsageError(f"X12 configuration {path} does not exist.") from None
        except OSError as exc:
            raise UsageError(f"X12 configuration {path} cannot be read ({exc.strerror}).") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"X12 configuration {path} is not valid TOML: {exc}") from None
    try:
        settings = X12Settings.model_validate(overrides.apply(raw))
    except ValidationError as exc:
        where = f"X12 configuration {path}" if path else f"The X12 837P settings (no --x12-config, no {CONFIG_ENV})"
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()[:10]
        )
        raise UsageError(f"{where} are invalid: {problems}") from None
    state = settings.state_file
    if state is not None and not state.is_absolute() and path is not None and overrides.state_file is None:
        settings = settings.model_copy(update={"state_file": path.parent / state})
    return settings
