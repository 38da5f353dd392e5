"""Build realistic FHIR R4 facet cases in a few lines, for rule and coding tests.

case = CaseBuilder(dos="2026-10-15")
case.block("L4-L5", side="bilateral", intent="diagnostic")
result = case.run(payer="medicare")
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from adapter.pipeline import Options, Result, process

CPT = "http://www.ama-assn.org/go/cpt"
SCT = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
POS = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"
SIDES = {"left": "7771000", "right": "24028007", "bilateral": "51440002"}
INTENTS = {"diagnostic": "103693007", "therapeutic": "277132007"}
LUMBAR_CODES = ["64493", "64494", "64495"]
CERVICAL_CODES = ["64490", "64491", "64492"]
NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def shift(day: str, days: int) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=days)).isoformat()


class CaseBuilder:
    def __init__(
        self,
        dos: str = "2026-10-15",
        *,
        dx: str | list[str] = "M47.816",
        onset: str | None = "2025-06-01",
        payer_name: str = "Medicare Part B",
        coverage: bool = True,
        pain_score: str | None = "default",
        therapy: tuple[str, str] | None = ("2026-03-02", "2026-05-25"),
        pos: str | None = "11",
    ) -> None:
        self.dos = dos
        self.resources: list[dict[str, Any]] = [
            {"resourceType": "Patient", "id": "p1", "name": [{"family": "Test"}], "gender": "female"},
            {"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "Doctor"}]},
            {"resourceType": "Organization", "id": "clinic", "name": "Spine Clinic"},
        ]
        self.counter = 0
        if coverage:
            self.resources.append({"resourceType": "Organization", "id": "payer", "name": payer_name})
            self.resources.append(
                {
                    "resourceType": "Coverage",
                    "id": "cov",
                    "status": "active",
                    "beneficiary": {"reference": "Patient/p1"},
                    "payor": [{"reference": "Organization/payer"}],
                }
            )
        for index, code in enumerate([dx] if isinstance(dx, str) else dx):
            condition: dict[str, Any] = {
                "resourceType": "Condition",
                "id": f"cond{index + 1}",
                "code": {"coding": [{"system": ICD, "code": code}]},
                "subject": {"reference": "Patient/p1"},
            }
            if onset:
                condition["onsetDateTime"] = onset
            self.resources.append(condition)
        if pain_score is not None:
            when = shift(dos, -7) if pain_score == "default" else pain_score
            self.resources.append(self.pain_observation("pain-baseline", f"{when}T08:00:00-05:00", 7))
        if therapy:
            self.resources.append(
                {
                    "resourceType": "Procedure",
                    "id": "pt",
                    "status": "completed",
                    "code": {"coding": [{"system": SCT, "code": "91251008"}], "text": "Physical therapy"},
                    "subject": {"reference": "Patient/p1"},
                    "performedPeriod": {"start": therapy[0], "end": therapy[1]},
                }
            )
        if pos:
            self.resources.append(
                {"resourceType": "Location", "id": "loc", "type": [{"coding": [{"system": POS, "code": pos}]}]}
            )
            self.resources.append(
                {
                    "resourceType": "Encounter",
                    "id": "enc",
                    "status": "finished",
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                    "subject": {"reference": "Patient/p1"},
                    "period": {"start": dos, "end": dos},
                    "serviceProvider": {"reference": "Organization/clinic"},
                    "location": [{"location": {"reference": "Location/loc"}}],
                }
            )

    def _id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def pain_observation(self, id_: str, when: str, value: float, part_of: str | None = None) -> dict[str, Any]:
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "id": id_,
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "72514-3"}]},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": "{score}"},
        }
        if part_of:
            obs["partOf"] = [{"reference": part_of}]
        return obs

    def procedure(
        self,
        levels: list[str] | str | None,
        *,
        side: str | None = "bilateral",
        intent: str | None = "diagnostic",
        codes: list[str] | None = None,
        date: str | None = None,
        status: str = "completed",
        text: str | None = None,
        note: str | None = None,
        rfa: bool = False,
        performer: bool = True,
        resource_type: str = "Procedure",
    ) -> str:
        levels = [levels] if isinstance(levels, str) else (levels or [])
        if codes is None:
            lumbar = any(level.startswith(("L", "T12-L1")) for level in levels) or not levels
            table = (
                (["64635", "64636", "64636"] if rfa else LUMBAR_CODES)
                if lumbar
                else (["64633", "64634", "64634"] if rfa else CERVICAL_CODES)
            )
            codes = [table[min(i, 2)] for i in range(len(levels))] or [table[0]]
            codes = list(dict.fromkeys(codes))
        id_ = self._id("proc")
        resource: dict[str, Any] = {
            "resourceType": resource_type,
            "id": id_,
            "status": status,
            "subject": {"reference": "Patient/p1"},
        }
        code: dict[str, Any] = {}
        if codes:
            code["coding"] = [{"system": CPT, "code": c} for c in codes]
        if text:
            code["text"] = text
        resource["code"] = code
        when = date or self.dos
        if resource_type == "Procedure":
            resource["performedDateTime"] = f"{when}T09:00:00-05:00"
            if performer:
                resource["performer"] = [{"actor": {"reference": "Practitioner/dr1"}}]
            if intent:
                resource["category"] = {"coding": [{"system": SCT, "code": INTENTS[intent]}]}
            if when == self.dos:
                resource["encounter"] = {"reference": "Encounter/enc"}
        else:
            resource["intent"] = "order"
            resource["occurrenceDateTime"] = when
            if performer:
                resource["requester"] = {"reference": "Practitioner/dr1"}
            if intent:
                resource["category"] = [{"coding": [{"system": SCT, "code": INTENTS[intent]}]}]
        sites = []
        for level in levels:
            site: dict[str, Any] = {"text": f"{level} facet joint"}
            if side:
                site["coding"] = [{"system": SCT, "code": SIDES[side]}]
            sites.append(site)
        if sites:
            resource["bodySite"] = sites
        if note:
            resource["note"] = [{"text": note}]
        self.resources.append(resource)
        return f"{resource_type}/{id_}"

    def block(self, levels: list[str] | str, *, relief: float | None = None, **kwargs: Any) -> str:
        """A facet procedure, with an optional percent-relief Observation linked by partOf."""
        key = self.procedure(levels, **kwargs)
        if relief is not None:
            self.resources.append(
                {
                    "resourceType": "Observation",
                    "id": self._id("relief"),
                    "status": "final",
                    "code": {"text": "Percent pain relief after block"},
                    "subject": {"reference": "Patient/p1"},
                    "partOf": [{"reference": key}],
                    "effectiveDateTime": f"{kwargs.get('date') or self.dos}T14:00:00-05:00",
                    "valueQuantity": {"value": relief, "unit": "%", "code": "%"},
                }
            )
        return key

    def add(self, resource: dict[str, Any]) -> None:
        self.resources.append(resource)

    def bundle(self) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in self.resources]}

    def raw(self) -> bytes:
        return json.dumps(self.bundle()).encode()

    def run(self, **options: Any) -> Result:
        options.setdefault("now", NOW)
        return process(self.raw(), Options(**options))


def with_pas_parties(case: CaseBuilder, *, urgent: str | None = None) -> CaseBuilder:
    """What a PAS request needs of the record: identifiers on the parties, a member id, the
    relationship, the clinic as the order's performer (`urgent`: that order's key, made urgent)."""
    for resource in case.resources:
        kind, id_ = resource["resourceType"], resource.get("id")
        if kind == "Patient":
            resource["identifier"] = [{"system": "urn:oid:1.2.3.4.5", "value": "MRN-1"}]
            resource["birthDate"] = "1950-02-03"
            resource["name"] = [{"family": "Test", "given": ["Pat"]}]
        elif kind == "Coverage":
            resource["subscriberId"] = "1EG4TE5MK73"
            resource["relationship"] = {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/subscriber-relationship", "code": "self"}]
            }
        elif kind == "Organization" and id_ == "payer":
            resource["identifier"] = [{"system": "urn:oid:2.16.840.1.113883.6.300", "value": "15999"}]
        elif kind == "Organization" and id_ == "clinic":
            resource["identifier"] = [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1093817462"}]
        elif kind == "ServiceRequest":
            resource["performer"] = [{"reference": "Organization/clinic"}]
            if f"{kind}/{id_}" == urgent:
                resource["priority"] = "urgent"
    return case


def rule_ids(result: Result) -> set[str]:
    return {finding.rule_id for finding in result.findings}


def lines(result: Result) -> list[tuple[str, frozenset[str], int]]:
    found = [(line.code, frozenset(line.modifiers), line.quantity) for line in result.coding.lines]
    return sorted(found, key=lambda item: (item[0], sorted(item[1]), item[2]))
