"""What one sync did (or, with dry_run, would do) for one session: `SyncOutcome`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import AdapterError
from ..rules.findings import Finding


@dataclass
class SyncOutcome:
    """What one sync did (or, with dry_run, would do) for one session."""

    procedure: str  # the focus, "Procedure/123"
    dry_run: bool
    exit_code: int
    findings: list[Finding] = field(default_factory=list)
    patient: str | None = None
    date: str | None = None
    session: list[str] = field(default_factory=list)
    claim_identifier: str | None = None  # the deterministic uuid in Claim.identifier
    claim_id: str | None = None  # the server's id
    claim_version: str | None = None
    claim_status: str | None = None
    # created | updated | unchanged | kept (cancelled by a person) | overridden (kept active: a
    # coder accepted this content) | would-create | would-update
    claim_action: str = "none"
    created: bool = False
    updated: bool = False
    task_id: str | None = None
    task_status: str | None = None
    task_action: str = "none"  # created | updated | completed | unchanged | would-... | none
    lines: list[str] = field(default_factory=list)  # "64493-50-KX"
    claim: dict[str, Any] | None = None  # the Claim as written (or as it would be written)
    task: dict[str, Any] | None = None
    outcome: dict[str, Any] | None = None  # the findings as an OperationOutcome
    error: dict[str, Any] | None = None  # an input error for this session (exit 2), as an OperationOutcome
    retired: list[str] = field(default_factory=list)  # superseded Claims cancelled (or, dry run, to cancel)
    payer: dict[str, Any] | None = None  # with --payer-url: what the payer answered and what was stored
    use: str | None = None  # claim | preauthorization
    pack: str | None = None
    pack_version: str | None = None
    # What a coder's override of this claim would accept (adapter.server.writeback.override_fingerprint).
    fingerprint: str | None = None

    @property
    def held(self) -> bool:
        return self.exit_code == 1

    def to_dict(self, *, resources: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "procedure": self.procedure,
            "patient": self.patient,
            "date": self.date,
            "session": self.session,
            "exitCode": self.exit_code,
            "dryRun": self.dry_run,
            "claimIdentifier": self.claim_identifier,
            "claimId": self.claim_id,
            "claimVersion": self.claim_version,
            "claimStatus": self.claim_status,
            "claimAction": self.claim_action,
            "taskId": self.task_id,
            "taskStatus": self.task_status,
            "taskAction": self.task_action,
            "lines": self.lines,
            "retired": self.retired,
            "findings": [
                {"ruleId": f.rule_id, "severity": f.severity, "message": f.message, "carc": f.carc}
                for f in self.findings
            ],
        }
        if self.error is not None:
            out["error"] = self.error
        if self.payer is not None:
            out["payer"] = self.payer
        if resources:
            out["claim"] = self.claim
            out["task"] = self.task
        return out


def failed_outcome(procedure: str, error: AdapterError, *, dry_run: bool = False) -> SyncOutcome:
    return SyncOutcome(
        procedure=procedure, dry_run=dry_run, exit_code=error.exit_code, error=error.to_operation_outcome()
    )
