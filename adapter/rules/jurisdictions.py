"""Medicare A/B contractor jurisdictions: the state of the place of service → the contractor's
jurisdiction and pack (mappings/jurisdictions.toml; docs/input.md, Medicare contractor).

The table is validated by `adapter.rules.table_schemas.JurisdictionTable` when it changed, and
kept validated between runs (`adapter.tablecache`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

from ..errors import RulePackError
from ..tablecache import cached
from ..tables import load_toml

_TABLE = "jurisdictions.toml"
_NOT_LETTERS = re.compile(r"[^A-Z]")
_CODE = (__file__, str(Path(__file__).with_name("table_schemas.py")))


@dataclass(frozen=True, slots=True, kw_only=True)
class Jurisdiction:
    code: str
    mac: str
    pack: str
    states: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class JurisdictionTable:
    version: str
    source: str
    jurisdictions: dict[str, Jurisdiction]
    state_names: dict[str, str]
    countries: dict[str, tuple[str, ...]]
    # Each state's jurisdiction, built with the table: it is asked for every session a Medicare
    # Coverage chooses by place.
    by_state: dict[str, Jurisdiction] = field(default_factory=dict)

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
    return cached("jurisdictions", (), _CODE, _validated)


def _validated() -> tuple[JurisdictionTable, list[str]]:
    # Imported here: pydantic and the models are needed only when the table is validated.
    from .table_schemas import JurisdictionTable as TableSchema
    from .table_schemas import ValidationError, problems, to_runtime

    raw = load_toml(_TABLE)
    try:
        model = TableSchema.model_validate(
            {
                **raw,
                "jurisdictions": {
                    code: {"code": code, **entry} for code, entry in dict(raw.get("jurisdictions", {})).items()
                },
            }
        )
    except ValidationError as exc:
        raise RulePackError(f"mappings/{_TABLE} is invalid: {problems(exc)}") from None
    table: JurisdictionTable = to_runtime(model, {"Jurisdiction": Jurisdiction, "JurisdictionTable": JurisdictionTable})
    by_state = {state: j for j in table.jurisdictions.values() for state in j.states}
    return replace(table, by_state=by_state), [_TABLE]


def jurisdiction_of(state: str | None, country: str | None = None) -> tuple[str | None, Jurisdiction | None]:
    """The state code and its jurisdiction, when the address names a state the table knows."""
    table = jurisdiction_table()
    code = table.state_code(state, country)
    return code, table.by_state.get(code) if code is not None else None
