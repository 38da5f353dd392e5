"""Medicare A/B contractor jurisdictions: the state of the place of service → the contractor's
jurisdiction and pack (mappings/jurisdictions.toml; docs/input.md, Medicare contractor)."""

from __future__ import annotations

import re
from functools import cache

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import RulePackError
from ..tables import load_toml

_TABLE = "jurisdictions.toml"
_NOT_LETTERS = re.compile(r"[^A-Z]")


class Jurisdiction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(pattern=r"^J[0-9A-Z]{1,2}$")
    mac: str = Field(min_length=2)
    pack: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    states: tuple[str, ...] = Field(min_length=1)


class JurisdictionTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

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

    @property
    def by_state(self) -> dict[str, Jurisdiction]:
        return {state: j for j in self.jurisdictions.values() for state in j.states}

    def state_code(self, state: str | None, country: str | None = None) -> str | None:
        """The two-letter code of an Address.state (a code or a name, any case); None when the
        address is outside the United States and its territories, or the state is not one."""
        codes = self.by_state
        if country is not None:
            nation = _NOT_LETTERS.sub("", country.upper())
            if nation in self.countries.get("territories", ()):
                return nation  # a territory written as the country (PR, GU, ...)
            if nation and nation not in self.countries.get("united_states", ()):
                return None
        if state is None:
            return None
        letters = _NOT_LETTERS.sub("", state.upper())
        if letters in codes:
            return letters
        return self.state_names.get(letters)


@cache
def jurisdiction_table() -> JurisdictionTable:
    raw = load_toml(_TABLE)
    try:
        return JurisdictionTable.model_validate(
            {
                **raw,
                "jurisdictions": {
                    code: {"code": code, **entry} for code, entry in dict(raw.get("jurisdictions", {})).items()
                },
            }
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()[:10]
        )
        raise RulePackError(f"mappings/{_TABLE} is invalid: {problems}") from None


def jurisdiction_of(state: str | None, country: str | None = None) -> tuple[str | None, Jurisdiction | None]:
    """The state code and its jurisdiction, when the address names a state the table knows."""
    table = jurisdiction_table()
    code = table.state_code(state, country)
    return code, table.by_state.get(code) if code is not None else None
