"""How low can `ratio` go in CPython? Lower bounds for issue 8's target, measured in one run.

    .venv/bin/python benchmarks/throughput.py --sessions 5000 --keep /tmp/pop
    .venv/bin/python benchmarks/bounds.py /tmp/pop [--cores 2]

`throughput.py` compares `bulk` with a floor that parses every input line and dumps one small
claim-sized dict a session. `bulk` cannot do less than this, whatever its design:

- parse every input line once (the floor's first half);
- build each session's Claim and OperationOutcome as Python objects: they are computed, so they
  cannot be parsed or copied from the input. Measured as cheaply as CPython can build them at all:
  each one compiled to a literal expression beforehand, so only the evaluation is timed (no
  function calls, no lookups, no logic: the dict and list opcodes alone);
- serialise each session's Bundle as `bulk` writes it (sorted keys), supporting resources included.

Nothing of reading, validating, coding, checking or wiring references is counted. The sum, spread
ideally over `--cores` processes with no routing or merging, gives the best `ratio` any CPython
implementation writing this output could reach on this machine. The cycle collector is off while
timing (as in `bulk`'s workers), the best of five rounds is kept for each part and for the floor
itself (so the floor is as fast as it gets and the budget as tight), and the last line is one JSON
object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import CodeType
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from throughput import floor  # noqa: E402

COMPUTED = ("Claim", "OperationOutcome")


def best_of(rounds: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def literal(value: Any) -> CodeType:
    """A code object that builds `value` anew each time it is evaluated. `repr` of JSON-parsed data
    (dicts, lists, str, int, float, bool, None) is a Python expression of the same value."""
    return compile(repr(value), "<literal>", "eval")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kept", type=Path, help="a folder kept by throughput.py --keep (population/ and out/)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    population, out = args.kept / "population", args.kept / "out"
    lines = [line for path in sorted(population.glob("*.ndjson")) for line in path.read_bytes().splitlines() if line]
    bundles = [orjson.loads(line) for line in (out / "claims.ndjson").read_bytes().splitlines() if line]
    sessions = len(bundles)
    if not sessions:
        raise SystemExit(f"no Claim Bundles in {out / 'claims.ndjson'}")
    computed = [
        literal([entry["resource"] for entry in bundle["entry"] if entry["resource"]["resourceType"] in COMPUTED])
        for bundle in bundles
    ]

    gc.disable()
    floor_s = best_of(args.rounds, lambda: floor(population, sessions))
    parse_s = best_of(args.rounds, lambda: [orjson.loads(line) for line in lines])
    build_s = best_of(args.rounds, lambda: [eval(code) for code in computed])  # noqa: S307 (our own literals)
    dump_s = best_of(args.rounds, lambda: [orjson.dumps(bundle, option=orjson.OPT_SORT_KEYS) for bundle in bundles])
    gc.enable()

    least_s = (parse_s + build_s + dump_s) / args.cores
    per = 1e6 / sessions
    result = {
        "sessions": sessions,
        "cores": args.cores,
        "floor_us": round(floor_s * per, 1),
        "parse_input_us": round(parse_s * per, 1),
        "build_claim_and_outcome_us": round(build_s * per, 1),
        "dump_bundle_us": round(dump_s * per, 1),
        "least_wall_us": round(least_s * per, 1),
        "least_ratio": round(least_s / floor_s, 2),
        "cpu_us_left_at_ratio_5": round((5 * floor_s * args.cores - (parse_s + build_s + dump_s)) * per, 1),
        "load": round(os.getloadavg()[0], 2),
    }
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
