"""Write: the coded, checked case → a FHIR R4 Claim in a collection Bundle (contract §5.1-5.2),
or a Da Vinci PAS request Bundle for `--use preauthorization`.

Entry point: `write_bundle(...)`. Output is plain JSON-ready dicts; the tests validate every
written resource with the fhir.resources R4B models.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import orjson

from .code import Coding, coding_tables
from .fhirpath import CPT, ICD10CM, LOINC, POS_SYSTEM, reference_holders
from .ingest import Res, ResourceIndex
from .model import Case, ClaimLine, EvidenceItem, label_guidance
from .rules.engine import DiagnosisCheck
from .rules.findings import Finding, holds_claim
from .rules.packs import Pack, dx_regions

log = logging.getLogger(__name__)

# Names derived from this namespace are the adapter's stable identifiers: the same input always
# gives the same Claim identifier and fullUrls, which makes write-back idempotent.
NAMESPACE = uuid.UUID("5b0f3b8e-52d1-4d8e-9a3c-7f3f0e0f4a61")
IDENTIFIER_SYSTEM = "urn:ietf:rfc:3986"
PACK_TAG_SYSTEM = "urn:facet-adapter:rule-pack"
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
PRIORITY = "http://terminology.hl7.org/CodeSystem/processpriority"
INFO_CATEGORY = "http://terminology.hl7.org/CodeSystem/claiminformationcategory"
CARE_TEAM_ROLE = "http://terminology.hl7.org/CodeSystem/claimcareteamrole"
PAS = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition"
X12_1525 = "https://codesystem.x12.org/005010/1525"
X12_1322 = "https://codesystem.x12.org/005010/1322"
X12_1365 = "https://codesystem.x12.org/005010/1365"


def claim_identifier(case: Case) -> str:
    basis = "|".join([case.patient, case.session.date.isoformat(), *case.session.keys, case.use])
    return str(uuid.uuid5(NAMESPACE, basis))


class _Entries:
    """The Bundle's resources: each once, with a stable fullUrl, references rewritten to them.

    The resources the Claim names were read (and checked as R4) by the reader. What they reference
    in turn is added as far as the input has it, except what cannot be written as valid R4 (left
    out, its reference kept as written) and other patients' data (never copied into a claim).
    """

    def __init__(self, index: ResourceIndex, patient: str) -> None:
        self.index = index
        self.patient = patient
        self.order: list[Res] = []
        self.urls: dict[int, str] = {}

    def url_of(self, res: Res) -> str:
        key = id(res)
        if key not in self.urls:
            if res.container is None and res.full_url and res.full_url.startswith(("http://", "https://")):
                self.urls[key] = res.full_url
            else:
                self.urls[key] = f"urn:uuid:{uuid.uuid5(NAMESPACE, res.key)}"
            self.order.append(res)
        return self.urls[key]

    def _includable(self, res: Res) -> bool:
        if res.type == "Patient" and res.key != self.patient:
            return False
        for element in ("subject", "patient", "beneficiary"):
            value = res.data.get(element)
            if isinstance(value, dict) and "reference" in value:
                owner = self.index.resolve(value, res)
                if owner is not None and owner.type == "Patient" and owner.key != self.patient:
                    return False
        if not self.index.is_valid(res):
            log.info("%s left out of the Bundle: not writable as valid R4", res.label())
            return False
        return True

    def reference(self, key: str | None, display: str) -> dict[str, Any]:
        res = self.index.get(key) if key else None
        if res is not None:
            return {"reference": self.url_of(res)}
        if key and "/" in key:
            return {"reference": key}
        return {"display": display}

    def res_reference(self, res: Res) -> dict[str, Any]:
        return {"reference": self.url_of(res)}

    def close(self) -> list[dict[str, Any]]:
        """Copies of the resources, with what they reference added transitively."""
        done = 0
        while done < len(self.order):
            res = self.order[done]
            done += 1
            for target in _referenced(self.index, res):
                if id(target) not in self.urls and self._includable(target):
                    self.url_of(target)
        entries = []
        for res in self.order:
            copy = orjson.loads(orjson.dumps(res.data))
            if res.container is not None:
                copy["id"] = _contained_id(res)
            else:
                self._rewrite(copy, res)
            entries.append({"fullUrl": self.urls[id(res)], "resource": copy})
        return entries

    def _rewrite(self, copy: dict[str, Any], res: Res) -> None:
        for holder in reference_holders(copy):
            target = self.index.resolve(holder["reference"], res)
            if target is not None and id(target) in self.urls and target.container is None:
                holder["reference"] = self.urls[id(target)]
            elif target is not None and target.container is not None and target.container is not res:
                holder["reference"] = self.url_of(target) if id(target) in self.urls else holder["reference"]


def _contained_id(res: Res) -> str:
    parent = res.container.id if res.container is not None and res.container.id else "contained"
    return f"{parent}-{res.id or 'x'}"[:64]


def _referenced(index: ResourceIndex, res: Res) -> Iterator[Res]:
    for holder in reference_holders(res.data):
        reference = holder["reference"]
        if reference.startswith("#"):
            continue
        target = index.resolve(reference, res)
        if target is not None:
            yield target


# --------------------------------------------------------------------------- the Claim


def write_bundle(
    index: ResourceIndex,
    case: Case,
    coding: Coding,
    findings: list[Finding],
    diagnoses: DiagnosisCheck,
    pack: Pack,
    *,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    created = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0).isoformat()
    entries = _Entries(index, case.patient)
    identifier = claim_identifier(case)
    preauth = case.use == "preauthorization"

    claim: dict[str, Any] = {"resourceType": "Claim", "id": identifier}
    meta: dict[str, Any] = {"tag": [{"system": PACK_TAG_SYSTEM, "code": f"{pack.name}@{pack.version}"}]}
    if preauth:
        meta["profile"] = [f"{PAS}/profile-claim"]
    claim["meta"] = meta
    claim["identifier"] = [{"system": IDENTIFIER_SYSTEM, "value": f"urn:uuid:{identifier}"}]
    claim["status"] = "active" if preauth or not holds_claim(findings) else "draft"
    claim["type"] = {"coding": [{"system": CLAIM_TYPE, "code": "professional"}]}
    claim["use"] = case.use
    claim["patient"] = entries.reference(case.patient, "Patient")
    claim["billablePeriod"] = {"start": case.session.date.isoformat(), "end": case.session.date.isoformat()}
    claim["created"] = created
    insurer = _insurer(index, case)
    if insurer is not None:
        claim["insurer"] = entries.res_reference(insurer)
    elif preauth:
        claim["insurer"] = {"display": "Payer not on record"}
    claim["provider"] = entries.reference(case.provider, "Provider not on record")
    claim["priority"] = {"coding": [{"system": PRIORITY, "code": "normal"}]}

    practitioner = index.get(case.provider) if case.provider else None
    care_team = practitioner is not None and practitioner.type in ("Practitioner", "PractitionerRole") and not preauth
    if care_team:
        claim["careTeam"] = [
            {
                "sequence": 1,
                "provider": entries.reference(case.provider, "Provider"),
                "role": {"coding": [{"system": CARE_TEAM_ROLE, "code": "primary"}]},
            }
        ]

    supporting = _supporting_info(entries, index, case, diagnoses)
    if supporting:
        claim["supportingInfo"] = supporting

    written = diagnoses.valid[: pack.diagnoses.max_on_claim]
    if written:
        claim["diagnosis"] = [
            {"sequence": i, "diagnosisCodeableConcept": {"coding": [{"system": ICD10CM, "code": dx.code}]}}
            for i, dx in enumerate(written, start=1)
        ]
    if not preauth:
        procedures = [p for p in (index.get(proc.key) for proc in case.session.procedures) if p is not None]
        if procedures:
            claim["procedure"] = [
                {
                    "sequence": i,
                    "date": case.session.date.isoformat(),
                    "procedureReference": entries.res_reference(res),
                }
                for i, res in enumerate(procedures, start=1)
            ]

    insurance: dict[str, Any] = {
        "sequence": 1,
        "focal": True,
        "coverage": entries.reference(case.coverage, "Coverage not on record"),
    }
    if case.evidence.prior_auth:
        insurance["preAuthRef"] = [case.evidence.prior_auth]
    claim["insurance"] = [insurance]

    information = [item["sequence"] for item in supporting]
    items = [
        _item(i, line, case, written, pack, information, care_team, entries)
        for i, line in enumerate(coding.lines, start=1)
    ]
    if items:
        claim["item"] = items

    body = entries.close()
    bundle: dict[str, Any] = {"resourceType": "Bundle"}
    if preauth:
        bundle["meta"] = {"profile": [f"{PAS}/profile-pas-request-bundle"]}
        bundle["identifier"] = {
            "system": IDENTIFIER_SYSTEM,
            "value": f"urn:uuid:{uuid.uuid5(NAMESPACE, 'bundle:' + identifier)}",
        }
    bundle["type"] = "collection"
    bundle["timestamp"] = created
    bundle["entry"] = [{"fullUrl": f"urn:uuid:{identifier}", "resource": claim}, *body]
    return bundle


def _insurer(index: ResourceIndex, case: Case) -> Res | None:
    coverage = index.get(case.coverage) if case.coverage else None
    if coverage is None:
        return None
    payors = coverage.data.get("payor")
    for payor in payors if isinstance(payors, list) else []:
        target = index.resolve(payor, coverage)
        if target is not None and target.type == "Organization":
            return target
    return None


def _item(
    sequence: int,
    line: ClaimLine,
    case: Case,
    diagnoses: list[Any],
    pack: Pack,
    information: list[int],
    care_team: bool,
    entries: _Entries,
) -> dict[str, Any]:
    systems = coding_tables().modifier_systems
    description = coding_tables().descriptions.get(line.code)
    item: dict[str, Any] = {}
    if case.use == "preauthorization":
        item["extension"] = [
            {
                "url": f"{PAS}/extension-serviceItemRequestType",
                "valueCodeableConcept": {
                    "coding": [{"system": X12_1525, "code": "HS", "display": "Health Services Review"}]
                },
            },
            {
                "url": f"{PAS}/extension-certificationType",
                "valueCodeableConcept": {"coding": [{"system": X12_1322, "code": "I", "display": "Initial"}]},
            },
        ]
        for key in line.procedure_keys:
            if key.startswith("ServiceRequest/"):
                item["extension"].append(
                    {
                        "url": f"{PAS}/extension-requestedService",
                        "valueReference": entries.reference(key, key),
                    }
                )
    item["sequence"] = sequence
    if care_team:
        item["careTeamSequence"] = [1]
    pointers = _pointers(line, diagnoses, pack)
    if pointers:
        item["diagnosisSequence"] = pointers
    if information:
        item["informationSequence"] = information
    if case.use == "preauthorization":
        item["category"] = {"coding": [{"system": X12_1365, "code": "2", "display": "Surgical"}]}
    coding: dict[str, Any] = {"system": CPT, "code": line.code}
    if description:
        coding["display"] = description
    item["productOrService"] = {"coding": [coding]}
    if line.modifiers:
        item["modifier"] = [{"coding": [{"system": systems[m], "code": m}]} for m in line.modifiers]
    item["servicedDate"] = case.session.date.isoformat()
    item["locationCodeableConcept"] = {"coding": [{"system": POS_SYSTEM, "code": case.place_of_service}]}
    item["quantity"] = {"value": line.quantity}
    item["bodySite"] = {"text": line.body_site_text}
    return item


def _pointers(line: ClaimLine, diagnoses: list[Any], pack: Pack) -> list[int]:
    """At most four diagnosis pointers, covered and region-matched codes first."""
    ranked = sorted(
        range(len(diagnoses)),
        key=lambda i: (
            0
            if pack.covered_for(diagnoses[i].code, line.region, line.family)
            else 1
            if line.region in dx_regions(diagnoses[i].code)
            else 2,
            i,
        ),
    )
    return [i + 1 for i in ranked[: pack.diagnoses.max_pointers_per_line]]


# --------------------------------------------------------------------------- evidence


def _supporting_info(
    entries: _Entries, index: ResourceIndex, case: Case, diagnoses: DiagnosisCheck
) -> list[dict[str, Any]]:
    infos: list[dict[str, Any]] = []

    def add(
        category: str,
        text: str,
        res: Res | None,
        *,
        code: dict[str, Any] | None = None,
        timing: dict[str, Any] | None = None,
    ) -> None:
        if res is None:
            return
        info: dict[str, Any] = {
            "sequence": len(infos) + 1,
            "category": {"coding": [{"system": INFO_CATEGORY, "code": category}]},
            "code": code or {"text": text},
        }
        if code is not None:
            info["code"] = {**code, "text": text}
        if timing:
            info.update(timing)
        info["valueReference"] = entries.res_reference(res)
        infos.append(info)

    onset = diagnoses.onset
    if onset is not None and onset.onset is not None:
        add(
            "onset",
            f"Onset of {onset.code or 'the condition treated'}",
            index.get(onset.key),
            timing={"timingDate": onset.onset.isoformat()},
        )
    if case.evidence.pain_scores:
        latest = case.evidence.pain_scores[-1]
        add(
            "info",
            _score_text("Pain score (0-10)", latest),
            _resource(index, latest.source_key),
            code={"coding": [{"system": LOINC, "code": "72514-3"}]},
            timing=_date(latest),
        )
    if case.evidence.disability_scores:
        latest_disability = max(case.evidence.disability_scores, key=lambda item: item.date or dt.date.min)
        add(
            "info",
            _score_text("Oswestry disability index", latest_disability),
            _resource(index, latest_disability.source_key),
            code={"coding": [{"system": LOINC, "code": "97909-6"}]},
            timing=_date(latest_disability),
        )
    for care in case.evidence.conservative_care:
        period = {"start": care.date.isoformat()} if care.date else {}
        if care.end:
            period["end"] = care.end.isoformat()
        add(
            "info",
            f"Conservative care tried: {care.text}",
            _resource(index, care.source_key),
            timing={"timingPeriod": period} if period else None,
        )
    for session in case.history:
        for proc in session.procedures:
            add(
                "related",
                f"Earlier facet procedure ({proc.category}) on {session.date.isoformat()}",
                index.get(proc.key),
                timing={"timingDate": session.date.isoformat()},
            )
            relief = case.reliefs.get(proc.key)
            if relief is not None and relief.percent is not None and relief.source_keys:
                add(
                    "info",
                    f"Relief after the {session.date.isoformat()} block: {relief.percent:.0f}%",
                    _resource(index, relief.source_keys[-1]),
                )
    for proc in case.session.procedures:
        guidance = label_guidance(proc.guidance)
        source = next((index.get(key) for key in proc.guidance_resources), None) or index.get(proc.key)
        add("info", f"Image guidance: {guidance}", source)
    return infos


def _resource(index: ResourceIndex, key: str | None) -> Res | None:
    return index.get(key) if key else None


def _score_text(name: str, item: EvidenceItem) -> str:
    value = "value missing" if item.value is None else f"{item.value:g}"
    return f"{name}: {value}"


def _date(item: EvidenceItem) -> dict[str, Any] | None:
    return {"timingDate": item.date.isoformat()} if item.date else None
