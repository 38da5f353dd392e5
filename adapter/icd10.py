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


@dataclass(frozen=True, slots=True)
class CodeSet:
    release: str  # e.g. "April-2026", from the package's file name
    text: str  # the code list, one dotless code a line, framed by newlines

    def lookup(self, compact: str) -> str:
        # A handful of codes per claim: a substring search of the list beats building a set of
        # 98,000 codes at every start.
        at = self.text.rfind(f"\n{compact}\n")
        if at < 0 or not compact:
            return "unknown"
        following_start = at + len(compact) + 2
        following = self.text[following_start : self.text.find("\n", following_start)]
        return "not-billable" if following.startswith(compact) else "billable"


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
