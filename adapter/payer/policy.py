"""The sandbox payer's tables: how findings become denials or pends (mappings/payer/adjudication.toml)
and the fee table (mappings/payer/fees.toml, which a site pack replaces: $FACET_ADAPTER_PACKS/payer/)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from typing import Literal

from ..errors import RulePackError
from ..tables import load_toml

LineScope = Literal["all", "excess-levels"]
CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Denial:
    carc: str
    lines: LineScope
    rarc: str | None = None


@dataclass(frozen=True, slots=True)
class AdjudicationPolicy:
    version: str
    denials: dict[str, Denial]
    pend_rules: frozenset[str]

    def denial(self, rule_id: str, pack_carc: str | None) -> Denial:
        return self.denials.get(rule_id) or Denial(pack_carc or "50", "all")


@dataclass(frozen=True, slots=True)
class Fee:
    charge: Decimal
    allowed: Decimal


@dataclass(frozen=True, slots=True)
class FeeTable:
    version: str
    currency: str
    bilateral_factor: Decimal
    plan_percent: Decimal
    fees: dict[str, Fee]

    def amounts(self, code: str, quantity: int, bilateral: bool) -> tuple[Decimal, Decimal] | None:
        """(billed charge, allowed amount) of a line, or None for a code the table lacks."""
        fee = self.fees.get(code)
        if fee is None:
            return None
        factor = Decimal(quantity) * (self.bilateral_factor if bilateral else Decimal(1))
        return (fee.charge * factor).quantize(CENT, ROUND_HALF_UP), (fee.allowed * factor).quantize(CENT, ROUND_HALF_UP)

    def benefit(self, allowed: Decimal) -> Decimal:
        return (allowed * self.plan_percent / Decimal(100)).quantize(CENT, ROUND_HALF_UP)


@cache
def adjudication_policy() -> AdjudicationPolicy:
    raw = load_toml("payer/adjudication.toml")
    try:
        denials = {
            str(rule): Denial(str(entry["carc"]), entry.get("lines", "all"), entry.get("rarc"))
            for rule, entry in raw["denials"].items()
        }
        for rule, denial in denials.items():
            if denial.lines not in ("all", "excess-levels"):
                raise RulePackError(f"payer/adjudication.toml: {rule}: lines must be all or excess-levels.")
        return AdjudicationPolicy(
            version=str(raw["version"]),
            denials=denials,
            pend_rules=frozenset(str(rule) for rule in raw["pend"]["rules"]),
        )
    except (KeyError, TypeError) as exc:
        raise RulePackError(f"payer/adjudication.toml is malformed: missing {exc}") from exc


@cache
def fee_table() -> FeeTable:
    raw = load_toml("payer/fees.toml")
    try:
        return FeeTable(
            version=str(raw["version"]),
            currency=str(raw["currency"]),
            bilateral_factor=Decimal(str(raw["bilateral_factor"])),
            plan_percent=Decimal(str(raw["plan_percent"])),
            fees={
                str(code): Fee(Decimal(str(entry["charge"])), Decimal(str(entry["allowed"])))
                for code, entry in raw["fees"].items()
            },
        )
    except (KeyError, TypeError, ArithmeticError) as exc:
        raise RulePackError(f"payer/fees.toml is malformed: {exc}") from exc
