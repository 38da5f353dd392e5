"""Reading a facet session's record from a FHIR server: `gather` (the focus procedure, its
patient, and what the reader needs of the patient's record), the follow-up reads of referenced
resources the searches did not return, and `server_index`, which hands the result to the library.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from ..errors import FhirNotFound, FhirProtocolError, FhirRequestRejected, NoFacetProcedureError, UsageError
from ..fhir.client import FhirClient
from ..fhir.ingest import ResourceIndex, index_resources
from ..fhir.responses import parse_location
from ..fhir.transport import Params
from ..fhir.values import add_months, parse_date, period_start_end, reference_of
from ..read.access import values_at
from ..read.uses import FOLLOWED, HISTORY_MONTHS, PATIENT_TYPES, REVERSE, code_tokens

log = logging.getLogger(__name__)

# The R4 id datatype, less `.` and `..`, which a URL would read as the folder or its parent.
ID_SYNTAX = re.compile(r"(?!\.\.?\Z)[A-Za-z0-9\-.]{1,64}")
_CHUNK = 20  # references per `Observation?part-of=a,b,...` fallback search
_COUNT = "100"  # page size asked for


def focus_key(procedure_id: str, use: str = "claim") -> str:
    """`123` → `Procedure/123` (`ServiceRequest/123` for preauthorization); `Type/id` and
    absolute references are kept as `Type/id`."""
    location = parse_location(procedure_id) if "/" in procedure_id else None
    if location is not None:
        if location.type not in ("Procedure", "ServiceRequest") or not ID_SYNTAX.fullmatch(location.id):
            raise UsageError("A procedure id is `123`, `Procedure/123` or `ServiceRequest/123`.")
        return location.reference
    if not ID_SYNTAX.fullmatch(procedure_id):
        raise UsageError("A procedure id is `123`, `Procedure/123` or `ServiceRequest/123`.")
    return f"{'ServiceRequest' if use == 'preauthorization' else 'Procedure'}/{procedure_id}"


class _Found:
    """Gathered resources by `Type/id`, in first-seen order."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    def add(self, resource: Mapping[str, Any]) -> None:
        type_, id_ = resource.get("resourceType"), resource.get("id")
        if isinstance(type_, str) and isinstance(id_, str) and type_ != "OperationOutcome":
            self.items.setdefault(f"{type_}/{id_}", dict(resource))

    def extend(self, resources: Iterator[dict[str, Any]]) -> None:
        for resource in resources:
            self.add(resource)

    def of_type(self, *types: str) -> list[dict[str, Any]]:
        return [r for r in self.items.values() if r.get("resourceType") in types]


def gather(client: FhirClient, procedure_id: str, *, use: str = "claim") -> list[dict[str, Any]]:
    """The facet procedure's session context from the server.

    The Procedure (or ServiceRequest), its Patient, the patient's Procedures of the 24 months
    before the date of service (facet history, guidance, conservative care) with their
    performers, encounters and the Observations that report on them (relief), the facet
    ServiceRequests, Conditions, pain/disability Observations, Coverage with its payor, the
    Encounter(s) of the date of service with Location and service provider, medication
    statements/requests, preauthorization ClaimResponses. `_include`/`_revinclude` are used
    when the CapabilityStatement lists them; otherwise (and for whatever they missed) the
    referenced resources are read one by one.
    """
    key = focus_key(procedure_id, use)
    type_, _, id_ = key.partition("/")
    try:
        focus = client.read(type_, id_)
    except FhirNotFound:
        raise NoFacetProcedureError(f"{key} does not exist on the FHIR server.") from None
    return gather_around(client, focus)


