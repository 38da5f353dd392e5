"""The closed vocabularies a rule pack uses: one definition for the run-time pack classes
(`packs.py`) and the pydantic schema that validates pack files (`table_schemas.py`)."""

from typing import Literal

Severity = Literal["error", "warning", "information"]
IssueType = Literal[
    "business-rule",
    "required",
    "invalid",
    "code-invalid",
    "informational",
    "exception",
    "value",
    "not-supported",
]
