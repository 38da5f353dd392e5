"""The chargemaster: what the practice charges for each code a facet claim bills (docs/output.md,
X12 837P). The shipped table (mappings/chargemaster.toml) is an example; a site's replaces it."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...errors import RulePackError
from ...tables import load_toml

CENT = Decimal("0.01")
Price = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]


class Chargemaster(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    example: bool
    version: str = Field(min_length=1)
    currency: Literal["USD"]
    prices: dict[str, Price] = Field(min_length=1)
    modifier_factors: dict[str, Price] = Field(default_factory=dict)

    def line_charge(self, code: str, modifiers: list[str], quantity: int) -> Decimal | None:
        """The line's charge (SV102), or None when the code has no price."""
        price = self.prices.get(code)
        if price is None:
            return None
        amount = price * quantity
        for modifier in modifiers:
            amount *= self.modifier_factors.get(modifier, Decimal(1))
        return amount.quantize(CENT, rounding=ROUND_HALF_UP)


@cache
def load_chargemaster() -> Chargemaster:
    """The site's chargemaster (FACET_ADAPTER_PACKS/chargemaster.toml), else the shipped example."""
    raw = load_toml("chargemaster.toml")
    try:
        return Chargemaster.model_validate(raw)
    except ValidationError as exc:
        raise RulePackError(f"The chargemaster (chargemaster.toml) is invalid: {exc}") from None
