"""Documentation that is generated or quoted stays true."""

from __future__ import annotations

import re

from conftest import REPO, run_cli

from adapter.docs import rules_markdown
from adapter.rules.packs import available_packs
from adapter.rules.selection import load_pack


def test_rules_reference_is_current() -> None:
    generated = rules_markdown([load_pack(name) for name in available_packs()])
    committed = (REPO / "docs" / "rules.md").read_text()
    assert committed == generated, "docs/rules.md is stale: run `make rules-doc`"


def test_readme_demo_commands_run_and_print_what_the_readme_shows(tmp_path: object) -> None:
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"^facet-adapter (claim|check) (\S+) (.*)$", readme, re.MULTILINE)
    demo = [c for c in commands if "medicare-lumbar-bilateral" in c[1]]
    assert len(demo) == 2
    for command, source, rest in demo:
        args = [a for a in rest.split() if a not in ("-o", "claim-bundle.json")]
        run = run_cli(command, source, *args, cwd=REPO)
        assert run.code == 0, run.stderr.decode()
        if command == "check":
            shown = readme.split("and the review it prints ends with:")[1].split("```")[1].strip()
            assert shown in run.stdout.decode()


def test_makefile_demo_uses_the_readme_example() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "examples/medicare-lumbar-bilateral/input.json" in makefile
