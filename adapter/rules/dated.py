"""Rule versions in force on a date of service (docs/input.md, versions in force).

A contractor revises its LCD and billing article; a claim is judged by the version in force on its
date of service. A pack therefore lists, for a section it versions (`limits`, `coding`,
`diagnoses`), the versions of that section with the date each took effect (and, for all but the
newest, the last date it applied). The list must read as one history: sorted, no overlap, no gap,
the newest open-ended. Each version says which document revision it comes from, whether the rule is
confirmed for that contractor, and why not.

This module knows the dated format and how a date picks a version; which keys a version may set is
said by each section's class in `adapter.rules.packs`, and the checks a version must pass when a
pack is loaded are in `adapter.rules.table_schemas`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from itertools import pairwise
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

Section = Literal["limits", "coding", "diagnoses"]
SECTIONS: tuple[Section, ...] = ("limits", "coding", "diagnoses")


class Dated(Protocol):
    """What the history check reads of a version (the loaded one or the one being validated)."""

    @property
    def version(self) -> str: ...  # the document revision it follows, e.g. "A58364 v32"

    @property
    def effective(self) -> dt.date: ...

    @property
    def until(self) -> dt.date | None: ...


class SectionVersion(Dated, Protocol):
    """One version of a pack section, and the dates it applies from and until (inclusive): what
    every section's version class in `adapter.rules.packs` has besides the keys it sets."""

    @property
    def confirmed(self) -> bool: ...

    @property
    def note(self) -> str: ...  # what is not confirmed, when it is not

    def overrides(self) -> dict[str, Any]: ...


# The fields of a version that date it; the others are the section keys it sets.
DATING = ("version", "effective", "until", "confirmed", "note")


class _Fields(Protocol):
    def _asdict(self) -> dict[str, Any]: ...


def overrides(version: _Fields) -> dict[str, Any]:
    """The section keys a version sets (its own fields, without the dating)."""
    return {name: value for name, value in version._asdict().items() if name not in DATING and value is not None}


V = TypeVar("V", bound=SectionVersion)


def check_history(section: str, versions: Sequence[Dated]) -> None:
    """A section's versions read as one history: by date, no overlap, no gap, the newest open."""
    for earlier, later in pairwise(versions):
        if later.effective <= earlier.effective:
            raise ValueError(f"dated.{section}: versions must be listed oldest first ({later.version})")
        end = earlier.until if earlier.until is not None else later.effective - dt.timedelta(days=1)
        if end >= later.effective:
            raise ValueError(f"dated.{section}: {earlier.version} overlaps {later.version}")
        if end + dt.timedelta(days=1) != later.effective:
            raise ValueError(f"dated.{section}: gap between {earlier.version} (until {end}) and {later.version}")
    if versions and versions[-1].until is not None:
        raise ValueError(f"dated.{section}: the newest version ({versions[-1].version}) must not have an until date")


def version_on(versions: Sequence[V], day: dt.date) -> tuple[V, bool] | None:
    """The version in force on `day`, and whether one is on file for that date: before the oldest
    version took effect, the oldest is used and the answer says it was not in force."""
    if not versions:
        return None
    for version in reversed(versions):
        if version.effective <= day:
            return version, True
    return versions[0], False


class InForce(NamedTuple):
    """Which version of a section a claim was judged by."""

    section: Section
    version: SectionVersion
    on_file: bool  # False: the date of service is before the oldest version on file

    @property
    def confirmed(self) -> bool:
        return self.version.confirmed and self.on_file

    @property
    def label(self) -> str:
        text = f"{self.section} per {self.version.version} (in force from {self.version.effective.isoformat()})"
        if not self.on_file:
            text = f"{self.section} per {self.version.version} (the oldest version on file, in force only from "
            text += f"{self.version.effective.isoformat()})"
        return text + ("" if self.confirmed else ", unconfirmed")

    @property
    def why_unconfirmed(self) -> str:
        if not self.on_file:
            return (
                f"no {self.section} version is on file for this date; {self.version.version}, in force from "
                f"{self.version.effective.isoformat()}, was applied"
            )
        return self.version.note
