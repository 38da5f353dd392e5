"""What a rule function reads (`Context`) and what it yields (`Hit`), and the wording its messages share.

Kept apart from the engine so that the rule modules, the registry that lists them and the engine
that runs the registry import each other in one direction only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from ..coding import Coding, Group
from ..model import Case, ConditionOnset, Diagnosis
from .packs import Pack

# Where the pack came from: --payer, a Coverage matched by a pack's selection, the state of the place of
# service (a Medicare contractor), or the default.
ProfileSource = Literal["option", "coverage", "place", "default"]


class Hit(NamedTuple):
    """One occurrence of a rule: the message and where in the input it comes from; a fix more
    precise than the pack's hint when the rule knows what exactly is missing; and whether the
    adapter already changed the claim so the rule's denial does not happen."""

    message: str
    expressions: tuple[str, ...] = ()
    hint: str | None = None
    avoids_denial: bool = False


@dataclass(slots=True)
class DiagnosisCheck:
    valid: list[Diagnosis] = field(default_factory=list)
    invalid: list[tuple[Diagnosis, str]] = field(default_factory=list)  # (diagnosis, status)
    # The Conditions pain duration is measured from, and the earliest onset among them: computed
    # once, for the pain-duration rule and the Claim's onset supporting information alike.
    supporting: list[ConditionOnset] = field(default_factory=list)
    onset: ConditionOnset | None = None


@dataclass(slots=True)
class Context:
    case: Case
    coding: Coding
    pack: Pack
    profile_source: ProfileSource
    diagnoses: DiagnosisCheck
    memo: dict[int, Any] = field(default_factory=dict)  # per-run results rules share (history groups)
    # Why a default pack or contractor was used (payer-defaulted), None when the record chose it.
    defaulted_reason: str | None = None


RuleFunction = Callable[[Context], Iterable[Hit]]


def who(keys: Iterable[str | None]) -> str:
    """The resources a message is about, named by id (paths alone are ambiguous in NDJSON)."""
    names = list(dict.fromkeys(k for k in keys if k))
    return ", ".join(names[:4]) + (" …" if len(names) > 4 else "")


def levels_text(group: Group) -> str:
    return ", ".join(entry.level.label for entry in group.levels)
