"""Submitting a request to a payer (docs/payer.md, submitting): `POST [payer]/Claim/$submit` with the
request Bundle, and for a pended answer `Claim/$inquire` until it is decided or a deadline passes.

Entry point: `submit_request(bundle, payer_base, ...)` → `Submission`.

Da Vinci PAS: a 2xx answer is the result; a 4xx answer with an OperationOutcome is final (not
retried); 5xx answers and connection failures are retried within a time budget (15 s by default,
the PAS round-trip target). The request is safe to send again: its Bundle identifier lets the payer
see a repeat.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..claimresponse.answer import NotAPayerAnswerError, PayerAnswer, read_answer
from ..decision import NAMESPACE
from ..errors import FhirAuthError, FhirProtocolError, FhirServerUnavailable, InputError, UsageError
from ..fhir.auth import AuthOptions, build_auth
from ..fhir.transport import HttpResponse, Transport
from ..fhir.values import dicts, get_str

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
DEFAULT_BUDGET_S = 15.0
DEFAULT_WAIT_S = 60.0
DEFAULT_POLL_S = 2.0
PAS = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"


class PayerRejectedError(InputError):
    """The payer refused the request (4xx): not retried. `outcome` is its OperationOutcome."""

    issue_code = "processing"

    def __init__(self, message: str, *, status: int, outcome: dict[str, Any] | None) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome


class HeldClaimError(UsageError):
    """A held (`draft`) Claim is not submitted without --force."""


@dataclass
class Submission:
    answer: dict[str, Any]  # what the payer last answered: a ClaimResponse or a PAS response Bundle
    parsed: PayerAnswer
    attempts: int = 1
    inquiries: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # every answer, the first one first


def check_request(bundle: Any, *, force: bool = False) -> dict[str, Any]:
    """The request Bundle, checked: a Bundle with the Claim first, not held unless `force`."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise UsageError("Submit a Bundle written by `facet-adapter claim` (the Claim first).")
    first = next((e.get("resource") for _, e in dicts(bundle.get("entry"))), None)
    if not isinstance(first, dict) or first.get("resourceType") != "Claim":
        raise UsageError("The Bundle's first entry must be the Claim.")
    if first.get("status") == "draft" and not force:
        raise HeldClaimError(
            "The Claim is held (status draft: facet-adapter found an error). Fix the record and write it "
            "again, or submit it anyway with --force."
        )
    return bundle


def inquiry_bundle(request: dict[str, Any]) -> dict[str, Any]:
    """The PAS inquiry for a submitted request: the same Claim (same identifier) and resources, as
    an inquiry request Bundle with its own identifier."""
    claim = dict(request["entry"][0]["resource"])
    claim["meta"] = {**(claim.get("meta") or {}), "profile": [PAS + "profile-claim-inquiry"]}
    original = get_str(request.get("identifier"), "value") or str(claim.get("id"))
    identifier = f"urn:uuid:{uuid.uuid5(NAMESPACE, 'inquiry:' + original)}"
    return {
        "resourceType": "Bundle",
        "meta": {"profile": [PAS + "profile-pas-inquiry-request-bundle"]},
        "identifier": {"system": "urn:ietf:rfc:3986", "value": identifier},
        "type": "collection",
        "timestamp": request.get("timestamp"),
        "entry": [{**request["entry"][0], "resource": claim}, *request["entry"][1:]],
    }


