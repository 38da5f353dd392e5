"""Where a finding's input elements are, in a coder's words: "Procedure/mbb-l4l5 · body site 1"
for the FHIRPath `Bundle.entry[12].resource.bodySite[0]` (docs/output.md, findings).

A FHIRPath starts at the input's top (`Bundle.entry[i].resource…` for a Bundle, the resource type
for a single resource or an NDJSON line). The resource behind it is the input resource whose own
path is the longest prefix of it; in NDJSON every line's path is its type, so the resources the
finding's message names (by `Type/id`, as every message does) decide among them. The FHIRPath
itself is kept for engineers (the OperationOutcome's `expression`, the review's disclosure).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from ..fhir.ingest import Res, ResourceIndex

# Only a finding that points at an element needs them: compiled on first use (re keeps them).
_STEP = r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?"
_CAMEL = r"(?<=[a-z0-9])(?=[A-Z])"
# Element names a coder reads better in other words; the rest are split at their capitals.
_WORDS = {
    "performedDateTime": "date performed",
    "performedPeriod": "period performed",
    "onsetDateTime": "onset date",
    "onsetPeriod": "onset period",
    "recordedDate": "date recorded",
    "effectiveDateTime": "date",
    "valueQuantity": "value",
    "valueCodeableConcept": "value",
    "valueString": "value",
    "reasonReference": "reason",
    "reasonCode": "reason code",
    "bodySite": "body site",
    "partOf": "part of",
    "payor": "payer",
}


class Location(NamedTuple):
    """One input element behind a finding: the resource (as `Type/id`, or its type and place when
    it has no id), the element in words ("" for the whole resource), and the FHIRPath."""

    resource: str
    element: str
    expression: str

    @property
    def text(self) -> str:
        return f"{self.resource} · {self.element}" if self.element else self.resource


_MEMO = "locator"


def locator_of(index: ResourceIndex) -> Locator:
    """The input's locator, built once per input (every session of a patient asks for it)."""
    found = index.memo.get(_MEMO)
    if not isinstance(found, Locator):
        found = index.memo[_MEMO] = Locator(index)
    return found


class Locator:
    """Finds the input resource behind a FHIRPath of one input."""

    def __init__(self, index: ResourceIndex) -> None:
        self._by_path: dict[str, list[Res]] = {}
        stack = list(index.resources)
        while stack:
            res = stack.pop()
            self._by_path.setdefault(res.path, []).append(res)
            stack.extend(res.contained.values())

    def locate(self, expression: str, message: str = "") -> tuple[Location, ...]:
        """The element's locations: one, or one per resource the message names when the path alone
        does not tell the resources apart (NDJSON)."""
        for end in _prefix_ends(expression):
            candidates = self._by_path.get(expression[:end])
            if not candidates:
                continue
            element = element_words(expression[end:])
            if len(candidates) == 1:
                return (Location(candidates[0].label(), element, expression),)
            named = [res for res in candidates if res.id and _names(message, res.label())]
            if named:
                named.sort(key=lambda res: message.find(res.label()))
                return tuple(Location(res.label(), element, expression) for res in named)
            return (Location(candidates[0].type, element, expression),)
        return self.unlocated(expression)

    @staticmethod
    def unlocated(expression: str) -> tuple[Location, ...]:
        """Without the input: the expression's first step and the element in words."""
        head, _, rest = expression.partition(".")
        return (Location(head, element_words(rest), expression),)


def _prefix_ends(expression: str) -> list[int]:
    """Where a resource's path may end inside the expression, longest first."""
    ends = [len(expression)]
    ends.extend(i for i in range(len(expression) - 1, 0, -1) if expression[i] in ".[")
    return ends


def _names(message: str, label: str) -> bool:
    r"""Whether the message names the label as a whole word: not inside a longer id or reference
    (the regex `(?<![\w/-])label(?![\w/-])`, without compiling one pattern per resource)."""
    start = message.find(label)
    while start >= 0:
        end = start + len(label)
        if (start == 0 or not _joins(message[start - 1])) and (end == len(message) or not _joins(message[end])):
            return True
        start = message.find(label, start + 1)
    return False


def _joins(character: str) -> bool:
    # `\w` of a str pattern is a Unicode alphanumeric or the underscore.
    return character.isalnum() or character in "_/-"


def element_words(path: str) -> str:
    """`.bodySite[0].coding[1]` → "body site 1 › coding 2": element names in words, positions
    counted from 1 as a person counts."""
    words: list[str] = []
    for name, position in re.findall(_STEP, path):
        if name == "text" and words and not position:
            words[-1] += " text"  # "code text", "note 1 text"
            continue
        word = _WORDS.get(name) or re.sub(_CAMEL, " ", name).lower()
        words.append(f"{word} {int(position) + 1}" if position else word)
    return " › ".join(words)
