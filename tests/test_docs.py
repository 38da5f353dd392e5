"""Documentation that is generated or quoted stays true."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import REPO, run_cli

from adapter.rules.docs import rules_markdown
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


# --------------------------------------------------------------------------- citations of docs/

DOCS = REPO / "docs"
_CITED_FILE = re.compile(r"\bdocs/([\w-]+\.md)")
# "(docs/input.md, levels and sides)" or "(docs/input.md, technique; intent)": a file and its sections.
_CITED_SECTIONS = re.compile(r"\(docs/([\w-]+\.md), ([^()]+)\)")
# A link inside docs/: "[text](coding.md#kx)", "[text](#valid-r4)".
_LINK = re.compile(r"\]\(([\w-]+\.md)?(?:#([\w-]+))?\)")


def _adapter_sources() -> list[Path]:
    return sorted((REPO / "adapter").rglob("*.py"))


def _flat(text: str) -> str:
    """Source text with comment and docstring line breaks folded, so a citation may wrap."""
    return re.sub(r"[ \t]*\n[ \t]*(?:#[ \t]*)?", " ", text)


def _headings(doc: Path) -> list[str]:
    """A Markdown file's headings, lower case, outside fenced code blocks."""
    found: list[str] = []
    fenced = False
    for line in doc.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            found.append(" ".join(line.lstrip("#").split()).lower())
    return found


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^a-z0-9 -]", "", heading).replace(" ", "-")


def test_every_docs_file_the_code_cites_exists() -> None:
    cited = [
        (path.relative_to(REPO), name) for path in _adapter_sources() for name in _CITED_FILE.findall(path.read_text())
    ]
    assert len(cited) >= 20, "the code should cite the docs it follows"
    missing = [f"{path}: docs/{name}" for path, name in cited if not (DOCS / name).is_file()]
    assert not missing, f"cited documents that do not exist: {missing}"


def test_every_docs_section_the_code_cites_exists() -> None:
    cited = [
        (path.relative_to(REPO), name, section.strip())
        for path in _adapter_sources()
        for name, sections in _CITED_SECTIONS.findall(_flat(path.read_text()))
        for section in sections.split(";")
    ]
    assert len(cited) >= 20
    missing = [
        f"{path}: docs/{name}, {section}"
        for path, name, section in cited
        if not (DOCS / name).is_file() or " ".join(section.split()).lower() not in _headings(DOCS / name)
    ]
    assert not missing, f"cited sections that are not headings of the document: {missing}"


def test_the_code_cites_no_document_outside_the_repository() -> None:
    external = [
        f"{path.relative_to(REPO)}:{number}"
        for path in _adapter_sources()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"\bcontract\s*§", line)
    ]
    assert not external, f"cite docs/ instead of the product contract: {external}"


def test_docs_links_resolve_and_the_index_lists_every_document() -> None:
    documents = sorted(DOCS.glob("*.md"))
    links = [(doc, target, anchor) for doc in documents for target, anchor in _LINK.findall(doc.read_text())]
    assert len(links) >= 20
    broken = []
    for doc, target, anchor in links:
        linked = DOCS / target if target else doc
        if not linked.is_file() or (anchor and anchor not in map(_anchor, _headings(linked))):
            broken.append(f"{doc.name}: {target}#{anchor}")
    assert not broken, f"links to missing documents or headings: {broken}"
    index = (DOCS / "README.md").read_text()
    unlisted = [doc.name for doc in documents if doc.name != "README.md" and f"({doc.name})" not in index]
    assert not unlisted, f"docs/README.md does not list: {unlisted}"
