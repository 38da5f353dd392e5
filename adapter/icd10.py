"""ICD-10-CM existence and billability, from the `simple-icd-10-cm` package's code set.

Importing `simple_icd_10_cm` parses a 9.7 MB XML file (about 1.5 s), too slow for a one-file
run. The package also ships the complete code list of the release in tabular order (chapter,
block, category, subcategories, 7th-character extensions), where a code is billable exactly
when it is a leaf: the next code in the list does not extend it. We read that list directly —
about 0.8 MB, a few milliseconds — and a test checks our answers against the package's own
`is_valid_item` / `is_leaf` for every code.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .errors import RulePackError

PACKAGE = "simple_icd_10_cm"
_CODE_SHAPE = re.compile(r"^[A-Z][0-9A-Z]{2}(?:\.?[0-9A-Z]{1,4})?$")


# Lookups answered by searching the list before the table is built: a one-file run asks for a
# handful of codes and should not pay for the table (about 25 ms); a bulk run asks thousands.
SEARCHES_BEFORE_TABLE = 32


@dataclass(slots=True)
class CodeSet:
    release: str  # e.g. "April-2026", from the package's file name
    text: str  # the code list, one dotless code a line, framed by newlines
    searches: int = 0
    table: dict[str, bool] | None = None  # dotless code → billable, built once on demand

    def lookup(self, compact: str) -> str:
        if not compact:
            return "unknown"
        if self.table is None:
            if self.searches < SEARCHES_BEFORE_TABLE:
                self.searches += 1
                return self._search(compact)
            self.table = self._build()
        billable = self.table.get(compact)
        if billable is None:
            return "unknown"
        return "billable" if billable else "not-billable"

    def _search(self, compact: str) -> str:
        at = self.text.rfind(f"\n{compact}\n")
        if at < 0:
            return "unknown"
        following_start = at + len(compact) + 2
        following = self.text[following_start : self.text.find("\n", following_start)]
        return "not-billable" if following.startswith(compact) else "billable"

    def _build(self) -> dict[str, bool]:
        # A code is billable exactly when the next code in tabular order does not extend it; a
        # code listed twice keeps its last place, as the search's rfind does.
        codes = self.text.strip("\n").split("\n")
        return {code: not following.startswith(code) for code, following in zip(codes, [*codes[1:], ""], strict=True)}


def normalize(code: str) -> str:
    """Dotted, upper-case form used on the Claim: `m47816` → `M47.816`."""
    compact = code.strip().upper().replace(".", "")
    return compact if len(compact) <= 3 else f"{compact[:3]}.{compact[3:]}"


def dotless(code: str) -> str:
    return code.strip().upper().replace(".", "")


def looks_like_icd10cm(code: str) -> bool:
    return _CODE_SHAPE.match(code.strip().upper()) is not None


@cache
def code_set() -> CodeSet:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RulePackError("The ICD-10-CM code set (package simple-icd-10-cm) is not installed.")
    data_dir = Path(next(iter(spec.submodule_search_locations))) / "data"
    lists = sorted(data_dir.glob("code-list-*.txt"))
    if len(lists) != 1:
        raise RulePackError(f"Expected one ICD-10-CM code list in {data_dir}, found {len(lists)}.")
    text = lists[0].read_text(encoding="utf-8").replace("\r\n", "\n")
    return CodeSet(release=lists[0].stem.removeprefix("code-list-"), text=f"\n{text.strip()}\n")


def status(code: str) -> str:
    """'billable', 'not-billable' (a header code), or 'unknown' (not in the code set)."""
    compact = dotless(code)
    if not looks_like_icd10cm(compact):
        return "unknown"
    return code_set().lookup(compact)
