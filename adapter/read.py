"""Read: FHIR R4 resources → the coding model (contract §2).

Entry point: `read_case(index, options)`. It finds the facet procedures, picks the latest
session of its patient, and reads that session's levels, sides, technique, intent, guidance,
date and place, with the patient's diagnoses, evidence and history.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from .data import load_toml
from .errors import NoDateOfServiceError, NoFacetProcedureError, UsageError
from .fhirpath import (
    CPT_LIKE_SYSTEMS,
    ICD10CM_LIKE,
    LOINC,
    POS_LIKE,
    SNOMED,
    add_months,
    codings,
    concept_text,
    concept_words,
    dicts,
    get_dict,
    get_str,
    note_texts,
    parse_date,
    parse_instant,
    period_start_end,
    reference_of,
)
from .icd10 import normalize
from .ingest import Res, ResourceIndex
from .levels import TextLevels, read_text
from .model import (
    Case,
    Diagnosis,
    Evidence,
    EvidenceItem,
    FacetProcedure,
    Family,
    GuidanceValue,
    Level,
    LevelFinding,
    LevelSource,
    Relief,
    Session,
    Use,
)
from .spine import Side, spine
from .wording import guidance_of, intent_of, says_facet, technique_of

TARGET_BODY_STRUCTURE = "http://hl7.org/fhir/StructureDefinition/procedure-targetBodyStructure"
DIAGNOSTIC_SCT = "103693007"
THERAPEUTIC_SCT = "277132007"
PAIN_LOINC = "72514-3"
DISABILITY_LOINC = "97909-6"

# Procedure statuses (contract §2.1): only `completed` is billed and counted in history.
_COUNTED_PROCEDURE = frozenset({"completed"})
_PLANNED_REQUEST = frozenset({"active", "draft"})
_REFUTED = frozenset({"refuted", "entered-in-error"})
_INACTIVE = frozenset({"inactive", "resolved", "remission"})
_VOID_OBSERVATION = frozenset({"entered-in-error", "cancelled"})
_VOID_CARE = frozenset({"entered-in-error", "not-done", "not-taken", "cancelled", "stopped"})
_PROVIDER_TYPES = frozenset({"Practitioner", "PractitionerRole", "Organization"})
_USED_PATIENT_TYPES = (
    "Procedure",
    "ServiceRequest",
    "Condition",
    "Observation",
    "Coverage",
    "Encounter",
    "MedicationStatement",
    "MedicationRequest",
    "ClaimResponse",
)


@dataclass(frozen=True, slots=True)
class ReadOptions:
    use: Use = "claim"
    pos: str | None = None
    prior_auth: str | None = None
    # Claim the session of this facet procedure ("Procedure/123") instead of the latest session:
    # what a server notification about one procedure asks for.
    focus: str | None = None


@dataclass(frozen=True, slots=True)
class CodeTables:
    facet_codes: dict[str, dict[str, Any]]
    imaging: dict[str, str]
    snomed_procedures: dict[str, dict[str, Any]]


@cache
def code_tables() -> CodeTables:
    raw = load_toml("cpt.toml")
    return CodeTables(
        facet_codes={str(k): dict(v) for k, v in raw["codes"].items()},
        imaging={str(k): str(v) for k, v in raw["imaging"].items()},
        snomed_procedures={str(k): dict(v) for k, v in raw.get("snomed_procedures", {}).items()},
    )


# --------------------------------------------------------------------------- entry point


def read_case(index: ResourceIndex, options: ReadOptions) -> Case:
    tables = code_tables()
    candidates = [res for res in index.of_type("Procedure", "ServiceRequest") if _is_facet(res, tables)]
    if not candidates:
        raise NoFacetProcedureError(
            "The input has no facet procedure (CPT 64490-64495, 64633-64636, 0213T-0218T, or facet / "
            "zygapophyseal / medial branch wording) to code."
        )
    for res in candidates:
        index.validate_used(res)
    procedures = [_read_procedure(index, res, options.use, tables) for res in candidates]

    wanted_type = "Procedure" if options.use == "claim" else "ServiceRequest"
    billable = [p for p in procedures if p.billable and p.resource_type == wanted_type]
    if not billable:
        if options.use == "claim":
            raise NoFacetProcedureError(
                "--use claim needs a completed facet Procedure; the input has none "
                "(ServiceRequests are planned sessions: use --use preauthorization)."
            )
        raise NoFacetProcedureError(
            "--use preauthorization needs an active or draft facet ServiceRequest; the input has none."
        )
    dated = [p for p in billable if p.date is not None]
    if not dated:
        names = ", ".join(p.key for p in billable[:5])
        raise NoDateOfServiceError(f"The facet procedure(s) {names} have no date of service and cannot be claimed.")
    if options.focus is not None:
        focused = next((p for p in billable if p.key == options.focus), None)
        if focused is None:
            raise NoFacetProcedureError(f"{options.focus} is not a billable facet procedure of the input.")
        if focused.date is None:
            raise NoDateOfServiceError(f"{focused.key} has no date of service and cannot be claimed.")
        date_of_service, patient = focused.date, focused.patient
    else:
        date_of_service, patient = max((p.date, p.patient) for p in dated if p.date is not None)
    session_procs = sorted(
        (p for p in dated if p.patient == patient and p.date == date_of_service), key=lambda p: p.key
    )
    session = Session(patient=patient, date=date_of_service, procedures=session_procs)

    history_by_date: dict[dt.date, list[FacetProcedure]] = {}
    for proc in procedures:
        if (
            proc.patient == patient
            and proc.resource_type == "Procedure"
            and proc.status in _COUNTED_PROCEDURE
            and proc.date is not None
            and proc not in session_procs
        ):
            history_by_date.setdefault(proc.date, []).append(proc)
    history = [
        Session(patient=patient, date=day, procedures=sorted(procs, key=lambda p: p.key))
        for day, procs in sorted(history_by_date.items())
        if day <= date_of_service
    ]

    patient_res = index.get(patient) if patient.startswith("Patient/") else None
    if patient_res is not None:
        index.validate_used(patient_res)
    reader = _PatientReader(index, patient, date_of_service)
    # Everything of this patient's record the adapter reads must be valid R4; other patients'
    # data and resource types the adapter does not use are passed over.
    for res in reader.own(*_USED_PATIENT_TYPES):
        index.validate_used(res)
    encounter = _session_encounter(index, reader, session)
    diagnoses = reader.diagnoses(session, encounter)
    pos, pos_source, pos_path = _place_of_service(index, options, encounter)
    coverage, payer_names = reader.coverage()
    history_procs = [p for s in history for p in s.procedures]
    return Case(
        use=options.use,
        patient=patient,
        patient_resource=patient_res.key if patient_res is not None else None,
        session=session,
        history=history,
        diagnoses=diagnoses,
        evidence=reader.evidence(options.prior_auth),
        coverage=coverage,
        payer_names=payer_names,
        provider=_provider(index, session, encounter),
        encounter=encounter.key if encounter is not None else None,
        place_of_service=pos,
        place_of_service_source=pos_source,
        place_of_service_path=pos_path,
        guidance_resources=sorted({key for p in session.procedures for key in p.guidance_resources}),
        reliefs={p.key: reader.relief(p) for p in history_procs},
        radiculopathy=[d for d in diagnoses if is_radiculopathy(d.code)],
        undated=[
            p
            for p in procedures
            if p.patient == patient and p.date is None and (p.billable or p.status in _COUNTED_PROCEDURE)
        ],
    )


# --------------------------------------------------------------------------- facet procedures


def _facet_cpt(concept: Any, tables: CodeTables) -> list[tuple[int, str]]:
    return [
        (i, code)
        for i, system, code, _ in codings(concept)
        if system in CPT_LIKE_SYSTEMS and code is not None and code.upper() in tables.facet_codes
    ]


def _is_facet(res: Res, tables: CodeTables) -> bool:
    code = res.data.get("code")
    if _facet_cpt(code, tables):
        return True
    if any(system in CPT_LIKE_SYSTEMS for _, system, _, _ in codings(code)):
        # Coded with another CPT/HCPCS code (77003 guidance, 97110 exercise...): not a facet procedure,
        # whatever its text says ("fluoroscopic guidance for facet injection").
        return False
    if any(system == SNOMED and value in tables.snomed_procedures for _, system, value, _ in codings(code)):
        return True
    if says_facet(concept_words(code)):
        return True
    return any(says_facet(text) for _, text in note_texts(res.data))


def _texts(res: Res) -> list[tuple[str, str]]:
    """(text, path) of code.text (else the code's displays) and each note, in reading order."""
    found: list[tuple[str, str]] = []
    code = res.data.get("code")
    words = concept_words(code)
    if words:
        found.append((words, f"{res.path}.code.text" if concept_text(code) else f"{res.path}.code"))
    found.extend((text, f"{res.path}.note[{i}].text") for i, text in note_texts(res.data))
    return found


def _read_procedure(index: ResourceIndex, res: Res, use: Use, tables: CodeTables) -> FacetProcedure:
    data = res.data
    status = get_str(data, "status")
    if res.type == "Procedure":
        billable = status in _COUNTED_PROCEDURE
        raw_date, _, element = period_start_end(data, "performed")
    else:
        billable = status in _PLANNED_REQUEST
        raw_date, _, element = period_start_end(data, "occurrence")
        if raw_date is None and isinstance(data.get("authoredOn"), str):
            raw_date, element = data["authoredOn"], "authoredOn"
    date = parse_date(raw_date)
    date_path = None
    if element:
        date_path = f"{res.path}.{element}" + (".start" if element.endswith("Period") else "")

    code = data.get("code")
    cpt = []
    for _, value in _facet_cpt(code, tables):
        if value.upper() not in cpt:
            cpt.append(value.upper())
    imaging = [value for _, system, value, _ in codings(code) if system in CPT_LIKE_SYSTEMS and value in tables.imaging]
    texts = _texts(res)
    technique = next((t for t in (technique_of(text) for text, _ in texts) if t), None)
    family: Family
    if cpt:
        family = tables.facet_codes[cpt[0]]["family"]
        if family == "ablation":
            technique = "radiofrequency-ablation"
        elif technique == "radiofrequency-ablation":
            technique = None
    else:
        snomed = next(
            (
                tables.snomed_procedures[v]
                for _, s, v, _ in codings(code)
                if s == SNOMED and v in tables.snomed_procedures
            ),
            None,
        )
        if snomed is not None:
            family = snomed["family"]
            technique = technique or snomed.get("technique")
        else:
            family = "ablation" if technique == "radiofrequency-ablation" else "injection"

    intent, intent_path = _intent(res, texts)
    proc = FacetProcedure(
        key=res.key,
        resource_type=res.type,
        id=res.id,
        path=res.path,
        status=status,
        billable=billable,
        patient=_patient_key(index, res),
        date=date,
        date_path=date_path,
        cpt_codes=cpt,
        imaging_codes=imaging,
        code_path=f"{res.path}.code",
        family=family,
        technique=technique,
        intent=intent,
        intent_path=intent_path,
        guidance="unknown",
        guidance_path=None,
    )
    proc.levels, proc.level_source = _levels(index, res, texts, cpt, tables)
    proc.guidance, proc.guidance_path, proc.guidance_resources = _guidance(index, res, proc, texts, tables)
    proc.performer = _first_actor(data.get("performer"), index, res)
    proc.requester = _provider_ref(data.get("requester"), index, res)
    encounter = get_dict(data, "encounter") or get_dict(data, "context")
    proc.encounter = reference_of(encounter)
    for _, reason in dicts(data.get("reasonReference")):
        target = index.resolve(reason, res)
        if target is not None and target.type == "Condition":
            proc.reason_references.append(target.key)
    for i, reason in dicts(data.get("reasonCode")):
        for j, system, reason_code, _ in codings(reason):
            if system in ICD10CM_LIKE and reason_code:
                proc.reason_codes.append((normalize(reason_code), f"{res.path}.reasonCode[{i}].coding[{j}]"))
    return proc


def _patient_key(index: ResourceIndex, res: Res) -> str:
    return _patient_of(index, res, res.data.get("subject")) or "Patient/(unknown)"


def _intent(res: Res, texts: list[tuple[str, str]]) -> tuple[Any, str | None]:
    categories: list[tuple[int | None, Any]] = [(i, c) for i, c in dicts(res.data.get("category"))]
    if isinstance(res.data.get("category"), dict):
        categories = [(None, res.data["category"])]
    for i, concept in categories:
        base = f"{res.path}.category" + (f"[{i}]" if i is not None else "")
        codes = {value for _, system, value, _ in codings(concept) if system == SNOMED}
        diagnostic, therapeutic = DIAGNOSTIC_SCT in codes, THERAPEUTIC_SCT in codes
        if diagnostic != therapeutic:
            return ("diagnostic" if diagnostic else "therapeutic"), base
    for i, concept in categories:
        base = f"{res.path}.category" + (f"[{i}]" if i is not None else "")
        decided = intent_of(concept_text(concept))
        if decided:
            return decided, f"{base}.text"
    for text, path in texts:
        decided = intent_of(text)
        if decided:
            return decided, path
    return None, None


# --------------------------------------------------------------------------- levels and sides


def _level(joint: str) -> Level:
    table = spine()
    return Level(joint=joint, region=table.region_of[joint], ordinal=table.joint_index[joint])


def _concept_sides(concept: Any) -> set[Side]:
    table = spine()
    return {
        table.snomed_laterality[value]
        for _, system, value, _ in codings(concept)
        if system == SNOMED and value in table.snomed_laterality
    }


def _concept_joints(concept: Any) -> list[str]:
    table = spine()
    return [
        value_joint
        for _, system, value, _ in codings(concept)
        if system == SNOMED and (value_joint := table.snomed_joints.get(value or "")) is not None
    ]


def _levels_of_concept(concept: Any, qualifiers: Iterable[Any] = ()) -> tuple[dict[str, set[Side]], set[Side]]:
    """Joints (with sides) named by one body-site concept, and its sides when it names none."""
    sides = _concept_sides(concept)
    for qualifier in qualifiers:
        sides |= _concept_sides(qualifier)
        qualifier_text = read_text(concept_words(qualifier))
        sides |= qualifier_text.whole_sides
    text = read_text(concept_text(concept) or _non_laterality_displays(concept))
    joints: dict[str, set[Side]] = {}
    for joint in _concept_joints(concept):
        joints.setdefault(joint, set()).update(sides | text.whole_sides)
    for mention in text.levels:
        found = joints.setdefault(mention.joint, set())
        if mention.side:
            found.add(mention.side)
        found.update(sides)
    if joints:
        for joint_sides in joints.values():
            if not joint_sides:
                joint_sides.update(text.whole_sides)
        return joints, set()
    return {}, sides | text.whole_sides


def _non_laterality_displays(concept: Any) -> str | None:
    table = spine()
    displays = [
        display
        for _, system, value, display in codings(concept)
        if display and not (system == SNOMED and value in table.snomed_laterality)
    ]
    return "; ".join(displays) if displays else None


def _levels(
    index: ResourceIndex, res: Res, texts: list[tuple[str, str]], cpt: list[str], tables: CodeTables
) -> tuple[list[LevelFinding], LevelSource | None]:
    whole_sides: set[Side] = set()
    found: dict[str, LevelFinding] = {}
    source: LevelSource | None = None

    def add(joint: str, sides: set[Side], kind: LevelSource, path: str) -> None:
        if joint in found:
            found[joint].sides |= sides
        else:
            found[joint] = LevelFinding(_level(joint), set(sides), kind, path)

    for i, concept in dicts(res.data.get("bodySite")):
        joints, sides = _levels_of_concept(concept)
        whole_sides |= sides
        for joint, joint_sides in joints.items():
            add(joint, joint_sides, "bodySite", f"{res.path}.bodySite[{i}]")
    if found:
        source = "bodySite"
    if not found:
        for i, ext in dicts(res.data.get("extension")):
            if get_str(ext, "url") != TARGET_BODY_STRUCTURE:
                continue
            target = index.resolve(ext.get("valueReference"), res)
            if target is None or target.type != "BodyStructure":
                continue
            index.validate_used(target)
            location = target.data.get("location")
            qualifiers = [q for _, q in dicts(target.data.get("locationQualifier"))]
            joints, sides = _levels_of_concept(location, qualifiers)
            if not joints and get_str(target.data, "description"):
                described = read_text(target.data["description"])
                joints = {m.joint: ({m.side} if m.side else set()) | sides for m in described.levels}
            whole_sides |= sides
            for joint, joint_sides in joints.items():
                add(joint, joint_sides, "bodyStructure", f"{res.path}.extension[{i}]")
        if found:
            source = "bodyStructure"

    text_readings: list[tuple[TextLevels, str]] = [(read_text(text), path) for text, path in texts]
    text_joint_sides: dict[str, set[Side]] = {}
    for reading, _ in text_readings:
        whole_sides |= reading.whole_sides
        for joint, sides in reading.joint_sides.items():
            text_joint_sides.setdefault(joint, set()).update(sides)

    if not found:
        # Medial-branch wording and level wording are both free text; a record that uses both
        # (a joint name and the nerves that supply it) names the union.
        for reading, path in text_readings:
            for mention in reading.levels:
                sides = {mention.side} if mention.side else set()
                add(mention.joint, sides, "nerve" if mention.kind == "nerve" else "text", path)
        if found:
            source = "nerve" if any(f.source == "nerve" for f in found.values()) else "text"

    levels = list(found.values())
    if not levels and cpt:
        levels = _cpt_count_levels(res, cpt, tables)
        source = "cpt" if levels else None

    for finding in levels:
        # A side the text gives on this very level joins the level's own ("left and right for one
        # level, from any sources, make it bilateral"); a side given for the whole procedure only
        # fills a level that has none.
        if finding.level.joint:
            finding.sides |= text_joint_sides.get(finding.level.joint, set())
        if not finding.sides:
            finding.sides |= whole_sides
    return levels, source


def _cpt_count_levels(res: Res, cpt: list[str], tables: CodeTables) -> list[LevelFinding]:
    """Unnamed levels from the CPT codes: 64493 = one level, 64493 + 64494 = two, ..."""
    positions: dict[tuple[str, int], str] = {}
    for code in cpt:
        row = tables.facet_codes[code]
        position = int(row["position"]) or 2  # an RFA add-on adds at least the second joint
        positions.setdefault((str(row["region"]), position), code)
    levels: list[LevelFinding] = []
    for (region, position), _code in sorted(positions.items(), key=lambda item: item[0][1]):
        level = Level(joint=None, region=region, ordinal=position)  # type: ignore[arg-type]
        levels.append(LevelFinding(level, set(), "cpt", f"{res.path}.code"))
    return levels


# --------------------------------------------------------------------------- guidance


def _guidance(
    index: ResourceIndex, res: Res, proc: FacetProcedure, texts: list[tuple[str, str]], tables: CodeTables
) -> tuple[GuidanceValue, str | None, list[str]]:
    linked: list[tuple[str, Res, str]] = []
    for other in index.of_type("Procedure"):
        if other is res or get_str(other.data, "status") in ("entered-in-error", "not-done"):
            continue
        kinds = [
            (tables.imaging[value], f"{other.path}.code.coding[{i}]")
            for i, system, value, _ in codings(other.data.get("code"))
            if system in CPT_LIKE_SYSTEMS and value in tables.imaging
        ]
        if not kinds:
            continue
        part_of = any(index.resolve(ref, other) is res for _, ref in dicts(other.data.get("partOf")))
        same_day = (
            proc.date is not None
            and parse_date(period_start_end(other.data, "performed")[0]) == proc.date
            and _patient_key(index, other) == proc.patient
        )
        if part_of or same_day:
            index.validate_used(other)
            linked.extend((kind, other, path) for kind, path in kinds)
    if linked:
        kinds_found = [kind for kind, _, _ in linked]
        chosen = next((k for k in ("fluoroscopy", "ct", "ultrasound") if k in kinds_found), kinds_found[0])
        path = next(path for kind, _, path in linked if kind == chosen)
        return chosen, path, sorted({other.key for _, other, _ in linked})  # type: ignore[return-value]
    own = [tables.imaging[code] for code in proc.imaging_codes]
    if own:
        return own[0], proc.code_path, []  # type: ignore[return-value]
    for text, path in texts:
        said = guidance_of(text, note=".note[" in path)
        if said:
            return said, path, []
    if proc.cpt_codes:
        if any(tables.facet_codes[code]["ultrasound"] for code in proc.cpt_codes):
            return "ultrasound", proc.code_path, []
        return "fluoroscopy-or-ct", proc.code_path, []
    return "unknown", None, []


# --------------------------------------------------------------------------- people and places


def _provider_ref(value: Any, index: ResourceIndex, context: Res) -> str | None:
    ref = reference_of(value)
    if not ref:
        return None
    target = index.resolve(ref, context)
    if target is not None:
        return target.key if target.type in _PROVIDER_TYPES else None
    head = ref.rstrip("/").split("/")
    return ref if len(head) >= 2 and head[-2] in _PROVIDER_TYPES else None


def _first_actor(performers: Any, index: ResourceIndex, context: Res) -> str | None:
    for _, performer in dicts(performers):
        if "actor" in performer:
            found = _provider_ref(performer.get("actor"), index, context)
        else:
            found = _provider_ref(performer, index, context)
        if found:
            return found
    return None


def _provider(index: ResourceIndex, session: Session, encounter: Res | None) -> str | None:
    for proc in session.procedures:
        if proc.performer:
            return proc.performer
    for proc in session.procedures:
        if proc.requester:
            return proc.requester
    if encounter is not None:
        return _provider_ref(encounter.data.get("serviceProvider"), index, encounter)
    return None


def _session_encounter(index: ResourceIndex, reader: _PatientReader, session: Session) -> Res | None:
    for proc in session.procedures:
        if proc.encounter:
            res = index.get(proc.key)
            target = index.resolve(proc.encounter, res)
            if target is not None and target.type == "Encounter":
                index.validate_used(target)
                return target
    for encounter in reader.own("Encounter"):
        period = get_dict(encounter.data, "period")
        start_day = parse_date(period.get("start"))
        end_day = parse_date(period.get("end")) or start_day
        if start_day is not None and end_day is not None and start_day <= session.date <= end_day:
            index.validate_used(encounter)
            return encounter
    return None


def _place_of_service(index: ResourceIndex, options: ReadOptions, encounter: Res | None) -> tuple[str, Any, str | None]:
    if options.pos is not None:
        return options.pos, "option", None
    if encounter is not None:
        for _, entry in dicts(encounter.data.get("location")):
            location = index.resolve(entry.get("location"), encounter)
            if location is None or location.type != "Location":
                continue
            index.validate_used(location)
            for j, concept in dicts(location.data.get("type")):
                for k, system, value, _ in codings(concept):
                    if system in POS_LIKE and value and value.isdigit() and len(value) == 2:
                        return value, "location", f"{location.path}.type[{j}].coding[{k}]"
    return "11", "default", None


def validate_pos(value: str) -> str:
    if not (len(value) == 2 and value.isdigit()) or value == "00":
        raise UsageError(
            f"--pos must be a two-digit CMS place-of-service code (for example 11, 22, 24), not {value!r}."
        )
    return value


# --------------------------------------------------------------------------- the patient's record


def is_radiculopathy(code: str) -> bool:
    compact = code.replace(".", "").upper()
    return compact.startswith(("M541", "M472", "M501", "M511", "M543", "M544")) or compact == "M48062"


class _PatientReader:
    """The patient's Conditions, Observations, care history, Coverage and authorizations."""

    def __init__(self, index: ResourceIndex, patient: str, date_of_service: dt.date) -> None:
        self.index = index
        self.patient = patient
        self.dos = date_of_service

    def own(self, *types: str) -> list[Res]:
        """The patient's resources of these types, contained ones included (they must resolve too)."""
        found = []
        for res in self.index.of_type(*types, contained=True):
            subject = res.data.get("subject") or res.data.get("patient") or res.data.get("beneficiary")
            if _patient_of(self.index, res, subject) == self.patient:
                found.append(res)
        return found

    # -- diagnoses
    def diagnoses(self, session: Session, encounter: Res | None) -> list[Diagnosis]:
        reason_keys = [key for p in session.procedures for key in p.reason_references]
        encounter_keys: list[str] = []
        if encounter is not None:
            for _, entry in dicts(encounter.data.get("diagnosis")):
                target = self.index.resolve(entry.get("condition"), encounter)
                if target is not None and target.type == "Condition":
                    encounter_keys.append(target.key)
        found: dict[str, Diagnosis] = {}
        ordered: list[tuple[int, int, Diagnosis]] = []
        for position, res in enumerate(self.own("Condition")):
            self.index.validate_used(res)
            dx = self._condition(res)
            if dx is None:
                continue
            from_encounter = res.key in encounter_keys or (
                encounter is not None and self.index.resolve(res.data.get("encounter"), res) is encounter
            )
            rank = 0 if res.key in reason_keys else (1 if from_encounter else 2)
            order = reason_keys.index(res.key) if res.key in reason_keys else position
            dx.from_reason, dx.from_encounter = rank == 0, from_encounter
            ordered.append((rank, order, dx))
        # reasonReference before reasonCode: a Condition carries onset and status, a bare code does not.
        position = len(reason_keys)
        for proc in session.procedures:
            for code, path in proc.reason_codes:
                position += 1
                ordered.append(
                    (0, position, Diagnosis(code=code, source_key=None, path=path, from_reason=True, owner=proc.key))
                )
        for _, _, dx in sorted(ordered, key=lambda item: (item[0], item[1])):
            if dx.code in found:
                existing = found[dx.code]
                if existing.onset is None and dx.onset is not None:
                    existing.onset, existing.onset_path, existing.source_key = (
                        dx.onset,
                        dx.onset_path,
                        dx.source_key,
                    )
                continue
            found[dx.code] = dx
        return list(found.values())

    def _condition(self, res: Res) -> Diagnosis | None:
        data = res.data
        verification = {v for _, _, v, _ in codings(data.get("verificationStatus"))}
        if verification & _REFUTED:
            return None
        clinical = {v for _, _, v, _ in codings(data.get("clinicalStatus"))}
        abatement_raw = data.get("abatementDateTime")
        if abatement_raw is None and isinstance(data.get("abatementPeriod"), dict):
            abatement_raw = data["abatementPeriod"].get("end") or data["abatementPeriod"].get("start")
        abatement = parse_date(abatement_raw)
        if abatement is not None and abatement < self.dos:
            return None
        has_abatement = any(key.startswith("abatement") for key in data)
        if clinical & _INACTIVE and not has_abatement:
            return None
        code = data.get("code")
        chosen = next(((i, value) for i, system, value, _ in codings(code) if system in ICD10CM_LIKE and value), None)
        if chosen is None:
            return None
        onset, onset_path = None, None
        for element in ("onsetDateTime",):
            if element in data:
                onset, onset_path = parse_date(data[element]), f"{res.path}.{element}"
        if onset is None and isinstance(data.get("onsetPeriod"), dict):
            onset = parse_date(data["onsetPeriod"].get("start"))
            onset_path = f"{res.path}.onsetPeriod.start" if onset else None
        if onset is None and "recordedDate" in data:
            onset, onset_path = parse_date(data["recordedDate"]), f"{res.path}.recordedDate"
        if onset is None:
            onset_path = None
        return Diagnosis(
            code=normalize(chosen[1]),
            source_key=res.key,
            path=f"{res.path}.code.coding[{chosen[0]}]",
            onset=onset,
            onset_path=onset_path,
            owner=res.key,
        )

    # -- evidence
    def evidence(self, prior_auth_option: str | None) -> Evidence:
        evidence = Evidence()
        window_start = add_months(self.dos, -12)
        for res in self.own("Observation"):
            data = res.data
            if get_str(data, "status") in _VOID_OBSERVATION:
                continue
            code = data.get("code")
            loinc = {value for _, system, value, _ in codings(code) if system == LOINC}
            if not loinc & {PAIN_LOINC, DISABILITY_LOINC}:
                continue
            self.index.validate_used(res)
            when_raw, _, element = period_start_end(data, "effective")
            when = parse_date(when_raw) or parse_date(data.get("issued"))
            if when is None or when > self.dos:
                continue
            quantity = get_dict(data, "valueQuantity")
            value = quantity.get("value") if isinstance(quantity.get("value"), (int, float)) else None
            if value is None and isinstance(data.get("valueInteger"), int):
                value = data["valueInteger"]
            item = EvidenceItem(
                kind="pain-score" if PAIN_LOINC in loinc else "disability-score",
                source_key=res.key,
                path=f"{res.path}.value" if element is None else f"{res.path}.{element}",
                date=when,
                value=float(value) if value is not None else None,
                unit=get_str(quantity, "unit"),
            )
            if PAIN_LOINC in loinc:
                if when >= window_start:
                    evidence.pain_scores.append(item)
            else:
                evidence.disability_scores.append(item)
        evidence.pain_scores.sort(key=lambda item: item.date or dt.date.min)
        evidence.conservative_care = self._conservative_care()
        evidence.conservative_days = _care_days(evidence.conservative_care, self.dos)
        if prior_auth_option:
            evidence.prior_auth, evidence.prior_auth_source = prior_auth_option, "option"
        else:
            for res in self.own("ClaimResponse"):
                data = res.data
                if get_str(data, "use") != "preauthorization" or get_str(data, "outcome") != "complete":
                    continue
                number = get_str(data, "preAuthRef")
                if not number:
                    continue
                period = get_dict(data, "preAuthPeriod")
                start, end = parse_date(period.get("start")), parse_date(period.get("end"))
                if (start and self.dos < start) or (end and self.dos > end):
                    continue
                self.index.validate_used(res)
                evidence.prior_auth, evidence.prior_auth_source = number, res.key
                break
        return evidence

    def _conservative_care(self) -> list[EvidenceItem]:
        vocab = care_vocabulary()
        items: list[EvidenceItem] = []
        for res in self.own("Procedure", "MedicationStatement", "MedicationRequest"):
            data = res.data
            if get_str(data, "status") in _VOID_CARE:
                continue
            if res.type == "Procedure":
                concept = data.get("code")
                start_raw, end_raw, element = period_start_end(data, "performed")
                open_ended = element == "performedPeriod" and end_raw is None
            elif res.type == "MedicationStatement":
                concept = self._medication_concept(res)
                start_raw, end_raw, element = period_start_end(data, "effective")
                if start_raw is None:
                    start_raw, element = data.get("dateAsserted"), "dateAsserted"
                open_ended = element != "effectiveDateTime" and end_raw is None
            else:
                concept = self._medication_concept(res)
                validity = get_dict(get_dict(data, "dispenseRequest"), "validityPeriod")
                start_raw, end_raw, element = data.get("authoredOn"), validity.get("end"), "authoredOn"
                open_ended = end_raw is None and get_str(data, "status") in ("active", "on-hold", None)
            if res.type == "Procedure" and _is_facet(res, code_tables()):
                continue
            kind = vocab.match(concept)
            if kind is None:
                continue
            start = parse_date(start_raw)
            if start is None or start >= self.dos:
                continue
            end = parse_date(end_raw) if end_raw is not None else (self.dos if open_ended else start)
            self.index.validate_used(res)
            items.append(
                EvidenceItem(
                    kind="conservative-care",
                    source_key=res.key,
                    path=f"{res.path}.{element}" if element else res.path,
                    date=start,
                    end=min(end or start, self.dos),
                    text=kind,
                )
            )
        return sorted(items, key=lambda item: item.date or dt.date.min)

    def _medication_concept(self, res: Res) -> Any:
        concept = res.data.get("medicationCodeableConcept")
        if concept is not None:
            return concept
        target = self.index.resolve(res.data.get("medicationReference"), res)
        return target.data.get("code") if target is not None and target.type == "Medication" else None

    def relief(self, proc: FacetProcedure) -> Relief:
        """Relief after an earlier block, from Observations linked to it by partOf or focus."""
        target = self.index.get(proc.key)
        if target is None:
            return Relief(percent=None, source_keys=[], path=None)
        percents: list[tuple[float, Res]] = []
        pains: list[tuple[dt.datetime | None, dt.date | None, float, Res]] = []
        for res in self.index.of_type("Observation"):
            data = res.data
            if get_str(data, "status") in _VOID_OBSERVATION:
                continue
            links = [*dicts(data.get("partOf")), *dicts(data.get("focus"))]
            if not any(self.index.resolve(link, res) is target for _, link in links):
                continue
            self.index.validate_used(res)
            quantity = get_dict(data, "valueQuantity")
            value = quantity.get("value")
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            loinc = {v for _, system, v, _ in codings(data.get("code")) if system == LOINC}
            words = " ".join(
                filter(None, [concept_text(data.get("code")), *(d for _, _, _, d in codings(data.get("code")))])
            ).lower()
            if (get_str(quantity, "unit") == "%" or get_str(quantity, "code") == "%") and "relief" in words:
                percents.append((float(value), res))
            elif PAIN_LOINC in loinc:
                when_raw = period_start_end(data, "effective")[0]
                pains.append((parse_instant(when_raw), parse_date(when_raw), float(value), res))
        if percents:
            best, res = max(percents, key=lambda pair: pair[0])
            return Relief(percent=best, source_keys=[res.key], path=f"{res.path}.valueQuantity")
        if len(pains) >= 2:
            return _pain_pair_relief(pains, proc, target)
        return Relief(percent=None, source_keys=[], path=None)

    def coverage(self) -> tuple[str | None, list[str]]:
        coverages = self.own("Coverage")
        if not coverages:
            return None, []
        chosen = next((c for c in coverages if get_str(c.data, "status") == "active"), coverages[0])
        self.index.validate_used(chosen)
        names: list[str] = []
        for _, payor in dicts(chosen.data.get("payor")):
            names.extend(filter(None, [get_str(payor, "display")]))
            identifier = get_dict(payor, "identifier")
            names.extend(filter(None, [get_str(identifier, "value"), get_str(identifier, "system")]))
            target = self.index.resolve(payor, chosen)
            if target is not None and target.type == "Organization":
                self.index.validate_used(target)
                names.extend(filter(None, [get_str(target.data, "name")]))
                names.extend(a for a in target.data.get("alias", []) if isinstance(a, str))
                for _, ident in dicts(target.data.get("identifier")):
                    names.extend(filter(None, [get_str(ident, "value"), get_str(ident, "system")]))
        return chosen.key, names


def _pain_pair_relief(
    pains: list[tuple[dt.datetime | None, dt.date | None, float, Res]],
    proc: FacetProcedure,
    target: Res | None,
) -> Relief:
    procedure_time = parse_instant(period_start_end(target.data, "performed")[0]) if target is not None else None
    timed = [p for p in pains if p[0] is not None]
    before = after = None
    if procedure_time is not None and len(timed) == len(pains):
        befores = sorted((p for p in timed if p[0] is not None and p[0] < procedure_time), key=lambda p: p[0])  # type: ignore[arg-type, return-value]
        afters = sorted((p for p in timed if p[0] is not None and p[0] > procedure_time), key=lambda p: p[0])  # type: ignore[arg-type, return-value]
        if befores and afters:
            before, after = befores[-1], afters[-1]
    if before is None or after is None:
        ordered = sorted(pains, key=lambda p: (p[0].timestamp() if p[0] else 0.0, p[1] or dt.date.min))
        before, after = ordered[0], ordered[-1]
    if before[2] <= 0:
        return Relief(percent=None, source_keys=[before[3].key, after[3].key], path=None)
    percent = (before[2] - after[2]) / before[2] * 100.0
    return Relief(percent=percent, source_keys=[before[3].key, after[3].key], path=f"{after[3].path}.valueQuantity")


def _care_days(items: list[EvidenceItem], dos: dt.date) -> int | None:
    if not items:
        return None
    start = min(item.date for item in items if item.date is not None)
    end = max(min(item.end or item.date or dos, dos) for item in items)
    return max((end - start).days, 0)


def _patient_of(index: ResourceIndex, res: Res, subject: Any) -> str | None:
    if subject is None:
        return None
    target = index.resolve(subject, res)
    if target is not None:
        return target.key
    ref = reference_of(subject)
    if not ref:
        return None
    parts = ref.rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else ref


# --------------------------------------------------------------------------- conservative care words


@dataclass(frozen=True, slots=True)
class CareVocabulary:
    snomed: dict[str, str]
    words: list[tuple[str, Any]]

    def match(self, concept: Any) -> str | None:
        for _, system, value, _ in codings(concept):
            if system == SNOMED and value in self.snomed:
                return self.snomed[value]
        text = concept_words(concept) or ""
        for kind, pattern in self.words:
            if pattern.search(text):
                return kind
        return None


@cache
def care_vocabulary() -> CareVocabulary:
    raw = load_toml("conservative-care.toml")
    kinds = raw["kinds"]
    words = [
        (str(entry.get("label", kind)), re.compile(str(entry["pattern"]), re.IGNORECASE))
        for kind, entry in kinds.items()
    ]
    snomed = {
        str(code): str(entry.get("label", kind)) for kind, entry in kinds.items() for code in entry.get("snomed", [])
    }
    return CareVocabulary(snomed=snomed, words=words)
