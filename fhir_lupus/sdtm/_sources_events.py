"""The facts of the event and intervention domains' rows: AE from adverse_events.csv, CM from medications.csv, EX
from procedures.csv, for enrolled subjects only (as DM: mappings/fhir/lifecycle.yaml ``enrolled``, what
`registry package` keeps).

What a project key becomes in SDTM (outcome, causality, route, unit, the seriousness flags, the study treatments)
is data, mappings/sdtm/events.yaml; a key missing there stops the run with the file named, so a new outcome or
route is never written as a raw project key. PR is not built: every procedure of procedures.csv is a study
treatment, an EX record (docs/sdtm.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from fhir_lupus.errors import MappingError
from fhir_lupus.model import TreatmentProcedure
from fhir_lupus.sdtm._design import epochs
from fhir_lupus.sdtm._sources import SdtmContext, given_treatments
from fhir_lupus.terminology import UnitConverter, load_adverse_event_terms, load_medication_catalogue

__all__ = ["EventTerms", "Exposure", "ae_rows", "cm_rows", "ex_rows"]

Row = dict[str, Any]
EVENTS = "sdtm/events.yaml"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Exposure(_Frozen):
    """A study treatment of procedures.csv (its ``kind``) as EX writes it."""

    treatment: str
    dose: str  # the TreatmentProcedure field holding the dose given
    unit: str
    form: str
    frequency: str

    @field_validator("dose")
    @classmethod
    def _a_column(cls, value: str) -> str:
        if value not in TreatmentProcedure.model_fields:
            raise ValueError(f"{value!r} is not a column of procedures.csv")
        return value


class EventTerms(_Frozen):
    """mappings/sdtm/events.yaml: the project's keys as SDTM values (CDISC CT, or sponsor-defined where noted)."""

    outcomes: dict[str, str]
    ongoing_outcomes: frozenset[str]
    ongoing_end: str
    causality: dict[str, str]
    no_suspect: str
    seriousness_flags: dict[str, str]
    dose_units: dict[str, str]
    routes: dict[str, str]
    frequencies: dict[str, str]
    exposures: dict[str, Exposure]


def load_event_terms(ctx: SdtmContext) -> EventTerms:
    return ctx.pack.load(EventTerms, EVENTS)


def _term(table: Mapping[str, str], key: str, what: str) -> str:
    try:
        return table[key]
    except KeyError:
        raise MappingError(f"mappings/{EVENTS}: {what} {key!r} has no SDTM value; add it with its source") from None


def _treated(ctx: SdtmContext) -> set[str]:
    """Subjects given a study treatment: the ones with DM RFENDTC, the end of the reference period."""
    return {p.subject_id for p in given_treatments(ctx.trial)}


def _base(ctx: SdtmContext, subject_id: str) -> Row:
    return {"subject_id": subject_id, "usubjid": ctx.usubjid(subject_id)}


def ae_rows(ctx: SdtmContext) -> Iterator[Row]:
    """One row per accepted adverse event of an enrolled subject.

    AEDECOD and AELLT are the CTCAE term (CTCAE v4 terms are MedDRA LLTs; no MedDRA look-up is made: a MedDRA code
    without its term text names no term). With a registry key, AETERM is the CTCAE term too: the site's verbatim
    text is free text the registry package drops (docs/sdtm.md says why that rule wins)."""
    terms, ae_terms = load_event_terms(ctx), load_adverse_event_terms(ctx.pack)
    enrolled, treated = ctx.enrolled, _treated(ctx)
    subject_epochs = epochs(ctx)
    for located in ctx.trial.adverse_events:
        event = located.record.event
        sid = event.subject_id
        if sid not in enrolled:
            continue
        serious = event.serious == "yes"
        flags: dict[str, bool | None] = {}
        for criterion in ae_terms.seriousness_criteria:
            flag = _term(terms.seriousness_flags, criterion, "seriousness criterion").lower()
            flags[flag] = (criterion in event.seriousness_criteria) if serious else None
        ongoing = event.resolved_on is None and event.outcome in terms.ongoing_outcomes
        verbatim = event.term if ctx.key is None else event.ctcae_term
        yield {
            **_base(ctx, sid),
            "term": verbatim or "",
            "dictionary_term": event.ctcae_term or "",
            "grade": str(event.grade),
            "serious": serious,
            **flags,
            "relatedness": _term(terms.causality, event.causality, "causality")
            if event.causality is not None
            else terms.no_suspect,
            "outcome": _term(terms.outcomes, event.outcome, "outcome"),
            "epoch": subject_epochs.epoch(sid, event.onset_on),
            "onset": ctx.dated(sid, event.onset_on),
            "resolved": ctx.dated(sid, event.resolved_on),
            "end_relative": terms.ongoing_end if ongoing and sid in treated else "",
        }


