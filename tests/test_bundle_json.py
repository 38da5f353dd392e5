"""The bulk runner's Claim Bundle bytes (`request_bundle_json`, which keeps each copied resource's
serialised entry in the index) are the bytes of the Bundle `claim` writes, for every session of
every golden case and example, coded one after the other from one index as bulk codes them."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import orjson
import pytest
from conftest import REPO

from adapter.errors import AdapterError
from adapter.fhir.ingest import parse_bytes
from adapter.pipeline import Options, code_session, list_sessions
from adapter.writers import request_bundle, request_bundle_json
from adapter.writers.outcome import decision_outcome

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
INPUTS = sorted((REPO / "tests" / "cases").glob("*.json")) + sorted((REPO / "examples").glob("*/input.*"))


def _raw(path: Path) -> bytes:
    if path.parent.name == "cases":
        return orjson.dumps(json.loads(path.read_text())["input"])
    return path.read_bytes()


def _name(path: Path) -> str:
    return path.stem if path.parent.name == "cases" else path.parent.name


@pytest.mark.parametrize("path", INPUTS, ids=_name)
def test_bulk_bundle_bytes_are_the_claim_bundle_bytes(path: Path) -> None:
    try:
        index = parse_bytes(_raw(path), name=path.name)
    except AdapterError:
        pytest.skip("input error: nothing is written")
    compared = 0
    for use in ("claim", "preauthorization"):
        for ref in list_sessions(index, use):
            try:
                decision = code_session(index, ref, Options(use=use, now=NOW)).decision
            except AdapterError:
                continue
            # Twice: the second time from what the index kept of the first.
            for outcome in (decision_outcome(decision), None):
                assert request_bundle_json(decision, index, outcome) == orjson.dumps(request_bundle(decision, index))
            compared += 1
    if not compared:
        pytest.skip("no session coded")
