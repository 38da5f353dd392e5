"""The library calls behind every shell: bytes or resources in → read → code → check → decide.

The command line, `sync`, the web service and the bulk runner all call these; they differ only
in how they get the input and where the result goes:

- `process(raw, options)` / `process_index(index, options)`: the session `options` ask for (the
  focus procedure's, else the latest);
- `list_sessions(index, use)` and `code_session(index, ref, options)`: every session of every
  patient, each coded with the patient's history before it — linear in the input.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .coding import Coding
from .coding import code_session as code_lines
from .decision import ClaimDecision, decide
from .errors import UsageError
from .fhir.ingest import DEFAULT_MAX_INPUT_BYTES, ResourceIndex, parse_bytes
from .model import Case, SessionRef, Use
from .read.catalog import choose_session, session_patients
from .read.catalog import list_sessions as catalog_sessions
from .read.places import validate_pos
from .read.session import ReadOptions, read_session
from .rules.engine import DiagnosisCheck, ProfileSource, check_case
from .rules.findings import Finding
from .rules.packs import Pack
from .rules.selection import load_pack, pack_choice
from .writers import request_bundle
from .writers.outcome import decision_outcome

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
    patient: str | None = None  # claim this patient's latest session instead of the input's latest


@dataclass
class Result:
    index: ResourceIndex
    case: Case
    coding: Coding
    pack: Pack
    profile_source: ProfileSource
    diagnoses: DiagnosisCheck
    decision: ClaimDecision
    profile_reason: str = ""  # how the pack was chosen

    @property
    def findings(self) -> list[Finding]:
        return list(self.decision.findings)

    @property
    def held(self) -> bool:
        return self.decision.held

    @property
    def exit_code(self) -> int:
        return self.decision.exit_code

    @cached_property
    def bundle(self) -> dict[str, Any]:
        return request_bundle(self.decision, self.index)

    def outcome(self) -> dict[str, Any]:
        return decision_outcome(self.decision)


def validate_options(options: Options) -> None:
    """Usage errors first, so a bad option is reported before the input is read."""
    if options.pos is not None:
        validate_pos(options.pos)
    if options.payer is not None:
        load_pack(options.payer)
    if options.use not in ("claim", "preauthorization"):
        raise UsageError(f"--use must be claim or preauthorization, not {options.use!r}.")


def process(raw: bytes, options: Options, *, name: str = "input") -> Result:
    validate_options(options)
    index = parse_bytes(raw, name=name, max_bytes=options.max_input_bytes)
    return process_index(index, options)


def process_index(index: ResourceIndex, options: Options) -> Result:
    validate_options(options)
    ref = choose_session(index, options.use, options.focus, patient=options.patient)
    counted: int | None = None
    if options.focus is None and options.patient is None:
        # The latest session of the input was taken: say so when it holds other patients' sessions.
        counted = len(session_patients(index, options.use))
    return code_session(index, ref, options, input_patients=counted)


def list_sessions(index: ResourceIndex, use: Use = "claim") -> list[SessionRef]:
    """Every facet session of every patient in the input (patient, date of service, procedure
    keys), sorted by patient then date."""
    return catalog_sessions(index, use)


def code_session(
    index: ResourceIndex, ref: SessionRef, options: Options, *, input_patients: int | None = None
) -> Result:
    """Read, code, check and decide one session of the input. `input_patients`, when given, is how
    many patients have sessions in the input (several-patients: the session was taken as the
    input's latest, not chosen)."""
    case = read_session(index, ref, ReadOptions(use=ref.use, pos=options.pos, prior_auth=options.prior_auth))
    case.input_patients = input_patients
    choice = pack_choice(options.payer, case.coverage_facts)
    # The pack as in force on the date of service (docs/input.md, versions in force).
    pack, source = choice.pack.on(case.session.date), choice.source
    coding = code_lines(case.session, pack.billing, thoraco_lumbar=pack.coding.thoraco_lumbar)
    findings, diagnoses = check_case(
        case, coding, pack, source, defaulted_reason=choice.reason if choice.defaulted else None
    )
    # Resource ids and rule ids only: a date of service is patient data. The arguments are built
    # only when the line is written (a bulk run codes thousands of sessions with INFO off).
    if log.isEnabledFor(logging.INFO):
        log.info(
            "coded session of %s: %d line(s), %d finding(s) [%s]",
            ", ".join(case.session.keys),
            len(coding.lines),
            len(findings),
            ", ".join(sorted({f.rule_id for f in findings})) or "none",
        )
    decision = decide(case, coding, findings, diagnoses, pack, now=options.now, index=index, pack_reason=choice.reason)
    return Result(index, case, coding, pack, source, diagnoses, decision, choice.reason)
