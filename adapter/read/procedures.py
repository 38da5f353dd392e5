"""One facet Procedure or ServiceRequest → a `FacetProcedure` of the coding model: date, codes,
technique, intent, levels and sides, guidance, providers and reasons (docs/input.md)."""

from __future__ import annotations

from typing import Any

from ..fhir.ingest import Res
from ..fhir.systems import CPT_LIKE_SYSTEMS, ICD10CM_LIKE, SNOMED
from ..fhir.values import (
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
from ..icd10 import normalize
from ..model import FacetProcedure, Family, Intent
from .access import UNATTRIBUTED, Access, patient_key
from .bodysites import read_levels
from .facets import CodeTables, facet_cpt
from .guidance import read_guidance
from .wording import intent_of, technique_of

DIAGNOSTIC_SCT = "103693007"
THERAPEUTIC_SCT = "277132007"
# Only a completed Procedure is billed and counted in history; a ServiceRequest is a planned
# session when active or draft.
COUNTED_PROCEDURE = frozenset({"completed"})
PLANNED_REQUEST = frozenset({"active", "draft"})
PROVIDER_TYPES = frozenset({"Practitioner", "PractitionerRole", "Organization"})


def read_procedure(access: Access, res: Res, tables: CodeTables) -> FacetProcedure:
    data = res.data
    status = get_str(data, "status")
    if res.type == "Procedure":
        billable = status in COUNTED_PROCEDURE
        raw_date, _, element = period_start_end(data, "performed")
    else:
        billable = status in PLANNED_REQUEST
        raw_date, _, element = period_start_end(data, "occurrence")
        if raw_date is None and isinstance(data.get("authoredOn"), str):
            raw_date, element = data["authoredOn"], "authoredOn"
    date = parse_date(raw_date)
    date_path = None
    if element:
        date_path = f"{res.path}.{element}" + (".start" if element.endswith("Period") else "")

    code = data.get("code")
    cpt: list[str] = []
    for _, value in facet_cpt(code, tables):
        if value.upper() not in cpt:
            cpt.append(value.upper())
    imaging = [value for _, system, value, _ in codings(code) if system in CPT_LIKE_SYSTEMS and value in tables.imaging]
    texts = procedure_texts(res)
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
    # therapeutic", a SNOMED display is not the clinician's statement (docs/input.md, intent).
    intent_texts = [(text, path) for text, path in texts if not path.endswith(".code")]
    intent, intent_path = _intent(res, intent_texts)
    proc = FacetProcedure(
        key=res.key,
        resource_type=res.type,
        id=res.id,
        path=res.path,
        status=status,
        billable=billable,
        patient=patient_key(access.index, res, data.get("subject")) or UNATTRIBUTED,
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
    proc.levels, proc.level_source = read_levels(access, res, texts, cpt, tables)
    proc.guidance, proc.guidance_path, proc.guidance_resources = read_guidance(access, res, proc, texts, tables)
    if res.type == "Procedure":
        proc.performer = _first_provider(access, res, "performer.actor")
    else:
        proc.performer = _first_provider(access, res, "performer")
        proc.requester = _first_provider(access, res, "requester")
        proc.priority = get_str(data, "priority")
    proc.encounter = reference_of(get_dict(data, "encounter"))
    for _, reason in dicts(data.get("reasonReference")):
        target = access.peek(res, "reasonReference", reason)
        if target is not None:
            proc.reason_references.append(target.key)
    for i, reason in dicts(data.get("reasonCode")):
        for j, system, reason_code, _ in codings(reason):
            if system in ICD10CM_LIKE and reason_code:
                proc.reason_codes.append((normalize(reason_code), f"{res.path}.reasonCode[{i}].coding[{j}]"))
    return proc


def procedure_texts(res: Res) -> list[tuple[str, str]]:
    """(text, path) of code.text (else the code's displays) and each note, in reading order."""
    found: list[tuple[str, str]] = []
    code = res.data.get("code")
    words = concept_words(code)
    if words:
        found.append((words, f"{res.path}.code.text" if concept_text(code) else f"{res.path}.code"))
    found.extend((text, f"{res.path}.note[{i}].text") for i, text in note_texts(res.data))
    return found


def _intent(res: Res, texts: list[tuple[str, str]]) -> tuple[Intent | None, str | None]:
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


def provider_reference(access: Access, res: Res, element: str, value: Any) -> str | None:
    """A provider's key: the resolved resource's, else the reference as written when it names a
    provider type (a provider need not be in the input to be billed). Only the session's chosen
    provider is read, so only that one is checked (by the session reader)."""
    ref = reference_of(value)
    if not ref:
        return None
    if access.reaches(res, value):
        target = access.peek(res, element, value)
        return target.key if target is not None else None
    head = ref.rstrip("/").split("/")
    return ref if len(head) >= 2 and head[-2] in PROVIDER_TYPES else None


def _first_provider(access: Access, res: Res, element: str) -> str | None:
    """The first provider of a performer list (Procedure.performer.actor, ServiceRequest.performer)
    or of a single reference (ServiceRequest.requester)."""
    owner, _, inner = element.partition(".")
    for _, item in dicts(res.data.get(owner)):
        value = item.get(inner) if inner else item
        if value is None:
            continue
        found = provider_reference(access, res, element, value)
        if found:
            return found
    return None
