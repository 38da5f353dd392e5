"""`facet-adapter payer serve --port N`: run the sandbox payer (loaded lazily by adapter.cli)."""

from __future__ import annotations

import logging
import math
import os
import sys

import click

from ..errors import UsageError


@click.group()
def payer() -> None:
    """The sandbox payer: a FHIR base that answers Claim/$submit and Claim/$inquire."""


@payer.command()
@click.option("--port", type=click.IntRange(1, 65535), required=True, help="Port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--payer", "pack", help="The payer's rule pack, e.g. medicare. Default: from the request's Coverage.")
@click.option(
    "--review-seconds",
    type=float,
    default=5.0,
    show_default=True,
    help="How long a pended prior-authorization request waits before its review decides it.",
)
def serve(port: int, host: str, pack: str | None, review_seconds: float) -> None:
    """Adjudicate claims and prior-authorization requests with the rule packs, deterministically.

    FHIR base http://HOST:PORT/fhir. A PAS request gets a PAS response Bundle (A1 with an
    authorization number, A3 with reasons, A4 pended when documentation is missing, decided after
    --review-seconds through Claim/$inquire); a claim gets a ClaimResponse with amounts from the fee
    table (mappings/payer/fees.toml, replaceable by a site pack)."""
    import uvicorn

    from ..rules.selection import load_pack
    from .adjudicate import PayerSettings
    from .app import create_payer_app
    from .policy import adjudication_policy, fee_table

    if not math.isfinite(review_seconds) or review_seconds < 0:
        raise UsageError("--review-seconds must be zero or more.")
    if pack:
        load_pack(pack.lower())
    adjudication_policy()
    fee_table()  # a broken site table is exit 2 now, not a 500 later
    if not os.environ.get("FACET_ADAPTER_LOG"):
        logging.getLogger("adapter.payer").setLevel(logging.INFO)
    app = create_payer_app(PayerSettings(pack=pack.lower() if pack else None, review_seconds=review_seconds))
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, server_header=False)
    server = uvicorn.Server(config)
    sys.stderr.write(f"facet-adapter payer: http://{host}:{port}/fhir (sandbox payer)\n")
    sys.stderr.flush()
    try:
        server.run()
    except SystemExit:
        raise UsageError(f"Could not listen on {host}:{port} (in use, or not an address of this host).") from None
    if not server.started:
        raise UsageError(f"Could not listen on {host}:{port} (in use, or not an address of this host).")