class PayerClient:
    """POSTs to a payer's FHIR base with the PAS retry rules and a time budget per request."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        budget: float = DEFAULT_BUDGET_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if budget <= 0:
            raise UsageError("The time budget must be positive.")
        auth = build_auth(AuthOptions(bearer_token=token)) if token else None
        self.transport = Transport(base_url, auth=auth, timeout=(5.0, budget), retries=0, total_deadline=budget)
        self.budget = budget
        self.sleep = sleep
        self.attempts = 0

    def post(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        """The 2xx answer's JSON. 4xx → PayerRejectedError (401/403: FhirAuthError); 5xx and
        connection failures are retried until the budget is spent → FhirServerUnavailable."""
        url = f"{self.transport.base_url}/Claim/${operation}"
        data = orjson.dumps(body)
        headers = {"Content-Type": f"{FHIR_JSON}; charset=utf-8", "Accept": FHIR_JSON}
        stop_at = time.monotonic() + self.budget
        attempt = 0
        while True:
            attempt += 1
            self.attempts += 1
            self.transport.total_deadline = max(stop_at - time.monotonic(), 0.1)
            failure: str
            try:
                response = self.transport.send("POST", url, data=data, headers=headers, idempotent=True)
            except FhirServerUnavailable:
                failure = "could not be reached"
            else:
                if response.status < 300:
                    return self._json(response, operation)
                if response.status < 500:
                    raise self._rejected(response, operation)
                failure = f"answered {response.status}"
            delay = min(random.uniform(0.25, 0.5 * 2 ** min(attempt, 5)), 4.0)  # noqa: S311 - jitter
            if time.monotonic() + delay >= stop_at:
                raise FhirServerUnavailable(
                    f"The payer at {self.transport.shown_base} {failure} (POST Claim/${operation}); "
                    f"gave up after {attempt} attempt(s) in the {self.budget:g} s budget.",
                    base_url=self.transport.shown_base,
                    method="POST",
                    path=f"Claim/${operation}",
                )
            log.info("Claim/$%s: attempt %d failed; retrying in %.2f s", operation, attempt, delay)
            self.sleep(delay)

    def _json(self, response: HttpResponse, operation: str) -> dict[str, Any]:
        body = response.json()
        if not isinstance(body, dict):
            raise FhirProtocolError(
                f"The payer at {self.transport.shown_base} answered Claim/${operation} without a FHIR resource.",
                base_url=self.transport.shown_base,
                status=response.status,
            )
        return body

    def _rejected(self, response: HttpResponse, operation: str) -> Exception:
        body = response.json()
        outcome = body if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome" else None
        message = f"The payer at {self.transport.shown_base} refused Claim/${operation} ({response.status})."
        if response.status in (401, 403):
            return FhirAuthError(message, status=response.status, outcome=outcome, base_url=self.transport.shown_base)
        return PayerRejectedError(message, status=response.status, outcome=outcome)


def _answer_of(body: dict[str, Any]) -> dict[str, Any]:
    """An `$inquire` answer is a Parameters holding the response Bundle; `$submit` answers directly."""
    if body.get("resourceType") == "Parameters":
        for _, parameter in dicts(body.get("parameter")):
            if isinstance(parameter.get("resource"), dict):
                return dict(parameter["resource"])
    return body


def submit_request(
    bundle: dict[str, Any],
    payer_base: str,
    *,
    token: str | None = None,
    budget: float = DEFAULT_BUDGET_S,
    wait: float = DEFAULT_WAIT_S,
    poll: float = DEFAULT_POLL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> Submission:
    """Submit, then follow a pended answer up with `$inquire` every `poll` seconds for up to `wait`
    seconds. Raises PayerRejectedError (exit 2), FhirServerUnavailable (exit 4)."""
    client = PayerClient(payer_base, token=token, budget=budget, sleep=sleep)
    first = client.post("submit", bundle)
    submission = Submission(answer=first, parsed=_parsed(first), attempts=client.attempts, history=[first])
    stop_at = time.monotonic() + wait
    inquiry = None
    while submission.parsed.pended and time.monotonic() + poll <= stop_at:
        sleep(poll)
        inquiry = inquiry or inquiry_bundle(bundle)
        answer = _answer_of(client.post("inquire", inquiry))
        submission.inquiries += 1
        submission.answer, submission.parsed = answer, _parsed(answer)
        submission.history.append(answer)
    submission.attempts = client.attempts
    return submission


def _parsed(answer: dict[str, Any]) -> PayerAnswer:
    try:
        return read_answer(answer)
    except NotAPayerAnswerError:
        raise FhirProtocolError(
            f"The payer answered with a {answer.get('resourceType')!s:.40}, not a ClaimResponse or PAS response."
        ) from None
