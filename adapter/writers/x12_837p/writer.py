"""The X12 837P writer: its findings (`x12_requirements`) and the interchange (`X12Writer.write`)
(docs/output.md, X12 837P).

A claim the 837P cannot carry (an element the guide requires that the record lacks) gets a
`claim-data-missing` finding naming the loop and element; the command adds these findings to the
decision before it writes (`adapter.decision.with_findings`), so the exit status and the summary
show them. The writer itself decides nothing: a held claim is written only when its caller asks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ...decision import ClaimDecision
from ...errors import ClaimNotWritableError, UsageError
from ...fhir.ingest import ResourceIndex
from ...rules.context import Hit
from ...rules.engine import make_finding
from ...rules.findings import Finding
from ...rules.selection import load_pack
from .charges import Chargemaster, load_chargemaster
from .content import ClaimContent, Frequency, claim_content, content_digest
from .control import Sent, frequency_for, locked_state, peek
from .settings import Overrides, X12Settings, config_path, load_settings

MEDIA_TYPE = "application/EDI-X12"


@dataclass(frozen=True, slots=True)
class X12Options:
    """How one run writes: the configuration (else FACET_ADAPTER_X12_CONFIG), single values that
    override it, a fixed control number instead of the state file's counter, a void, and the
    payer's claim number a replacement or void refers to."""

    config: Path | None = None
    overrides: Overrides = field(default_factory=Overrides)
    control_number: int | None = None
    void: bool = False
    payer_claim_number: str | None = None


def x12_requirements(
    decision: ClaimDecision,
    settings: X12Settings,
    *,
    charges: Chargemaster | None = None,
    frequency: Frequency = "1",
    payer_claim_number: str | None = None,
) -> list[Finding]:
    """A `claim-data-missing` finding for each element the 837P requires that the claim lacks."""
    content = _content(decision, settings, charges or load_chargemaster(), frequency, payer_claim_number)
    pack = load_pack(decision.pack)
    return [make_finding(pack, "claim-data-missing", Hit(missing.message, ())) for missing in content.missing]


def _content(
    decision: ClaimDecision,
    settings: X12Settings,
    charges: Chargemaster,
    frequency: Frequency,
    payer_claim_number: str | None,
) -> ClaimContent:
    if decision.use != "claim":
        raise UsageError("An 837P is a claim: --use preauthorization has no 837P (its X12 request is a 278).")
    _usable(settings, charges)
    chain = load_pack(decision.pack).chain
    return claim_content(
        decision, settings, charges, pack_chain=chain, frequency=frequency, payer_claim_number=payer_claim_number
    )


def _usable(settings: X12Settings, charges: Chargemaster) -> None:
    if charges.example and settings.usage_indicator == "P":
        raise UsageError(
            "The shipped chargemaster is an example: a production interchange (usage indicator P) needs the "
            "site's own (FACET_ADAPTER_PACKS/chargemaster.toml with example = false)."
        )


class X12Writer:
    """The 837P writer with its settings, read when first used (so the registered writer follows
    FACET_ADAPTER_X12_CONFIG)."""

    def __init__(self, options: X12Options | None = None) -> None:
        self.options = options or X12Options()

    def settings(self) -> X12Settings:
        return load_settings(config_path(self.options.config), self.options.overrides)

    def check(self) -> None:
        """The settings and the chargemaster can be used together (run before the input is read)."""
        _usable(self.settings(), load_chargemaster())

    def frequency(self, decision: ClaimDecision, settings: X12Settings, charges: Chargemaster) -> Frequency:
        """The frequency code the claim would be sent with now, from the state file's record."""
        content = _content(decision, settings, charges, "1", None)
        previous = peek(settings.state_file, decision.identifier) if settings.state_file else None
        return frequency_for(previous, content_digest(content), void=self.options.void)

    def requirements(self, decision: ClaimDecision) -> list[Finding]:
        settings, charges = self.settings(), load_chargemaster()
        return x12_requirements(
            decision,
            settings,
            charges=charges,
            frequency=self.frequency(decision, settings, charges),
            payer_claim_number=self.options.payer_claim_number,
        )

    def write(self, decision: ClaimDecision, index: ResourceIndex) -> bytes:
        """The interchange; the control number it takes and the claim it sends are recorded in the
        state file (when there is one) before it is returned."""
        from .interchange import interchange

        settings, charges = self.settings(), load_chargemaster()
        content = _content(decision, settings, charges, "1", self.options.payer_claim_number)
        if not content.complete:
            lacking = "; ".join(m.message for m in content.missing if m.blocking)
            raise ClaimNotWritableError(f"The 837P cannot be written without the data it requires: {lacking}")
        digest = content_digest(content)
        fixed = self.options.control_number
        if settings.state_file is None:
            if fixed is None:
                raise UsageError(
                    "X12 control numbers need a state file (state_file in the X12 configuration, or --x12-state) "
                    "or --control-number."
                )
            sent = dataclasses.replace(content, frequency=frequency_for(None, digest, void=self.options.void))
            return interchange(sent, settings, fixed, decision.created).encode("ascii")
        with locked_state(settings.state_file) as state:
            frequency = frequency_for(state.sent(decision.identifier), digest, void=self.options.void)
            number = fixed if fixed is not None else state.take_number()
            text = interchange(dataclasses.replace(content, frequency=frequency), settings, number, decision.created)
            state.record(decision.identifier, Sent(number, digest, frequency))
        return text.encode("ascii")
