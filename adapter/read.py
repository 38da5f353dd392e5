"""Read: FHIR R4 resources → the coding model (contract §2).

Entry point: `read_case(index, options)`. It finds the facet procedures, picks the latest
session of its patient, and reads that session's levels, sides, technique, intent, guidance,
date and place, with the patient's diagnoses, evidence and history.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import NoDateOfServiceError, NoFacetProcedureError, UsageError
from .facets import CodeTables, code_tables, facet_cpt, is_facet
from .fhirpath import (
    CPT_LIKE_SYSTEMS,
    ICD10CM_LIKE,
    POS_LIKE,
    SNOMED,
    codings,
    concept_text,
    concept_words,
    dicts,
    get_dict,
    get_str,
    note_texts,
    parse_date,
    period_start_end,
    reference_of,
)
from .icd10 import normalize
from .ingest import Res, ResourceIndex
from .levels import TextLevels, read_text
from .model import (
    Case,
    FacetProcedure,
    Family,
    GuidanceValue,
    Level,
    LevelFinding,
    LevelSource,
    Session,
    Use,
)
from .record import PatientRecord, is_radiculopathy, patient_of
from .spine import Side, spine
from .wording import guidance_of, intent_of, technique_of

TARGET_BODY_STRUCTURE = "http://hl7.org/fhir/StructureDefinition/procedure-targetBodyStructure"
DIAGNOSTIC_SCT = "103693007"
THERAPEUTIC_SCT = "277132007"

# Procedure statuses (contract §2.1): only `completed` is billed and counted in history.
_COUNTED_PROCEDURE = frozenset({"completed"})
_PLANNED_REQUEST = frozenset({"active", "draft"})
_VOID_STATUSES = frozenset({"entered-in-error", "not-done"})  # never count anywhere
_PROVIDER_TYPES = frozenset({"Practitioner", "PractitionerRole", "Organization"})
_CODED_GUIDANCE: tuple[GuidanceValue, ...] = ("fluoroscopy", "ct", "ultrasound")
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


# --------------------------------------------------------------------------- entry point


def read_case(index: ResourceIndex, options: ReadOptions) -> Case:
    tables = code_tables()
    candidates = [res for res in index.of_type("Procedure", "ServiceRequest") if is_facet(res, tables)]
    if not candidates:
        raise NoFacetProcedureError(
            "The input has no facet procedure (CPT 64490-64495, 64633-64636, 0213T-0218T, or facet / "
            "zygapophyseal / medial branch wording) to code."
        )
    # Read defensively first (the accessors never raise), choose the patient, then check as R4
    # what this patient's claim uses: other patients' data is passed over.
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

    for proc, res in zip(procedures, candidates, strict=True):
        # A facet procedure with no patient cannot be attributed to anyone: it is checked too,
        # rather than silently billing the session without it.
        if proc.patient in (patient, UNATTRIBUTED) and proc.status not in _VOID_STATUSES:
            index.validate_used(res)
    patient_res = index.get(patient) if patient.startswith("Patient/") else None
    if patient_res is not None:
        index.validate_used(patient_res)
    reader = PatientRecord(index, patient, date_of_service)
    # Everything of this patient's record the adapter reads must be valid R4; other patients'
    # data, records entered in error and resource types the adapter does not use are passed over.
    for res in reader.own(*_USED_PATIENT_TYPES):
        if get_str(res.data, "status") not in _VOID_STATUSES:
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
        provider=_checked_provider(index, session, encounter),
        encounter=encounter.key if encounter is not None else None,
        place_of_service=pos,
        place_of_service_source=pos_source,
        place_of_service_path=pos_path,
        guidance_resources=sorted({key for p in session.procedures for key in p.guidance_resources}),
        reliefs={p.key: reader.relief(p) for p in history_procs},
        radiculopathy=[d for d in diagnoses if is_radiculopathy(d.code)],
        conditions=list(reader.conditions),
        undated=[
            p
            for p in procedures
            if p.patient == patient
            and p.date is None
            and p.resource_type == wanted_type
            and (p.billable or p.status in _COUNTED_PROCEDURE)
        ],
    )


# --------------------------------------------------------------------------- facet procedures


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
    for _, value in facet_cpt(code, tables):
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

    # Intent reads code.text, not the codings' displays: a CPT descriptor says "diagnostic or
    # therapeutic", a SNOMED display is not the clinician's statement (contract §2.3).
    intent_texts = [(text, path) for text, path in texts if not path.endswith(".code")]
    intent, intent_path = _intent(res, intent_texts)
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
    proc.text = " ".join(text for text, _ in texts) or None
    proc.levels, proc.level_source = _levels(index, res, texts, cpt, tables)
    proc.guidance, proc.guidance_path, proc.guidance_resources = _guidance(index, res, proc, texts, tables)
    proc.performer = _first_actor(data.get("performer"), index, res)
    proc.requester = _provider_ref(data.get("requester"), index, res)
    encounter = get_dict(data, "encounter")
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


UNATTRIBUTED = "Patient/(unknown)"


def _patient_key(index: ResourceIndex, res: Res) -> str:
    return patient_of(index, res, res.data.get("subject")) or UNATTRIBUTED


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
        # Medial-branch wording before level wording (contract §2.2, sources 3 and 4).
        preference: tuple[tuple[str, LevelSource], ...] = (("nerve", "nerve"), ("joint", "text"))
        for kind, level_source in preference:
            for reading, path in text_readings:
                for mention in reading.levels:
                    if mention.kind == kind:
                        add(mention.joint, {mention.side} if mention.side else set(), level_source, path)
            if found:
                source = level_source
                break

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


def _imaging_procedures(index: ResourceIndex, tables: CodeTables) -> list[tuple[Res, list[tuple[str, str]]]]:
    """Procedures coded 77003 / 77012 / 76942, with (guidance kind, coding path): found once per
    input, so a bulk file with many facet procedures is not scanned once per procedure."""
    cached = index.memo.get("imaging-procedures")
    if isinstance(cached, list):
        return cached
    found: list[tuple[Res, list[tuple[str, str]]]] = []
    for other in index.of_type("Procedure"):
        if get_str(other.data, "status") in ("entered-in-error", "not-done"):
            continue
        kinds = [
            (tables.imaging[value], f"{other.path}.code.coding[{i}]")
            for i, system, value, _ in codings(other.data.get("code"))
            if system in CPT_LIKE_SYSTEMS and value in tables.imaging
        ]
        if kinds:
            found.append((other, kinds))
    index.memo["imaging-procedures"] = found
    return found


def _guidance(
    index: ResourceIndex, res: Res, proc: FacetProcedure, texts: list[tuple[str, str]], tables: CodeTables
) -> tuple[GuidanceValue, str | None, list[str]]:
    linked: list[tuple[str, Res, str]] = []
    for other, kinds in _imaging_procedures(index, tables):
        if other is res:
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
    coded = [(kind, path) for kind, _, path in linked] + [
        (tables.imaging[c], proc.code_path) for c in proc.imaging_codes
    ]
    if coded:
        # One preference over every coded source: fluoroscopy or CT (covered) before ultrasound.
        kinds_found = [kind for kind, _ in coded]
        chosen: GuidanceValue = next((k for k in _CODED_GUIDANCE if k in kinds_found), "fluoroscopy")
        path = next(path for kind, path in coded if kind == chosen)
        return chosen, path, sorted({other.key for _, other, _ in linked})
    for text, path in texts:
        said = guidance_of(text)
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


def _checked_provider(index: ResourceIndex, session: Session, encounter: Res | None) -> str | None:
    """The Claim's provider, checked as R4 like every resource the Claim is built from."""
    provider = _provider(index, session, encounter)
    found = index.get(provider) if provider else None
    if found is not None:
        index.validate_used(found)
    return provider


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


def _session_encounter(index: ResourceIndex, reader: PatientRecord, session: Session) -> Res | None:
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
