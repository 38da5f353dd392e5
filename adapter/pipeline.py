"""The one library call behind every shell: bytes in → read → code → check → (write).

The command line, the web service and the bulk runner all call `process`; they differ only in
how they get the bytes and where the result goes.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .code import Coding, code_session
from .ingest import DEFAULT_MAX_INPUT_BYTES, ResourceIndex, parse_bytes
from .model import Case, Use
from .outcome import findings_outcome
from .read import ReadOptions, read_case, validate_pos
from .rules.engine import DiagnosisCheck, ProfileSource, check_case
from .rules.findings import Finding, holds_claim
from .rules.packs import Pack
from .rules.selection import choose_pack, coverage_facts, load_pack
from .write import write_bundle

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Options:
    payer: str | None = None
    use: Use = "claim"
    pos: str | None = None
    prior_auth: str | None = None
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES
    now: dt.datetime | None = None
    focus: str | None = None  # claim this procedure's session instead of the latest


@dataclass
class Result:
    index: ResourceIndex
    case: Case
    coding: Coding
    pack: Pack
    profile_source: ProfileSource
    findings: list[Finding]
    diagnoses: DiagnosisCheck
    now: dt.datetime | None

    @property
    def held(self) -> bool:
        return holds_claim(self.findings)

    @property
    def exit_code(self) -> int:
        return 1 if self.held else 0

    @cached_property
    def bundle(self) -> dict[str, Any]:
        return write_bundle(self.index, self.case, self.coding, self.findings, self.diagnoses, self.pack, now=self.now)

    def outcome(self) -> dict[str, Any]:
        return findings_outcome(self.findings, subject=self.case.session.procedures[0].key)


def validate_options(options: Options) -> None:
    """Usage errors first, so a bad option is reported before the input is read."""
    if options.pos is not None:
        validate_pos(options.pos)
    if options.payer is not None:
        load_pack(options.payer)
    if options.use not in ("claim", "preauthorization"):
        from .errors import UsageError

        raise UsageError(f"--use must be claim or preauthorization, not {options.use!r}.")


def process(raw: bytes, options: Options, *, name: str = "input") -> Result:
    validate_options(options)
    index = parse_bytes(raw, name=name, max_bytes=options.max_input_bytes)
    return process_index(index, options)


def process_index(index: ResourceIndex, options: Options) -> Result:
    validate_options(options)
    case = read_case(
        index, ReadOptions(use=options.use, pos=options.pos, prior_auth=options.prior_auth, focus=options.focus)
    )
    pack, source = choose_pack(options.payer, coverage_facts(index, case.coverage, case.payer_names))
    coding = code_session(case.session, pack.billing)
    findings, diagnoses = check_case(case, coding, pack, source)
    # Resource ids and rule ids only: a date of service is patient data.
    log.info(
        "coded session of %s: %d line(s), %d finding(s) [%s]",
        ", ".join(case.session.keys),
        len(coding.lines),
        len(findings),
        ", ".join(sorted({f.rule_id for f in findings})) or "none",
    )
    return Result(index, case, coding, pack, source, findings, diagnoses, options.now)
