"""Rewrite examples/*/expected-*.json from the current adapter.

Run after a deliberate change to coding, rules or output, then review the diff like code:
`git diff examples/` shows exactly what the change does to every example.

    .venv/bin/python tools/regen_examples.py
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from adapter.errors import AdapterError  # noqa: E402
from adapter.pipeline import Options, process  # noqa: E402

# A fixed clock: Claim.created and Bundle.timestamp are the only values that change between runs.
EXAMPLE_NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def example_outputs(folder: Path) -> tuple[dict[str, object] | None, dict[str, object], int]:
    source = next(folder.glob("input.*"))
    args = json.loads((folder / "args.json").read_text()) if (folder / "args.json").is_file() else {}
    try:
        result = process(source.read_bytes(), Options(now=EXAMPLE_NOW, **args), name=source.name)
    except AdapterError as error:
        return None, error.to_operation_outcome(), error.exit_code
    return result.bundle, result.outcome(), result.exit_code


# An example with an X12 site configuration also has its 837P, with this fixed control number.
X12_CONFIG = "x12-837p.toml"
EXAMPLE_CONTROL_NUMBER = 1


def example_837p(folder: Path) -> str | None:
    """The example's 837P (None for an example without an X12 configuration)."""
    from adapter.writers import x12_837p_writer
    from adapter.writers.x12_837p import X12Options

    config = folder / X12_CONFIG
    if not config.is_file():
        return None
    source = next(folder.glob("input.*"))
    args = json.loads((folder / "args.json").read_text()) if (folder / "args.json").is_file() else {}
    result = process(source.read_bytes(), Options(now=EXAMPLE_NOW, **args), name=source.name)
    writer = x12_837p_writer(X12Options(config=config, control_number=EXAMPLE_CONTROL_NUMBER))
    return writer.write(writer.prepare(result.decision), result.index).decode()


def main() -> None:
    for folder in sorted((REPO / "examples").iterdir()):
        if not folder.is_dir():
            continue
        bundle, outcome, code = example_outputs(folder)
        if bundle is not None:
            (folder / "expected-bundle.json").write_text(json.dumps(bundle, indent=2) + "\n")
        (folder / "expected-outcome.json").write_text(json.dumps(outcome, indent=2) + "\n")
        (folder / "expected-exit").write_text(f"{code}\n")
        x12 = example_837p(folder)
        if x12 is not None:
            (folder / "expected-837p.x12").write_text(x12)
        print(f"{folder.name}: exit {code}")


if __name__ == "__main__":
    main()
