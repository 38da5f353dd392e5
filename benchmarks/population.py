"""A deterministic synthetic population of facet patients, written in Bulk Data layout.

The mix follows the session kinds of docs/coding.md: diagnostic medial branch blocks (a first and
a confirmatory second), radiofrequency ablations after two blocks, repeat ablations; cervical,
thoracic and lumbar; one to four levels; left, right or bilateral; Medicare and commercial
payers. Each patient has a history (conservative care, earlier sessions with relief
Observations), evidence (pain scores, a disability index), and noise the adapter passes over
(allergies, immunizations, vital signs, medication statements). About twelve resources a session.

`write_population(folder, sessions, seed)` writes one NDJSON file per resource type and returns
the number of sessions written (exactly `sessions`). The same arguments give the same bytes.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

CPT = "http://www.ama-assn.org/go/cpt"
SCT = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
POS = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"
SIDES = {"left": ("7771000", "Left"), "right": ("24028007", "Right"), "bilateral": ("51440002", "Bilateral")}
DIAGNOSTIC, THERAPEUTIC = "103693007", "277132007"
REGIONS = {
    # levels, block codes (first, second, third+), RFA codes (first, additional), spondylosis dx
    "lumbar": (
        ["L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"],
        ("64493", "64494", "64495"),
        ("64635", "64636"),
        "M47.816",
    ),
    "cervical": (
        ["C2-C3", "C3-C4", "C4-C5", "C5-C6", "C6-C7"],
        ("64490", "64491", "64492"),
        ("64633", "64634"),
        "M47.812",
    ),
    "thoracic": (["T10-T11", "T11-T12", "T12-L1"], ("64490", "64491", "64492"), ("64633", "64634"), "M47.814"),
}
PAYERS = [("medicare", "Medicare Part B")] * 3 + [
    ("aetna", "Aetna Commercial"),
    ("uhc", "UnitedHealthcare Choice Plus"),
    ("bcbs", "Blue Cross Blue Shield PPO"),
]
MEDICATIONS = [("197806", "Ibuprofen 600 MG Oral Tablet"), ("198013", "Naproxen 500 MG Oral Tablet")]
FIRST_NAMES = ["Ana", "Ben", "Chen", "Dana", "Eli", "Farah", "Gus", "Hana", "Ivan", "Jo", "Kai", "Lena"]
FAMILY_NAMES = ["Nakamura", "Okafor", "Silva", "Novak", "Haddad", "Larsen", "Moreau", "Patel", "Quinn"]


def _ref(key: str) -> dict[str, str]:
    return {"reference": key}


class _Files:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.handles: dict[str, Any] = {}
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, resource: dict[str, Any]) -> None:
        type_ = resource["resourceType"]
        if type_ not in self.handles:
            self.handles[type_] = (self.folder / f"{type_}.ndjson").open("w")
        self.handles[type_].write(json.dumps(resource, separators=(",", ":")) + "\n")

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()


def _shared(files: _Files) -> None:
    for name, display in dict(PAYERS).items():
        files.write({"resourceType": "Organization", "id": f"payer-{name}", "active": True, "name": display})
    for n in range(10):
        files.write(
            {
                "resourceType": "Organization",
                "id": f"clinic{n}",
                "active": True,
                "name": f"Spine Clinic {n}",
                "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": f"15886676{n:02d}"}],
            }
        )
        files.write(
            {
                "resourceType": "Location",
                "id": f"loc{n}",
                "status": "active",
                "name": f"Procedure suite {n}",
                "type": [{"coding": [{"system": POS, "code": ("11", "22", "24")[n % 3]}]}],
                "managingOrganization": _ref(f"Organization/clinic{n}"),
            }
        )
    for n in range(50):
        files.write(
            {
                "resourceType": "Practitioner",
                "id": f"dr{n}",
                "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": f"12453195{n:02d}"}],
                "name": [{"family": FAMILY_NAMES[n % len(FAMILY_NAMES)], "given": ["Dr"], "prefix": ["Dr."]}],
            }
        )
    for code, display in MEDICATIONS:
        files.write(
            {
                "resourceType": "Medication",
                "id": f"med{code}",
                "code": {
                    "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": code}],
                    "text": display,
                },
            }
        )


def _codes(region: str, levels: int, rfa: bool) -> list[str]:
    _all, block, ablation, _dx = REGIONS[region]
    if rfa:
        return [ablation[0], *([ablation[1]] if levels > 1 else [])]
    return list(dict.fromkeys(block[min(i, 2)] for i in range(levels)))


class _Patient:
    def __init__(self, rng: random.Random, number: int, files: _Files) -> None:
        self.rng = rng
        self.id = f"pt{number:07d}"
        self.key = f"Patient/{self.id}"
        self.files = files
        self.count = 0

    def next_id(self, prefix: str) -> str:
        self.count += 1
        return f"{self.id}-{prefix}{self.count}"

    def write(self, resource: dict[str, Any]) -> None:
        self.files.write(resource)


def _write_patient(rng: random.Random, number: int, sessions: int, files: _Files) -> None:
    p = _Patient(rng, number, files)
    region = rng.choice(["lumbar", "lumbar", "lumbar", "cervical", "thoracic"])
    level_names, _block, _rfa, spondylosis = REGIONS[region]
    levels = rng.choice([1, 1, 2, 2, 2, 3, 4]) if region != "thoracic" else rng.choice([1, 2])
    levels = min(levels, len(level_names))
    start = rng.randrange(len(level_names) - levels + 1)
    chosen = level_names[start : start + levels]
    side = rng.choice(["bilateral", "bilateral", "left", "right"])
    payer, _ = rng.choice(PAYERS)
    clinic = rng.randrange(10)
    doctor = f"Practitioner/dr{rng.randrange(50)}"
    first = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(900))
    onset = first - dt.timedelta(days=rng.choice([60, 120, 200, 400]))
    p.write(
        {
            "resourceType": "Patient",
            "id": p.id,
            "identifier": [{"system": "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14", "value": f"MRN-{number:07d}"}],
            "name": [{"family": rng.choice(FAMILY_NAMES), "given": [rng.choice(FIRST_NAMES)]}],
            "gender": rng.choice(["female", "male"]),
            "birthDate": f"{rng.randrange(1940, 1990)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
        }
    )
    p.write(
        {
            "resourceType": "Coverage",
            "id": p.next_id("cov"),
            "status": "active",
            "subscriberId": f"SUB-{number:07d}",
            "beneficiary": _ref(p.key),
            "relationship": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/subscriber-relationship", "code": "self"}]
            },
            "payor": [_ref(f"Organization/payer-{payer}")],
        }
    )
    dx = spondylosis if rng.random() < 0.85 else rng.choice(["M54.16", "M54.12", "M47.26"])
    condition = p.next_id("cond")
    p.write(
        {
            "resourceType": "Condition",
            "id": condition,
            "clinicalStatus": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
            },
            "code": {"coding": [{"system": ICD, "code": dx}]},
            "subject": _ref(p.key),
            "onsetDateTime": onset.isoformat(),
        }
    )
    if rng.random() < 0.8:
        therapy_end = first - dt.timedelta(days=rng.choice([10, 30, 60]))
        p.write(
            {
                "resourceType": "Procedure",
                "id": p.next_id("pt"),
                "status": "completed",
                "code": {"coding": [{"system": SCT, "code": "91251008"}], "text": "Physical therapy"},
                "subject": _ref(p.key),
                "performedPeriod": {
                    "start": (therapy_end - dt.timedelta(days=56)).isoformat(),
                    "end": therapy_end.isoformat(),
                },
            }
        )
    p.write(
        {
            "resourceType": "AllergyIntolerance",
            "id": p.next_id("allergy"),
            "clinicalStatus": {"coding": [{"system": ALLERGY_CLINICAL, "code": "active"}]},
            "patient": _ref(p.key),
            "code": {"text": "Penicillin"},
        }
    )
    p.write(
        {
            "resourceType": "MedicationStatement",
            "id": p.next_id("medstmt"),
            "status": "active",
            "subject": _ref(p.key),
            "medicationReference": _ref(f"Medication/med{rng.choice(MEDICATIONS)[0]}"),
        }
    )
    if rng.random() < 0.5:
        p.write(
            {
                "resourceType": "Observation",
                "id": p.next_id("odi"),
                "status": "final",
                "code": {"coding": [{"system": LOINC, "code": "97909-6"}]},
                "subject": _ref(p.key),
                "effectiveDateTime": (first - dt.timedelta(days=20)).isoformat(),
                "valueQuantity": {"value": rng.randrange(20, 60), "unit": "%"},
            }
        )
    # The session kinds in order: two diagnostic blocks, then ablations.
    day = first
    for index in range(sessions):
        rfa = index >= 2
        encounter = p.next_id("enc")
        location = f"Location/loc{clinic}"
        p.write(
            {
                "resourceType": "Encounter",
                "id": encounter,
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": _ref(p.key),
                "period": {"start": day.isoformat(), "end": day.isoformat()},
                "serviceProvider": _ref(f"Organization/clinic{clinic}"),
                "location": [{"location": _ref(location)}],
            }
        )
        p.write(
            {
                "resourceType": "Observation",
                "id": p.next_id("pain"),
                "status": "final",
                "code": {"coding": [{"system": LOINC, "code": "72514-3"}]},
                "subject": _ref(p.key),
                "effectiveDateTime": f"{(day - dt.timedelta(days=7)).isoformat()}T10:00:00-05:00",
                "valueQuantity": {"value": rng.randrange(4, 10), "unit": "{score}"},
            }
        )
        p.write(
            {
                "resourceType": "Observation",
                "id": p.next_id("bp"),
                "status": "final",
                "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
                "subject": _ref(p.key),
                "effectiveDateTime": f"{day.isoformat()}T08:00:00-05:00",
            }
        )
        p.write(
            {
                "resourceType": "Immunization",
                "id": p.next_id("imm"),
                "status": "completed",
                "vaccineCode": {"text": "Influenza"},
                "patient": _ref(p.key),
                "occurrenceDateTime": (day - dt.timedelta(days=rng.randrange(30, 300))).isoformat(),
            }
        )
        if rng.random() < 0.5:
            p.write(
                {
                    "resourceType": "DiagnosticReport",
                    "id": p.next_id("xray"),
                    "status": "final",
                    "code": {"text": "X-ray spine"},
                    "subject": _ref(p.key),
                    "effectiveDateTime": (day - dt.timedelta(days=40)).isoformat(),
                }
            )
        p.write(
            {
                "resourceType": "Observation",
                "id": p.next_id("pulse"),
                "status": "final",
                "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
                "subject": _ref(p.key),
                "effectiveDateTime": f"{day.isoformat()}T08:00:00-05:00",
                "valueQuantity": {"value": rng.randrange(55, 95), "unit": "/min"},
            }
        )
        code, display = SIDES[side]
        procedure = p.next_id("facet")
        p.write(
            {
                "resourceType": "Procedure",
                "id": procedure,
                "status": "completed",
                "category": {"coding": [{"system": SCT, "code": THERAPEUTIC if rfa else DIAGNOSTIC}]},
                "code": {"coding": [{"system": CPT, "code": c} for c in _codes(region, levels, rfa)]},
                "subject": _ref(p.key),
                "encounter": _ref(f"Encounter/{encounter}"),
                "performedDateTime": f"{day.isoformat()}T09:00:00-05:00",
                "performer": [{"actor": _ref(doctor)}],
                "bodySite": [
                    {"coding": [{"system": SCT, "code": code, "display": display}], "text": f"{level} facet joint"}
                    for level in chosen
                ],
                "reasonReference": [_ref(f"Condition/{condition}")],
            }
        )
        if not rfa:
            p.write(
                {
                    "resourceType": "Observation",
                    "id": p.next_id("relief"),
                    "status": "final",
                    "code": {"text": "Percent relief of index pain after block"},
                    "subject": _ref(p.key),
                    "partOf": [_ref(f"Procedure/{procedure}")],
                    "effectiveDateTime": f"{day.isoformat()}T14:00:00-05:00",
                    "valueQuantity": {"value": rng.choice([50, 70, 80, 85, 90]), "unit": "%", "code": "%"},
                }
            )
        day += dt.timedelta(days=rng.choice([10, 21, 28, 35, 60]) if index < 1 else rng.choice([28, 60, 200]))


def write_population(folder: Path, sessions: int, seed: int = 8) -> int:
    rng = random.Random(seed)  # noqa: S311 (a reproducible population, not a secret)
    files = _Files(folder)
    try:
        _shared(files)
        written = 0
        number = 0
        while written < sessions:
            count = min(sessions - written, rng.choice([1, 1, 2, 2, 3, 4]))
            _write_patient(rng, number, count, files)
            written += count
            number += 1
    finally:
        files.close()
    return written
