"""What makes a facet procedure (docs/input.md, what makes a facet procedure), and the code tables
that say it."""

from __future__ import annotations

from functools import cache
from typing import Any, NamedTuple

from ..fhir.ingest import Res
from ..fhir.systems import CPT_LIKE_SYSTEMS, SNOMED
from ..fhir.values import codings, concept_words, note_texts
from ..tables import load_toml
from .wording import says_facet


class CodeTables(NamedTuple):
    facet_codes: dict[str, dict[str, Any]]
    imaging: dict[str, str]
    snomed_procedures: dict[str, dict[str, Any]]


@cache
def code_tables() -> CodeTables:
    raw = load_toml("cpt.toml")
    return CodeTables(
        facet_codes={str(k): dict(v) for k, v in raw["codes"].items()},
        imaging={str(k): str(v) for k, v in raw["imaging"].items()},
        snomed_procedures={str(k): dict(v) for k, v in raw.get("snomed_procedures", {}).items()},
    )


def facet_cpt(concept: Any, tables: CodeTables) -> list[tuple[int, str]]:
    return [
        (i, code)
        for i, system, code, _ in codings(concept)
        if system in CPT_LIKE_SYSTEMS and code is not None and code.upper() in tables.facet_codes
    ]


def is_facet(res: Res, tables: CodeTables) -> bool:
    code = res.data.get("code")
    if facet_cpt(code, tables):
        return True
    if any(system in CPT_LIKE_SYSTEMS and _other_service(value, tables) for _, system, value, _ in codings(code)):
        # Coded as image guidance (77003...), physical medicine, chiropractic or an E/M visit: not a
        # facet procedure, whatever its text says ("fluoroscopic guidance for facet injection").
        # Other codes (64999 unlisted) leave it to the words (docs/input.md, what makes a facet procedure).
        return False
    if any(system == SNOMED and value in tables.snomed_procedures for _, system, value, _ in codings(code)):
        return True
    if says_facet(concept_words(code)):
        return True
    return any(says_facet(text) for _, text in note_texts(res.data))


def _other_service(code: str | None, tables: CodeTables) -> bool:
    if not code:
        return False
    if code in tables.imaging:
        return True
    return code.isdigit() and ("97010" <= code <= "97799" or "98940" <= code <= "98943" or "99202" <= code <= "99499")
