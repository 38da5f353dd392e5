"""The claim decision → the coder's pre-claim review as HTML: one self-contained page (styles
inline, no network assets, no script; it reads the same printed), or the decision alone as a
fragment that a page showing several claims can place in its own layout (docs/output.md, the
review page).

Jinja2 templates in `templates/`, autoescaped: every value from the record (names, texts, ids) is
text on the page, never markup. The words are those of the text review (`wording`).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jinja2
from markupsafe import Markup

from ..decision import ClaimDecision
from . import wording

TEMPLATES = Path(__file__).resolve().parent / "templates"


@cache
def environment() -> jinja2.Environment:
    """The template environment: templates of `adapter/writers/templates`, escaping everything,
    failing on an undefined name rather than writing an empty one."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals["w"] = wording
    return env


def decision_anchor(decision: ClaimDecision) -> str:
    """The fragment's id on a page: unique per claim, free of patient data."""
    return f"claim-{decision.identifier}"


def review_fragment(decision: ClaimDecision) -> Markup:
    """One decision as an `<article>`: session, lines, diagnoses, evidence, findings, verdict."""
    template = environment().get_template("decision.html.j2")
    return Markup(template.render(decision=decision, anchor=decision_anchor(decision)))  # noqa: S704 (autoescaped template)


def review_page(decision: ClaimDecision) -> str:
    """The whole page for one decision."""
    template = environment().get_template("page.html.j2")
    return template.render(
        title=f"Pre-claim review: {wording.verdict(decision).split(':', 1)[0]}, {decision.date.isoformat()}",
        fragment=review_fragment(decision),
        created=decision.created.strftime("%Y-%m-%d %H:%M"),
        pack=f"{decision.pack}@{decision.pack_version}",
    )