def gather_around(
    client: FhirClient,
    focus: Mapping[str, Any],
    *,
    known: Sequence[Mapping[str, Any]] = (),
    have: Collection[str] = (),
) -> list[dict[str, Any]]:
    """`gather` for a focus procedure the caller already holds (a CDS Hooks draft order is on no
    server yet). `known` are resources the caller has too (prefetched ones): they are returned
    with the rest and their references are followed; the searches of the resource types in
    `have` (and the Patient read, when "Patient" is in it) are left out."""
    key = f"{focus.get('resourceType')}/{focus.get('id')}"
    found = _Found()
    found.add(focus)
    for resource in known:
        found.add(resource)
    subject = reference_of(focus.get("subject"))
    patient = parse_location(client.relative(subject)) if subject and "://" not in client.relative(subject) else None
    if patient is None or patient.type != "Patient":
        return list(found.items.values())  # the pipeline reports what is missing
    pid = patient.id
    dos = date_of(focus)
    since = add_months(dos, -HISTORY_MONTHS) if dos is not None else None
    searches: list[tuple[str, list[tuple[str, str]]]] = []

    def search(resource_type: str, params: list[tuple[str, str]], includes: Sequence[str] = ()) -> None:
        wanted = [i for i in includes if client.supports_include(resource_type, i)]
        searches.append((resource_type, [*params, *(("_include", i) for i in wanted), ("_count", _COUNT)]))

    # Every search comes from the reader's declaration (adapter.read.uses), so what the reader
    # uses and what a sync brings from the server cannot drift apart.
    revincludes: list[str] = []
    for wanted_type in PATIENT_TYPES:
        if wanted_type.type in have:
            continue
        # `subject=Patient/x`, not `patient=x`: the same on HAPI, but the `patient` parameters are
        # defined with resolve() and cost the test server a FHIRPath evaluation per resource.
        params = [(wanted_type.search_param, f"Patient/{pid}")]
        if wanted_type.window == "history" and since is not None:
            params.append(("date", f"ge{since.isoformat()}"))
        if wanted_type.window == "day":
            if dos is None:
                continue
            # ge + le on a period means "overlaps the day": the Encounter whose period covers it.
            params += [("date", f"ge{dos.isoformat()}"), ("date", f"le{dos.isoformat()}")]
        if wanted_type.codes is not None:
            params.append(("code", code_tokens(wanted_type.codes)))
        params += list(wanted_type.fixed_params)
        reverse = [
            r.revinclude
            for r in REVERSE
            if r.target == wanted_type.type and client.supports_include(r.target, r.revinclude, reverse=True)
        ]
        if wanted_type.type == "Procedure":
            revincludes = reverse
        includes = [f.include for f in FOLLOWED if f.source == wanted_type.type and f.include]
        search(wanted_type.type, params + [("_revinclude", i) for i in reverse], includes)
    _run_reads(client, found, key, pid if "Patient" not in have else None, searches)
    if "Procedure" not in have and len(revincludes) < len([r for r in REVERSE if r.target == "Procedure"]):
        _observations_about(client, found)
    _read_missing(client, found)
    log.info("gathered %d resource(s) for %s", len(found.items), key)
    return list(found.items.values())


def _run_reads(
    client: FhirClient, found: _Found, key: str, pid: str | None, searches: list[tuple[str, list[tuple[str, str]]]]
) -> None:
    """The patient (`pid`; None: the caller has it) and the searches, in one `batch` round trip
    where the server offers batch. A search the batch did not answer whole (an error, or more
    than one page: `total` above the matches, or a next link) is run again on its own, with
    paging and the client's errors."""
    reads: list[tuple[str, Params]] = [(f"Patient/{pid}", None)] if pid is not None else []
    results: list[tuple[int, dict[str, Any] | None]] | None = None
    if (reads or searches) and client.supports_batch():
        try:
            results = client.batch_get([*reads, *searches])
        except (FhirRequestRejected, FhirProtocolError) as exc:
            log.info("the server did not take the batch of reads (%s); reading one by one", type(exc).__name__)
    if results is None:
        if pid is not None:
            _read_patient(client, found, key, pid)
        for resource_type, params in searches:
            found.extend(client.search(resource_type, params))
        return
    if pid is not None:
        status, patient = results[0]
        if status == 200 and patient is not None and patient.get("resourceType") == "Patient":
            found.add(patient)
        elif status in (404, 410):
            log.warning("%s names Patient/%s, which the server does not have", key, pid)
        else:
            _read_patient(client, found, key, pid)
    for (resource_type, params), (status, bundle) in zip(searches, results[len(reads) :], strict=True):
        if status == 200 and bundle is not None and whole_page(bundle):
            for entry in bundle.get("entry") or []:
                resource = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(resource, dict):
                    found.add(resource)
        else:
            found.extend(client.search(resource_type, params))


