"""Rules on what the record documents besides the procedures: pain duration, pain scores and
other evidence values, conservative care, prior authorization, the claim's patient, provider and
coverage, the values that were defaulted, and an input that holds several patients."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ..fhir.values import add_months
from .context import Context, Hit, who
from .packs import PriorAuthorization


def pain_duration(ctx: Context) -> Iterator[Hit]:
    dos = ctx.case.session.date
    months = ctx.pack.limits.min_pain_months
    onset = ctx.diagnoses.onset
    if onset is None or onset.onset is None:
        supporting = ctx.diagnoses.supporting
        if not supporting:
            yield Hit(
                "Pain duration cannot be checked: no Condition on record for the pain treated, so there is no "
                "onset date.",
                (),
                hint="Record the condition treated as a Condition with its ICD-10-CM code and the onset of the pain "
                "(onsetDateTime) at least three months before the date of service.",
            )
            return
        has = "has" if len(supporting) == 1 else "have"
        yield Hit(
            f"Pain duration cannot be checked: {who(c.key for c in supporting)} {has} no onset date "
            "(onsetDateTime, onsetPeriod.start or recordedDate).",
            (),
        )
        return
    if add_months(onset.onset, months) > dos:
        yield Hit(
            f"{onset.key}: pain began {onset.onset.isoformat()}"
            + (f" ({onset.code})" if onset.code else "")
            + f", less than {months} months before the date of service {dos.isoformat()}.",
            tuple(filter(None, [onset.onset_path])),
        )


def pain_score_missing(ctx: Context) -> Iterator[Hit]:
    if not ctx.case.evidence.pain_scores:
        yield Hit(
            "No 0-10 pain score (LOINC 72514-3) in the 12 months up to the date of service.",
            (),
        )


def conservative_care(ctx: Context) -> Iterator[Hit]:
    evidence = ctx.case.evidence
    minimum = ctx.pack.limits.min_conservative_care_days
    if not evidence.conservative_care:
        yield Hit(
            "No conservative care on record before the date of service (physical therapy, home exercise, "
            "chiropractic care, NSAIDs or other analgesics).",
            (),
        )
        return
    days = evidence.conservative_days or 0
    if days < minimum:
        kinds = ", ".join(dict.fromkeys(item.text or "care" for item in evidence.conservative_care))
        yield Hit(
            f"{who(item.source_key for item in evidence.conservative_care)}: conservative care on record "
            f"({kinds}) lasted {days} days before the date of service; the profile "
            f"requires at least {minimum} days ({minimum // 7} weeks).",
            tuple(filter(None, (item.path for item in evidence.conservative_care))),
        )


def prior_auth_codes(policy: PriorAuthorization, place_of_service: str, codes: Iterable[str]) -> list[str]:
    """The codes the payer's prior-authorization list names at this place of service (the CDS
    Hooks service asks it of a planned session too)."""
    if place_of_service not in policy.places_of_service:
        return []
    return sorted({code for code in codes if code in policy.codes})


def prior_auth_required(ctx: Context) -> Iterator[Hit]:
    policy = ctx.pack.prior_authorization
    case = ctx.case
    if case.use not in policy.uses or case.evidence.prior_auth:
        return
    codes = prior_auth_codes(policy, case.place_of_service, (line.code for line in ctx.coding.lines))
    if codes:
        yield Hit(
            f"{who(case.session.keys)}: codes {', '.join(codes)} at place of service {case.place_of_service} "
            "need prior authorization, and "
            "none is on record (no --prior-auth, no approved preauthorization ClaimResponse).",
            tuple(p.path for p in case.session.procedures),
        )


def evidence_invalid(ctx: Context) -> Iterator[Hit]:
    """Evidence Observations whose value is outside their scale; they are not used
    (docs/input.md, pain and disability scores; relief after earlier blocks)."""
    seen: set[str] = set()
    invalid = [*ctx.case.evidence.invalid, *(i for relief in ctx.case.reliefs.values() for i in relief.invalid)]
    for item in invalid:
        if item.path in seen:
            continue
        seen.add(item.path)
        yield Hit(
            f"{item.source_key}: {item.what} {item.value:g} is outside its {item.scale} scale; it is not used as "
            "evidence.",
            (item.path,),
        )


def claim_data_missing(ctx: Context) -> Iterator[Hit]:
    # One finding per missing party, each with the fix for that party only: a record with a
    # performer and no Coverage must not be told to add a performer.
    if ctx.case.patient_resource is None:
        # Deleted from the input, never in it, or hidden (a duplicate resourceType key keeps the last).
        yield Hit(
            f"{ctx.case.patient}: the patient's Patient resource is not in the input; the Claim names the patient "
            "by display only, without the name, birth date and address a claim needs.",
            tuple(f"{p.path}.subject" for p in ctx.case.session.procedures),
            hint=f"Add the Patient resource {ctx.case.patient} to the input (or the export it comes from).",
        )
    if ctx.case.provider is None:
        requests = ctx.case.use == "preauthorization"
        element = "ServiceRequest.performer or requester" if requests else "Procedure.performer.actor"
        yield Hit(
            f"{who(ctx.case.session.keys)}: no provider: no performer"
            + (" or requester" if requests else "")
            + " that references a Practitioner, PractitionerRole or Organization, and no service provider on "
            "the encounter; the Claim names the provider by display only.",
            tuple(f"{p.path}.performer" for p in ctx.case.session.procedures),
            hint=f"Record who performed the procedure: {element} referencing the Practitioner, PractitionerRole "
            "or Organization (or the Encounter's serviceProvider).",
        )
    if ctx.case.coverage is None:
        yield Hit(
            f"{ctx.case.patient}: no Coverage for the patient; the Claim names the insurance by display only.",
            (),
            hint="Add the patient's Coverage, with its payor, to the record.",
        )


def several_patients(ctx: Context) -> Iterator[Hit]:
    count = ctx.case.input_patients
    if count is not None and count > 1:
        yield Hit(
            f"The input holds facet sessions of {count} patients; the latest session, {ctx.case.patient}'s on "
            f"{ctx.case.session.date.isoformat()}, was coded and the other patients' data was not read. Give "
            "--patient to code another patient's latest session, or run bulk for every session.",
            (),
        )


def pos_defaulted(ctx: Context) -> Iterator[Hit]:
    if ctx.case.place_of_service_source == "default":
        yield Hit("No place of service on the encounter's location and no --pos: 11 (office) was used.", ())


def payer_defaulted(ctx: Context) -> Iterator[Hit]:
    if ctx.defaulted_reason is not None:
        yield Hit(ctx.defaulted_reason, ())
    elif ctx.profile_source == "default":
        yield Hit(f"No --payer and no Coverage naming Medicare: the {ctx.pack.name!r} profile was used.", ())
