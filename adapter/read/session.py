"""Read: FHIR R4 resources → the coding model of one session (docs/input.md).

Entry points: `read_case(index, options)` reads the session `options` ask for (the focus
procedure's, else the latest in the input); `read_session(index, ref, options)` reads any session
`adapter.read.catalog.list_sessions` listed. Both give a `Case`: the session's levels, sides,
technique, intent, guidance, date and place, with the patient's diagnoses, evidence, history and
the parties the claim names.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from ..errors import NoFacetProcedureError
from ..fhir.ingest import Res, ResourceIndex
from ..model import Case, CoverageFacts, FacetProcedure, Parties, Session, SessionRef, Use
from .access import UNATTRIBUTED, VOID_STATUSES, Access
from .catalog import CatalogEntry, choose_session, facet_catalog, wanted_type
from .evidence import read_evidence, read_relief
from .facts import patient_facts
from .parties import read_parties
from .places import claim_provider, place_of_service, session_encounter, session_location
from .procedures import COUNTED_PROCEDURE
from .record import PatientRecord, is_radiculopathy


class ReadOptions(NamedTuple):
    use: Use = "claim"
    pos: str | None = None
    prior_auth: str | None = None
    # Claim the session of this facet procedure ("Procedure/123") instead of the latest session:
    # what a server notification about one procedure asks for.
    focus: str | None = None


def read_case(index: ResourceIndex, options: ReadOptions) -> Case:
    return read_session(index, choose_session(index, options.use, options.focus), options)


def read_session(index: ResourceIndex, ref: SessionRef, options: ReadOptions) -> Case:
    catalog = facet_catalog(index)
    access = Access(index)
    patient = ref.patient
    mine = catalog.of_patient(patient)
    session_procs = sorted((e.proc for e in mine if e.proc.key in ref.procedures), key=lambda p: p.key)
    if len(session_procs) != len(ref.procedures):
        raise NoFacetProcedureError(f"The session of {patient} on {ref.date.isoformat()} is not in the input.")
    date_of_service = ref.date
    session = Session(patient=patient, date=date_of_service, procedures=session_procs)

    # Everything of this patient's record the adapter reads must be valid R4; other patients'
    # data, records entered in error and resource types the adapter does not use are passed over.
    # A facet procedure with no patient cannot be attributed to anyone: it is checked too, rather
    # than silently billing the session without it.
    facts = patient_facts(index, patient)
    if not facts.record_checked:
        for entry in [*mine, *(catalog.of_patient(UNATTRIBUTED) if patient != UNATTRIBUTED else [])]:
            if entry.proc.status not in VOID_STATUSES:
                access.use(entry.res)
                access.use_all(entry.touched)
    # The patient's key is `Patient/id`, or the fullUrl of a Patient without an id (a transaction's urn:uuid).
    patient_res = access.patient(patient)
    record = PatientRecord(access, patient, date_of_service, facts)
    if not facts.record_checked:
        access.check_record(patient)
        facts.record_checked = True

    history = _history(mine, session_procs, date_of_service)
    encounter = session_encounter(access, record, session)
    location = session_location(access, encounter)
    diagnoses = record.diagnoses(session, encounter)
    pos, pos_source, pos_path = place_of_service(access, options.pos, encounter)
    coverage, coverage_facts = record.coverage()
    provider = claim_provider(access, session, encounter)
    history_procs = [p for s in history for p in s.procedures]
    coverage_res = access.get(coverage) if coverage else None
    parties = read_parties(
        access,
        patient_key=patient,
        patient=patient_res,
        coverage=coverage_res,
        provider_key=provider,
        location=location,
        encounter=encounter,
    )
    return Case(
        use=options.use,
        patient=patient,
        patient_resource=patient_res.key if patient_res is not None else None,
        session=session,
        history=history,
        diagnoses=diagnoses,
        evidence=read_evidence(record, options.prior_auth),
        coverage=coverage,
        payer_names=list(coverage_facts.payor_names),
        coverage_facts=_with_place(coverage_facts, parties),
        provider=provider,
        encounter=encounter.key if encounter is not None else None,
        place_of_service=pos,
        place_of_service_source=pos_source,
        place_of_service_path=pos_path,
        guidance_resources=sorted({key for p in session.procedures for key in p.guidance_resources}),
        reliefs={p.key: read_relief(record, p) for p in history_procs},
        radiculopathy=[d for d in diagnoses if is_radiculopathy(d.code)],
        conditions=list(record.conditions),
        coded_conditions=list(record.coded_conditions),
        undated=[
            e.proc
            for e in mine
            if e.proc.date is None
            and e.proc.resource_type == wanted_type(options.use)
            and (e.proc.billable or e.proc.status in COUNTED_PROCEDURE)
        ],
        parties=parties,
        location=location.key if location is not None else None,
        not_done=_not_done(access, mine, options.use, date_of_service, encounter),
    )


def _not_done(
    access: Access, mine: list[CatalogEntry], use: Use, date_of_service: dt.date, encounter: Res | None
) -> list[FacetProcedure]:
    """The patient's facet procedures marked not-done that belong to the session: dated on its date
    of service, or, without a date (a procedure not done often has none), part of its Encounter.
    They are void: only their identity, date and encounter are looked at (docs/input.md, statuses)."""
    found: list[FacetProcedure] = []
    for entry in mine:
        proc = entry.proc
        if proc.status != "not-done" or proc.resource_type != wanted_type(use):
            continue
        if proc.date == date_of_service or (
            proc.date is None
            and encounter is not None
            and access.peek(entry.res, "encounter", entry.res.data.get("encounter")) is encounter
        ):
            found.append(proc)
    return sorted(found, key=lambda p: p.key)


def _with_place(facts: CoverageFacts, parties: Parties) -> CoverageFacts:
    """The address of the place of service: the session Location's, else the billing
    Organization's (docs/input.md, Medicare contractor)."""
    for party in (parties.facility, parties.billing):
        if party is None or party.address is None or party.resource_type not in ("Location", "Organization"):
            continue
        if party.address.state or party.address.country:
            return facts._replace(
                place_state=party.address.state, place_country=party.address.country, place_from=party.key
            )
    return facts


def _history(mine: list[CatalogEntry], session_procs: list[FacetProcedure], date_of_service: dt.date) -> list[Session]:
    """The patient's other completed facet Procedures on or before the date of service, by day."""
    by_date: dict[dt.date, list[FacetProcedure]] = {}
    for entry in mine:
        proc = entry.proc
        if (
            proc.resource_type == "Procedure"
            and proc.status in COUNTED_PROCEDURE
            and proc.date is not None
            and proc not in session_procs
        ):
            by_date.setdefault(proc.date, []).append(proc)
    return [
        Session(patient=session_procs[0].patient, date=day, procedures=sorted(procs, key=lambda p: p.key))
        for day, procs in sorted(by_date.items())
        if day <= date_of_service
    ]