def cm_rows(ctx: SdtmContext) -> Iterator[Row]:
    """One row per prior course of medications.csv of an enrolled subject (a screened candidate's courses decide
    screening only). CMTRT and CMDECOD are the catalogue's name of the drug (RxNorm ingredient): the row holds a
    drug key picked from that catalogue, not free text."""
    terms, catalogue = load_event_terms(ctx), load_medication_catalogue(ctx.pack)
    units = UnitConverter(ctx.pack)
    enrolled, treated = ctx.enrolled, _treated(ctx)
    subject_epochs = epochs(ctx)
    for located in ctx.trial.medications:
        course = located.record
        sid = course.subject_id
        if sid not in enrolled:
            continue
        name = catalogue.drugs[course.drug].code.display or course.drug
        unit = units.to_ucum(course.dose_unit) if course.dose_unit else None
        yield {
            **_base(ctx, sid),
            "treatment": name,
            "standard_name": name,
            "dose": course.dose,
            "dose_unit": _term(terms.dose_units, unit, "dose unit") if unit else "",
            "frequency": _term(terms.frequencies, course.frequency, "frequency") if course.frequency else "",
            "route": _term(terms.routes, course.route, "route") if course.route else "",
            "epoch": subject_epochs.epoch(sid, course.started_on),  # none for a course begun before screening
            "start": ctx.dated(sid, course.started_on),
            "end": ctx.dated(sid, course.ended_on),
            "end_relative": terms.ongoing_end if course.ended_on is None and sid in treated else "",
        }


def ex_rows(ctx: SdtmContext) -> Iterator[Row]:
    """One row per study treatment given (procedures.csv, status completed) to an enrolled subject: the
    cyclophosphamide pretreatment in mg and the MSC infusion in cells per kg, as collected."""
    terms = load_event_terms(ctx)
    enrolled = ctx.enrolled
    subject_epochs = epochs(ctx)
    for procedure in given_treatments(ctx.trial):
        sid = procedure.subject_id
        if sid not in enrolled:
            continue
        try:
            exposure = terms.exposures[procedure.kind]
        except KeyError:
            raise MappingError(f"mappings/{EVENTS}: procedure kind {procedure.kind!r} is not in exposures") from None
        yield {
            **_base(ctx, sid),
            "treatment": exposure.treatment,
            "dose": getattr(procedure, exposure.dose),
            "dose_unit": exposure.unit,
            "form": exposure.form,
            "frequency": exposure.frequency,
            "route": _term(terms.routes, procedure.route, "route"),
            "lot": _lot(ctx, procedure.donor_id),
            "epoch": subject_epochs.epoch(sid, procedure.started_at),
            "start": ctx.dated(sid, procedure.started_at),
            "end": ctx.dated(sid, procedure.ended_at or procedure.started_at),
        }


def _lot(ctx: SdtmContext, donor_id: str | None) -> str:
    """EXLOT: the MSC donor batch; with a registry key, the keyed identifier `registry package` gives it."""
    if not donor_id:
        return ""
    if ctx.key is None:
        return donor_id
    system = ctx.pack.identifier_system("msc_donor", study=ctx.study_id)
    return ctx.key.hex("identifier", system, donor_id)
