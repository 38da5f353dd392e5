"""Rules on the providers the claim names: their NPIs must pass the check digit
(docs/input.md, parties).

An NPI is ten digits whose last is a Luhn check digit computed over the prefix 80840 (the ISO
card-issuer prefix of US health identifiers) and the first nine digits. A clearinghouse rejects a
claim whose NPI fails it, whatever the format the claim is sent in, so this rule holds every format.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..model import Party
from .context import Context, Hit

NPI_PREFIX = "80840"


def npi_valid(value: str) -> bool:
    """Ten digits whose Luhn check over 80840 + the ten digits holds."""
    if len(value) != 10 or not value.isascii() or not value.isdigit():
        return False
    total = 0
    # From the right, every second digit (the check digit is the first) is doubled.
    for position, char in enumerate(reversed(NPI_PREFIX + value)):
        digit = int(char)
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def named_providers(ctx: Context) -> list[tuple[str, Party]]:
    """The providers the claim names, each party once: (role, party)."""
    parties = ctx.case.parties
    if parties is None:
        return []
    roles = (
        ("provider", parties.provider),
        ("billing provider", parties.billing),
        ("rendering provider", parties.rendering),
        ("facility", parties.facility),
    )
    seen: set[tuple[str | None, str | None]] = set()
    named: list[tuple[str, Party]] = []
    for role, party in roles:
        if party is None or party.npi is None or (party.key, party.npi) in seen:
            continue
        seen.add((party.key, party.npi))
        named.append((role, party))
    return named


def npi_invalid(ctx: Context) -> Iterator[Hit]:
    for role, party in named_providers(ctx):
        npi = party.npi or ""
        if npi_valid(npi):
            continue
        # The message names the resource, not the value (messages never quote the record).
        problem = (
            "fails its check digit (Luhn over 80840 and the ten digits)"
            if len(npi) == 10 and npi.isascii() and npi.isdigit()
            else "is not ten digits"
        )
        yield Hit(
            f"{party.key or 'the ' + role}: the NPI of the {role} {problem}; a clearinghouse rejects the claim.",
            tuple(filter(None, [party.npi_path])),
        )
