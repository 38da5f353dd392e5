"""A CDS Hooks request for order-sign or order-select, validated (docs/cds-hooks.md, the hook
request). Anything malformed is a `HookRequestError` (HTTP 400 with an OperationOutcome whose
issues name the fields, never their values); unknown context fields and extensions are ignored,
as CDS Hooks asks.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import UsageError
from ..fhir.r4schema import is_r4_resource_type
from ..service.settings import check_fhir_base
from .discovery import CRD_VERSIONS, DEFAULT_CRD_VERSION, DEFAULT_MAX_CARDS, Hook

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_LOGGABLE = re.compile(r"[A-Za-z0-9.\-]{1,64}")


class HookRequestError(Exception):
    """The request cannot be answered as sent: 400 with an OperationOutcome."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems or []

    def to_operation_outcome(self) -> dict[str, Any]:
        issues = [{"severity": "error", "code": "invalid", "details": {"text": self.message}}]
        issues += [{"severity": "error", "code": "invalid", "details": {"text": p}} for p in self.problems[:20]]
        return {"resourceType": "OperationOutcome", "issue": issues}


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class FhirAuthorization(_Open):
    access_token: str = Field(min_length=1, max_length=16384)
    token_type: str
    expires_in: int | None = None
    scope: str
    subject: str
    patient: str | None = None

    @field_validator("token_type")
    @classmethod
    def _bearer(cls, value: str) -> str:
        if value.lower() != "bearer":
            raise ValueError("must be Bearer")
        return value

    def __repr__(self) -> str:  # the token stays out of logs and tracebacks
        return "FhirAuthorization(***)"


class OrderContext(_Open):
    userId: str = Field(min_length=1, max_length=200)
    patientId: str = Field(pattern=_ID.pattern)
    encounterId: str | None = Field(default=None, pattern=_ID.pattern)
    draftOrders: dict[str, Any]
    selections: list[str] | None = None

    @field_validator("draftOrders")
    @classmethod
    def _bundle(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("resourceType") != "Bundle":
            raise ValueError("must be a Bundle")
        entries = value.get("entry", [])
        if not isinstance(entries, list):
            raise ValueError("Bundle.entry must be a list")
        for position, entry in enumerate(entries):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(resource, dict):
                raise ValueError(f"entry[{position}] has no resource")
            if not is_r4_resource_type(resource.get("resourceType")):
                raise ValueError(f"entry[{position}].resource has no R4 resourceType")
            if not (isinstance(resource.get("id"), str) and _ID.fullmatch(resource["id"])):
                # CRD: draft orders carry a stable id, the one the coverage update is applied to.
                raise ValueError(f"entry[{position}].resource has no valid id")
        return value


class HookRequest(_Open):
    hook: str
    hookInstance: str = Field(min_length=1, max_length=200)
    fhirServer: str | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: OrderContext
    prefetch: dict[str, dict[str, Any] | None] | None = None
    extension: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _server_with_token(self) -> HookRequest:
        if self.fhirAuthorization is not None and not self.fhirServer:
            raise ValueError("fhirServer is required when fhirAuthorization is sent")
        return self


@dataclass(frozen=True, slots=True)
class HookCall:
    """A validated call: what the answer is computed from."""

    hook: Hook
    hook_instance: str
    patient_id: str
    encounter_id: str | None
    orders: tuple[dict[str, Any], ...]  # the draft orders, every type
    selections: tuple[str, ...]  # order-select: the orders just selected ("ServiceRequest/1")
    prefetch: dict[str, dict[str, Any] | None]
    fhir_server: str | None = None
    access_token: str | None = field(default=None, repr=False)
    crd_version: str = DEFAULT_CRD_VERSION
    coverage_info: bool = True
    max_cards: int = DEFAULT_MAX_CARDS

    @property
    def log_id(self) -> str:
        """How logs name the call: its hookInstance when that is an id (a UUID, as CDS Hooks asks),
        else a digest of it, so that nothing the EHR wrote there reaches a log."""
        if _LOGGABLE.fullmatch(self.hook_instance):
            return self.hook_instance
        return "hook-" + hashlib.sha256(self.hook_instance.encode()).hexdigest()[:12]

    def in_scope(self, key: str) -> bool:
        """Whether an order is asked about: every draft order on order-sign, the selected ones on
        order-select."""
        return self.hook == "order-sign" or key in self.selections


def parse_hook(body: bytes, hook: Hook) -> HookCall:
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise HookRequestError("The hook request is not JSON.") from None
    if not isinstance(raw, dict):
        raise HookRequestError("The hook request is not a JSON object.")
    try:
        request = HookRequest.model_validate(raw)
    except ValidationError as exc:
        raise HookRequestError("The hook request is not a valid CDS Hooks request.", _problems(exc)) from None
    if request.hook != hook:
        raise HookRequestError(f"This service answers the {hook} hook, not {request.hook[:40]!r}.")
    context = request.context
    keys = [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in context.draftOrders.get("entry", [])]
    if len(set(keys)) != len(keys):
        raise HookRequestError("context.draftOrders holds the same order twice.")
    selections: tuple[str, ...] = ()
    if hook == "order-select":
        if not context.selections:
            raise HookRequestError("order-select needs context.selections.")
        missing = [s for s in context.selections if s not in keys]
        if missing:
            raise HookRequestError(f"context.selections names {len(missing)} order(s) not in context.draftOrders.")
        selections = tuple(context.selections)
    server = None
    if request.fhirServer:
        try:
            server = check_fhir_base(request.fhirServer, "fhirServer")
        except UsageError as exc:
            raise HookRequestError(exc.message) from None
    version, coverage_info, max_cards = _crd_options(request.extension or {})
    return HookCall(
        hook=hook,
        hook_instance=request.hookInstance,
        patient_id=context.patientId,
        encounter_id=context.encounterId,
        orders=tuple(e["resource"] for e in context.draftOrders.get("entry", [])),
        selections=selections,
        prefetch=dict(request.prefetch or {}),
        fhir_server=server,
        access_token=request.fhirAuthorization.access_token if request.fhirAuthorization else None,
        crd_version=version,
        coverage_info=coverage_info,
        max_cards=max_cards,
    )


def _crd_options(extension: dict[str, Any]) -> tuple[str, bool, int]:
    """CRD's root extensions: the requested version and the configuration options."""
    version = extension.get("davinci-crd.requestedVersion", DEFAULT_CRD_VERSION)
    if version not in CRD_VERSIONS:
        raise HookRequestError(
            f"davinci-crd.requestedVersion {str(version)[:20]!r} is not supported; this service writes "
            f"CRD {' and '.join(CRD_VERSIONS)}."
        )
    configuration = extension.get("davinci-crd.configuration", {})
    if not isinstance(configuration, dict):
        raise HookRequestError("davinci-crd.configuration must be an object.")
    coverage_info = configuration.get("coverage-info", True)
    max_cards = configuration.get("max-cards", DEFAULT_MAX_CARDS)
    if not isinstance(coverage_info, bool):
        raise HookRequestError("davinci-crd.configuration coverage-info must be true or false.")
    if isinstance(max_cards, bool) or not isinstance(max_cards, int) or max_cards < 0:
        raise HookRequestError("davinci-crd.configuration max-cards must be a whole number, 0 or more.")
    return str(version), coverage_info, max_cards


def _problems(exc: ValidationError) -> list[str]:
    # Locations and pydantic's messages only: the values are patient data.
    return [
        ".".join(str(part) for part in error.get("loc", ())) + ": " + str(error.get("msg", "invalid"))
        for error in exc.errors(include_input=False, include_url=False)
    ]