def _read_patient(client: FhirClient, found: _Found, key: str, pid: str) -> None:
    try:
        found.add(client.read("Patient", pid))
    except FhirNotFound:
        log.warning("%s names Patient/%s, which the server does not have", key, pid)


def whole_page(bundle: Mapping[str, Any]) -> bool:
    """A searchset that holds every match: no next link, and no `total` above the matches."""
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "searchset":
        return False
    links = bundle.get("link") or []
    if any(isinstance(link, dict) and link.get("relation") == "next" for link in links):
        return False
    entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
    matches = sum(1 for e in entries if (e.get("search") or {}).get("mode", "match") == "match")
    total = bundle.get("total")
    if isinstance(total, int):
        return total <= matches
    # No total and no link: a full page may have a next one the server did not link.
    return matches < int(_COUNT)


def _observations_about(client: FhirClient, found: _Found) -> None:
    """What `_revinclude=Observation:part-of/focus` would have given: relief reports."""
    keys = [f"Procedure/{p['id']}" for p in found.of_type("Procedure")]
    for start in range(0, len(keys), _CHUNK):
        chunk = ",".join(keys[start : start + _CHUNK])
        for param in ("part-of", "focus"):
            try:
                found.extend(client.search("Observation", [(param, chunk), ("_count", "100")]))
            except FhirRequestRejected as exc:
                if exc.status != 400:
                    raise
                log.info("the server cannot search Observation by %s; skipped", param)


# Which references of which resources the reader follows, so they must be on hand.
_FOLLOWED: dict[str, tuple[tuple[str, ...], ...]] = {}
for _follow in FOLLOWED:
    _FOLLOWED[_follow.source] = (*_FOLLOWED.get(_follow.source, ()), _follow.path)
# Procedure → PractitionerRole → Practitioner, Procedure → Encounter → Location → Organization.
_FOLLOW_HOPS = 3


def _read_missing(client: FhirClient, found: _Found) -> None:
    """Read referenced resources the searches did not return (up to three hops: Procedure → Encounter →
    Location → Organization), the reads of one hop in one batch where the server offers it. Missing
    targets are left out; the reader treats them as not on record."""
    tried: set[str] = set()
    for _ in range(_FOLLOW_HOPS):
        wanted: list[str] = []
        for resource in list(found.items.values()):
            for path in _FOLLOWED.get(str(resource.get("resourceType")), ()):
                for value in values_at(resource, path):
                    reference = reference_of(value)
                    if not reference or reference.startswith(("#", "urn:")):
                        continue
                    relative = client.relative(reference)
                    location = parse_location(relative) if "://" not in relative else None
                    if location is None or location.reference in found.items or location.reference in tried:
                        continue
                    tried.add(location.reference)
                    wanted.append(location.reference)
        if not wanted:
            return
        if len(wanted) > 1 and client.supports_batch():
            try:
                answers = client.batch_get([(reference, None) for reference in wanted])
            except (FhirRequestRejected, FhirProtocolError):
                answers = [(0, None)] * len(wanted)
        else:
            answers = [(0, None)] * len(wanted)
        for reference, (status, answer) in zip(wanted, answers, strict=True):
            type_, _, id_ = reference.partition("/")
            if status == 200 and answer is not None and f"{answer.get('resourceType')}/{answer.get('id')}" == reference:
                found.add(answer)
                continue
            if status in (404, 410):
                log.info("%s is referenced but not on the server", reference)
                continue
            try:
                found.add(client.read(type_, id_))
            except FhirNotFound:
                log.info("%s is referenced but not on the server", reference)


def date_of(resource: Mapping[str, Any]) -> dt.date | None:
    if resource.get("resourceType") == "ServiceRequest":
        start = period_start_end(resource, "occurrence")[0] or resource.get("authoredOn")
    else:
        start = period_start_end(resource, "performed")[0]
    return parse_date(start)


def server_index(client: FhirClient, resources: Sequence[Mapping[str, Any]]) -> ResourceIndex:
    """The gathered resources as the pipeline's index, each at its server address so relative and
    absolute references between them resolve (nothing is serialised)."""
    return index_resources(resources, base_url=client.base_url)
