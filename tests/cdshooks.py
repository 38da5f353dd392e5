"""What an EHR does in a CDS Hooks call, for the tests: its signing key and JSON Web Key Set, its
JWTs, and hook requests built from a record, with the prefetch filled the way the service's
templates ask (from the record in memory, or by running the templates against a FHIR server)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from adapter.cds.discovery import prefetch_keys
from adapter.fhir.client import FhirClient
from adapter.read.uses import FOLLOWED

ISSUER = "https://ehr.example.org"
BASE = "http://testserver"  # the TestClient's address: the JWT's aud starts with it
KID = "ehr-key-1"


class Ehr:
    """An EHR with an ES384 signing key; its public key set is written to `jwks_path`."""

    def __init__(self, directory: Path, *, issuer: str = ISSUER, kid: str = KID) -> None:
        self.issuer = issuer
        self.kid = kid
        self.key = ec.generate_private_key(ec.SECP384R1())
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        public.update({"kid": kid, "alg": "ES384", "use": "sig"})
        self.jwk = public
        self.jwks_path = directory / f"jwks-{kid}.json"
        self.jwks_path.write_text(json.dumps({"keys": [public]}))

    def token(self, audience: str, *, headers: Mapping[str, Any] | None = None, **claims: Any) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": audience,
            "exp": now + 300,
            "iat": now,
            "jti": str(uuid.uuid4()),
        }
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(
            payload, self.key, algorithm="ES384", headers={"kid": self.kid, "typ": "JWT", **(headers or {})}
        )

    def auth(self, audience: str, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(audience, **claims)}"}


def service_url(service_id: str, base: str = BASE) -> str:
    return f"{base}/cds-services/{service_id}"


def _key(resource: Mapping[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def _reached_by() -> dict[str, str]:
    """For each type only references reach (Practitioner, Location...), the prefetch key whose
    `_include` brings it along."""
    includes = {key.key: key.template for key in prefetch_keys()}
    found: dict[str, str] = {}
    for follow in FOLLOWED:
        for key, template in includes.items():
            if follow.include and f"_include={follow.include}" in template:
                for target in follow.targets:
                    found.setdefault(target, key)
    return found


def prefetch_from(
    resources: Iterable[Mapping[str, Any]], patient_id: str, *, skip: Iterable[str] = ()
) -> dict[str, Any]:
    """Every prefetch key filled from a record in memory (a searchset per search key, the Patient
    for `patient`); keys in `skip` are left out, as an EHR that cannot fill them does."""
    keys = {key.type: key.key for key in prefetch_keys()}
    reached = _reached_by()
    prefetch: dict[str, Any] = {
        k.key: {"resourceType": "Bundle", "type": "searchset", "entry": []} for k in prefetch_keys()
    }
    prefetch["patient"] = None
    for resource in resources:
        type_ = resource["resourceType"]
        if type_ == "Patient":
            if resource.get("id") == patient_id:
                prefetch["patient"] = dict(resource)
                continue
            key = reached.get(type_, "coverage")
        else:
            key = keys.get(type_) or reached.get(type_, "procedures")
        prefetch[key]["entry"].append({"resource": dict(resource)})
    for key in skip:
        prefetch.pop(key, None)
    return prefetch


def prefetch_from_server(client: FhirClient, patient_id: str, encounter_id: str | None) -> dict[str, Any]:
    """What an EHR sends when it runs the service's templates against its FHIR server."""
    prefetch: dict[str, Any] = {}
    for key in prefetch_keys():
        if key.needs == "encounterId" and encounter_id is None:
            continue
        filled = key.template.replace("{{context.patientId}}", patient_id).replace(
            "{{context.encounterId}}", encounter_id or ""
        )
        path, _, query = filled.partition("?")
        if not query:
            type_, _, id_ = path.partition("/")
            prefetch[key.key] = client.read(type_, id_)
            continue
        params = [(name, unquote(value)) for name, value in parse_qsl(query, keep_blank_values=True)]
        found = list(client.search(path, params))
        prefetch[key.key] = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in found]}
    return prefetch


def hook_request(
    orders: Iterable[Mapping[str, Any]],
    patient_id: str,
    *,
    hook: str = "order-sign",
    prefetch: Mapping[str, Any] | None = None,
    encounter_id: str | None = None,
    selections: Iterable[str] | None = None,
    fhir_server: str | None = None,
    access_token: str | None = "ehr-access-token",
    extension: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    drafts = [dict(order) for order in orders]
    context: dict[str, Any] = {
        "userId": "Practitioner/dr1",
        "patientId": patient_id,
        "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": d} for d in drafts]},
    }
    if encounter_id:
        context["encounterId"] = encounter_id
    if hook == "order-select":
        context["selections"] = list(selections) if selections is not None else [_key(d) for d in drafts]
    body: dict[str, Any] = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context}
    if prefetch is not None:
        body["prefetch"] = dict(prefetch)
    if fhir_server is not None:
        body["fhirServer"] = fhir_server
        if access_token is not None:
            body["fhirAuthorization"] = {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": 30,
                "scope": "user/*.read",
                "subject": "facet-adapter",
            }
    if extension is not None:
        body["extension"] = dict(extension)
    return body


def split_record(
    resources: Iterable[Mapping[str, Any]], order_keys: Iterable[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the draft orders, the rest of the record)."""
    wanted = set(order_keys)
    items = [dict(r) for r in resources]
    return [r for r in items if _key(r) in wanted], [r for r in items if _key(r) not in wanted]


def extension_of(resource: Mapping[str, Any]) -> dict[str, Any]:
    from adapter.cds.extension import URL

    found = [e for e in resource.get("extension", []) if e.get("url") == URL]
    assert len(found) == 1, found
    return found[0]


def values(extension: Mapping[str, Any], name: str) -> list[Any]:
    """The values of one sub-extension (`valueCode`, `valueString`...)."""
    found = []
    for part in extension["extension"]:
        if part["url"] == name:
            found.extend(v for k, v in part.items() if k.startswith("value"))
    return found
