"""Where and by whom: the session's Encounter, place of service and the Claim's provider
(docs/input.md, place of service and provider)."""

from __future__ import annotations

from typing import Literal

from ..errors import UsageError
from ..fhir.ingest import Res
from ..fhir.systems import POS_LIKE
from ..fhir.values import codings, dicts, get_dict, parse_date
from ..model import Session
from .access import Access
from .procedures import provider_reference
from .record import PatientRecord

PosSource = Literal["option", "location", "default"]


def session_encounter(access: Access, record: PatientRecord, session: Session) -> Res | None:
    """The Encounter a session procedure names, else the patient's Encounter whose period covers
    the date of service."""
    for proc in session.procedures:
        if proc.encounter:
            res = access.get(proc.key)
            if res is None:
                continue
            target = access.resolve(res, "encounter", res.data.get("encounter"))
            if target is not None:
                return target
    for encounter in record.own("Encounter"):
        period = get_dict(encounter.data, "period")
        start_day = parse_date(period.get("start"))
        end_day = parse_date(period.get("end")) or start_day
        if start_day is not None and end_day is not None and start_day <= session.date <= end_day:
            return access.use(encounter)
    return None


def session_location(access: Access, encounter: Res | None) -> Res | None:
    """The first Location of the Encounter: the facility a billing format names. Read only when
    valid R4 (the place of service is read, and checked, on its own)."""
    if encounter is None:
        return None
    for _, entry in dicts(encounter.data.get("location")):
        location = access.if_valid(access.peek(encounter, "location.location", entry.get("location")))
        if location is not None:
            return location
    return None


def place_of_service(
    access: Access, pos_option: str | None, encounter: Res | None
) -> tuple[str, PosSource, str | None]:
    """--pos, else the CMS place-of-service coding on a Location of the Encounter, else 11."""
    if pos_option is not None:
        return pos_option, "option", None
    if encounter is not None:
        for _, entry in dicts(encounter.data.get("location")):
            location = access.resolve(encounter, "location.location", entry.get("location"))
            if location is None:
                continue
            for j, concept in dicts(location.data.get("type")):
                for k, system, value, _ in codings(concept):
                    if system in POS_LIKE and value and value.isdigit() and len(value) == 2:
                        return value, "location", f"{location.path}.type[{j}].coding[{k}]"
    return "11", "default", None


def claim_provider(access: Access, session: Session, encounter: Res | None) -> str | None:
    """The performer, else the requester, else the Encounter's service provider; checked as R4
    like every resource the Claim is built from."""
    provider = _provider(access, session, encounter)
    found = access.get(provider) if provider else None
    if found is not None:
        access.use(found)
    return provider


def _provider(access: Access, session: Session, encounter: Res | None) -> str | None:
    for proc in session.procedures:
        if proc.performer:
            return proc.performer
    for proc in session.procedures:
        if proc.requester:
            return proc.requester
    if encounter is not None:
        return provider_reference(access, encounter, "serviceProvider", encounter.data.get("serviceProvider"))
    return None


def validate_pos(value: str) -> str:
    if not (len(value) == 2 and value.isdigit()) or value == "00":
        raise UsageError(
            f"--pos must be a two-digit CMS place-of-service code (for example 11, 22, 24), not {value!r}."
        )
    return value
