"""Words that decide facet-ness, technique, intent and guidance in free text
(docs/input.md, what makes a facet procedure; technique; intent; guidance).

Each function reads one text field and answers only when the text decides; None means the
field is silent (or says both things), so the caller moves on to the next source.
"""

from __future__ import annotations

import re

from ..model import Guidance, Intent, Technique

_FACET = re.compile(r"\bfacet|zygapophys[ei]al|\bmedial[\s-]+branch", re.IGNORECASE)
_RFA = re.compile(
    r"\bradio[\s-]?frequency|\bRFA\b|\bRF\s+(?:ablation|neurotomy|denervation|lesion)|\bablat\w*|\bdenervat\w*|"
    r"\bneurotom\w*|\brhizotom\w*",
    re.IGNORECASE,
)
_MBB = re.compile(r"\bmedial[\s-]+branch|\bMBB\b", re.IGNORECASE)
# Patterns most inputs never need are compiled on first use (re keeps them), not at import.
_IA = r"\bintra[\s-]?articular"

# Words that deny the next few words: "no fluoroscopy", "not a radiofrequency candidate".
_DENIALS = frozenset({"not", "no", "non", "without", "never", "nor", "denies", "declined"})
# For technique words also what makes them hypothetical or past: "candidate for RF ablation if the
# blocks succeed", "MBB prior to RF ablation" describe another procedure than the one recorded.
# Time words alone ("following positive blocks, RF ablation") do not negate.
_TECHNIQUE_NEGATORS = _DENIALS | frozenset(
    {
        "candidate",
        "candidacy",
        "consider",
        "considered",
        "considering",
        "future",
        "planned",
        "plan",
        "possible",
        "potential",
        "eventual",
        "if",
        "would",
        "will",
        "may",
        "might",
        "before",
        "prior",
        "pending",
        "prerequisite",
        "toward",
        "towards",
        "defer",
        "deferred",
    }
)
_WORD = re.compile(r"[a-z]+")
_HISTORY_MARK = re.compile(r"\b(?:status\s+post|s/p)\s*$", re.IGNORECASE)
_NEGATION_WINDOW = 4
_CLAUSE_BREAK = re.compile(r"[.,;:()\[\]\n]")

_DIAGNOSTIC = r"\bdiagnostic\b"
_THERAPEUTIC = r"\btherapeutic\b"

_GUIDANCE_NONE = (
    r"\bwithout\s+(?:any\s+)?(?:image|imaging|radiographic|fluoroscop\w*)\s*(?:guidance)?|\bwithout\s+imaging\b|"
    r"\blandmark|\bblind(?:ly)?\b|\bunguided\b|\bno\s+image\s+guidance"
)
_GUIDANCE_WORDS: tuple[tuple[Guidance, re.Pattern[str]], ...] = (
    ("fluoroscopy", re.compile(r"\bfluoroscop\w*", re.IGNORECASE)),
    (
        "ct",
        re.compile(r"\bCT[\s-]+guid\w*|\bCT\s+guidance|\bcomputed\s+tomograph\w*|\bunder\s+CT\b", re.IGNORECASE),
    ),
    ("ultrasound", re.compile(r"\bultrasound|\bultra-sound|\bsonograph\w*|\bsonographic", re.IGNORECASE)),
    ("mri", re.compile(r"\bMRI\b|\bMR[\s-]+guid\w*|\bmagnetic\s+resonance", re.IGNORECASE)),
)


_GUIDANCE_PREFERENCE: tuple[Guidance, ...] = ("fluoroscopy", "ct", "ultrasound", "mri")
_GUIDANCE_WORDS_BY_KIND: dict[Guidance, re.Pattern[str]] = dict(_GUIDANCE_WORDS)
_FINDING_PRONE: frozenset[Guidance] = frozenset({"ct", "mri"})
_GUIDANCE_CONTEXT = r"guid|\bunder\b|\busing\b|\bvia\b|\bwith\b"


def _negated(text: str, start: int, negators: frozenset[str]) -> bool:
    # The scope of a negation ends at punctuation: "not a RF candidate, intra-articular injection".
    clause = _CLAUSE_BREAK.split(text[:start])[-1]
    before = _WORD.findall(clause.lower())[-_NEGATION_WINDOW:]
    if negators is _TECHNIQUE_NEGATORS and _HISTORY_MARK.search(clause[-20:]):
        return True  # "status post RFA", "s/p RFA": an earlier procedure, not this one
    return any(word in negators for word in before)


def _asserted(pattern: re.Pattern[str], text: str, negators: frozenset[str]) -> bool:
    return any(not _negated(text, match.start(), negators) for match in pattern.finditer(text))


def says_facet(text: object) -> bool:
    """Facet, zygapophyseal or medial branch (RFA words alone are not enough)."""
    return isinstance(text, str) and _FACET.search(text) is not None


def technique_of(text: object) -> Technique | None:
    if not isinstance(text, str) or not text:
        return None
    if _asserted(_RFA, text, _TECHNIQUE_NEGATORS):
        return "radiofrequency-ablation"
    if _asserted(_MBB, text, _TECHNIQUE_NEGATORS):
        return "medial-branch-block"
    if _asserted(re.compile(_IA, re.IGNORECASE), text, _TECHNIQUE_NEGATORS):
        return "intra-articular"
    return None


def intent_of(text: object) -> Intent | None:
    """Diagnostic or therapeutic when the text says exactly one of them."""
    if not isinstance(text, str) or not text:
        return None
    diagnostic = re.search(_DIAGNOSTIC, text, re.IGNORECASE) is not None
    therapeutic = re.search(_THERAPEUTIC, text, re.IGNORECASE) is not None
    if diagnostic == therapeutic:
        return None
    return "diagnostic" if diagnostic else "therapeutic"


def guidance_of(text: object) -> Guidance | None:
    """The image guidance a text asserts; fluoroscopy or CT win over the others when several appear.

    "MRI" and "computed tomography" usually report imaging findings ("MRI showed facet arthropathy",
    "injection for arthropathy seen on MRI"), so they count only with a guidance word in the same
    clause ("MRI-guided", "under MRI", "using computed tomography").
    """
    if not isinstance(text, str) or not text:
        return None
    found = [kind for kind, pattern in _GUIDANCE_WORDS if _asserted(pattern, text, _DENIALS)]
    found = [
        kind for kind in found if kind not in _FINDING_PRONE or _guided_clause(text, _GUIDANCE_WORDS_BY_KIND[kind])
    ]
    for preferred in _GUIDANCE_PREFERENCE:
        if preferred in found:
            return preferred
    if re.search(_GUIDANCE_NONE, text, re.IGNORECASE):
        return "none"
    return None


def _guided_clause(text: str, pattern: re.Pattern[str]) -> bool:
    for clause in _CLAUSE_BREAK.split(text):
        if pattern.search(clause) and re.search(_GUIDANCE_CONTEXT, clause, re.IGNORECASE):
            return True
    return False
