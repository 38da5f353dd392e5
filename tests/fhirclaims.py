"""Reading a FHIR Claim the way a test (or a person at the server) sees it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def claim_lines(claim: Mapping[str, Any]) -> list[str]:
    """`64493-50-KX` for each Claim item (` x2` when the quantity is not one)."""
    lines = []
    for item in claim.get("item") or []:
        codes = [c.get("code") for c in item.get("productOrService", {}).get("coding", [])[:1]]
        modifiers = [c.get("code") for m in item.get("modifier") or [] for c in m.get("coding", [])[:1]]
        quantity = item.get("quantity", {}).get("value", 1)
        text = "-".join(str(x) for x in [*codes, *modifiers] if x)
        lines.append(text if quantity == 1 else f"{text} x{quantity}")
    return lines
