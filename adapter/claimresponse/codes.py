"""The words of the codes a payer answers with (mappings/remittance.toml): CARC and RARC
descriptions, what to do about each denial and the rule ids that check the same problem, and the
X12 306 review actions."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Literal

from ..errors import RulePackError
from ..tables import load_toml

CarcKind = Literal["denial", "adjustment", "patient"]


@dataclass(frozen=True, slots=True)
class Carc:
    code: str
    words: str
    kind: CarcKind
    action: str
    rules: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RemittanceCodes:
    version: str
    review_actions: dict[str, str]
    carc: dict[str, Carc]
    rarc: dict[str, str]


@cache
def remittance_codes() -> RemittanceCodes:
    raw = load_toml("remittance.toml")
    try:
        carc = {
            str(code): Carc(
                code=str(code),
                words=str(entry["words"]),
                kind=entry["kind"],
                action=str(entry["action"]),
                rules=tuple(str(rule) for rule in entry.get("rules", [])),
            )
            for code, entry in raw["carc"].items()
        }
        return RemittanceCodes(
            version=str(raw["version"]),
            review_actions={str(k): str(v) for k, v in raw["review_actions"].items()},
            carc=carc,
            rarc={str(code): str(entry["words"]) for code, entry in raw["rarc"].items()},
        )
    except (KeyError, TypeError) as exc:
        raise RulePackError(f"remittance.toml is malformed: missing {exc}") from exc
