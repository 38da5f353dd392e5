"""The Da Vinci PAS corpus the tests read (tests/data/pas-corpus, see its README): the published PAS
2.2.1 package (profiles with snapshots, value sets, examples), response examples from PAS 2.0.1,
Inferno's PAS test kit and the PAS reference implementation, and the R4 core ClaimResponses
(.cache/r4-examples, `make fixtures`)."""

from __future__ import annotations

import json
import tarfile
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parent / "data" / "pas-corpus"
PAS_221_PACKAGE = CORPUS / "pas-2.2.1" / "hl7.fhir.us.davinci-pas-2.2.1.tgz"
R4_EXAMPLES = Path(__file__).resolve().parent.parent / ".cache" / "r4-examples" / "package"
PAS = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"


@cache
def pas_221() -> Path:
    """The PAS 2.2.1 package, extracted once per test session: `<dir>/package/...`."""
    target = Path(tempfile.mkdtemp(prefix="pas-2.2.1-"))
    with tarfile.open(PAS_221_PACKAGE) as archive:
        archive.extractall(target, filter="data")
    return target / "package"


def pas_221_examples() -> list[Path]:
    return sorted((pas_221() / "example").glob("*.json"))


@cache
def conformance() -> dict[str, dict[str, Any]]:
    """The package's StructureDefinitions and ValueSets by canonical URL (versions stripped)."""
    found: dict[str, dict[str, Any]] = {}
    for path in pas_221().glob("*.json"):
        resource = json.loads(path.read_text())
        if resource.get("resourceType") in ("StructureDefinition", "ValueSet", "CodeSystem"):
            found[resource["url"]] = resource
    return found


def load(path: Path) -> Any:
    return json.loads(path.read_text())
