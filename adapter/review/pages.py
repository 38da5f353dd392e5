"""The /review pages as HTML (templates in `templates/`, extending the review page's frame in
adapter/writers/templates): Jinja2 with autoescape on, so whatever a record or a coder wrote
(a name, a reason) is text on the page, never markup."""

from __future__ import annotations

import datetime as dt
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from ..writers import wording
from ..writers.html import TEMPLATES as DECISION_TEMPLATES
from .store import STATUS_WORDS, STATUSES, Event

TEMPLATES = Path(__file__).resolve().parent / "templates"
MAX_REASON_CHARS = 2000


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M")


def detail(event: Event) -> str:
    """An event's detail in words: the findings overridden, the status a re-check found."""
    info = event.detail
    parts: list[str] = []
    if event.event == "overridden" and info.get("findings"):
        rules = ", ".join(f"{f['rule_id']} v{f['rule_version']} ({f['severity']})" for f in info["findings"])
        parts.append(f"Findings overridden: {rules}.")
        if info.get("provenance"):
            parts.append(f"Provenance/{info['provenance']}.")
    if event.event == "re-checked" and info.get("status"):
        parts.append(f"Found: {STATUS_WORDS.get(info['status'], info['status'])}.")
    if info.get("lapsed"):
        parts.append("The record changed after the override, so the override no longer applies.")
    if event.event in ("passed", "needs-review") and info.get("claim"):
        parts.append(f"{info['claim']} written.")
    return " ".join(parts)


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(TEMPLATES), jinja2.FileSystemLoader(DECISION_TEMPLATES)]),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals["w"] = wording
    env.globals["words"] = STATUS_WORDS
    env.globals["statuses"] = [(s, STATUS_WORDS[s]) for s in STATUSES]
    env.globals["max_reason"] = MAX_REASON_CHARS
    env.filters["when"] = when
    env.filters["detail"] = detail
    return env


def render(template: str, **values: Any) -> str:
    """A page; `title`, `user`, `csrf`, `flash` and `csp_nonce` are expected by the frame."""
    values.setdefault("flash", [])
    values.setdefault("user", None)
    values.setdefault("csrf", "")
    now = dt.datetime.now(dt.UTC)
    values.setdefault("created", now.strftime("%Y-%m-%d %H:%M"))
    values.setdefault("pack", "")
    return environment().get_template(template).render(**values)
