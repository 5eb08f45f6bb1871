"""The trial design of the SDTM datasets (mappings/sdtm/design.yaml), and the two things every domain takes from it:
the planned visits (VISIT, VISITNUM, VISITDY: ``visit_numbers``) and the EPOCH an observation falls in (``epochs``).

One definition serves every dataset, so that TV, SV, LB and RS name and number a visit alike, and every EPOCH is
one of TA's. A visit's number is its place in the study file's schedule (fhir_lupus/model StudyDefinition.visits);
its planned study day counts from the planned day of the project's day 0 (``anchor_study_day``), as SDTM counts
(day 1 is RFSTDTC, no day 0). A subject's elements start at events of its own records (the start of screening, its
first completed procedures, the visit that closes the monthly follow-up), and an observation is in the last
element started by its date/time. A date without a time on a day an element starts is in the first element that
starts that day: an adverse event dated the day of the pretreatment is in the TREATMENT epoch.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fhir_lupus.errors import MappingError
from fhir_lupus.model import DAYS_PER_MONTH, StudyDefinition, evaluate_schedule
from fhir_lupus.sdtm._sources import SdtmContext, given_treatments
from fhir_lupus.sdtm._terms import load_sdtm_terms

if TYPE_CHECKING:
    from fhir_lupus.terminology import MappingPack

__all__ = [
    "Element",
    "ElementSpan",
    "Epochs",
    "PlannedVisit",
    "SdtmDesign",
    "TsParameter",
    "TsValue",
    "epochs",
    "load_design",
    "plus_days",
    "visit_numbers",
]

DESIGN = "sdtm/design.yaml"
Anchor = Literal["baseline", "msc_infusion"]
Derivation = Literal[
    "study.title",
    "study.phase",
    "study.study_type",
    "study.design",
    "study.target_enrollment",
    "study.sex",
    "study.nct_id",
    "study.sponsor",
    "study.conditions",
    "study.arms",
    "study.primary_outcomes",
    "study.secondary_outcomes",
    "eligibility.min_age",
    "eligibility.max_age",
    "trial.subjects",
    "trial.start",
    "trial.end",
    "site.country",
]
NullFlavor = Literal["NI", "INV", "OTH", "PINF", "NINF", "UNC", "DER", "UNK", "ASKU", "NAV", "NASK", "NA", "MSK"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ElementStart(_Frozen):
    """The event of a subject's records that starts an element (design.yaml ``elements``)."""

    event: Literal["screening", "procedure_start", "procedure_end", "after_visit"]
    kind: str | None = None  # procedures.csv kind, for procedure_start / procedure_end
    visit: str | None = None  # visit code, for after_visit

    @model_validator(mode="after")
    def _names_what_it_needs(self) -> ElementStart:
        if self.event.startswith("procedure") != (self.kind is not None):
            raise ValueError(f"{self.event}: `kind` names the procedure, and only for procedure_start/_end")
        if (self.event == "after_visit") != (self.visit is not None):
            raise ValueError(f"{self.event}: `visit` names the visit, and only for after_visit")
        return self


class Element(_Frozen):
    etcd: str = Field(pattern=r"^[A-Z][A-Z0-9]{0,7}$")
    element: str = Field(max_length=40)
    epoch: str  # a term of terms.yaml EPOCH
    start: ElementStart
    testrl: str = Field(min_length=1)
    teenrl: str = ""
    tedur: str = ""


class VisitRules(_Frozen):
    start_rules: dict[str, str]  # TVSTRL template per schedule entry (code or pattern)
    anchors: dict[Anchor, str]
    timing: dict[Literal["30-day", "calendar"], str]


class Disposition(_Frozen):
    """The DS choices; every value a term of mappings/sdtm/terms.yaml (DSCAT, PROTMLST, NCOMPLT)."""

    categories: dict[Literal["milestone", "disposition", "other"], str]  # DSCAT terms
    consent: str  # what terms.yaml PROTMLST maps the informed consent from
    milestones: tuple[str, ...] = ()  # status_history.csv statuses written as PROTMLST milestones
    death: str  # the off_study_reasons key of a death
    verbatim_reasons: dict[str, str] = {}  # free-text reason -> off_study_reasons key
    uncoded: str  # the off_study_reasons key of any other free text
    free_text: str  # the project extension of the free-text reason (registry drop_extensions may name it)


class TsValue(_Frozen):
    """One TS value: TSVAL or TSVALNF, with TSVALCD and its terminology (TSVCDREF) when coded."""

    value: str | None = Field(default=None, min_length=1, max_length=200)
    null_flavor: NullFlavor | None = None
    code: str | None = None
    reference: str | None = None  # a key of design.yaml references

    @model_validator(mode="after")
    def _value_or_null_flavor(self) -> TsValue:
        if (self.value is None) == (self.null_flavor is None):
            raise ValueError("a TS value has exactly one of value and null_flavor")
        if (self.code is None) != (self.reference is None):
            raise ValueError(f"{self.value}: a code names its terminology (reference), and a reference its code")
        return self


class TsParameter(_Frozen):
    """A TS parameter (a term of terms.yaml TSPARMCD) and where its values come from: derived, given, or none."""

    parmcd: str = Field(pattern=r"^[A-Z][A-Z0-9]{0,7}$")
    derive: Derivation | None = None
    values: tuple[str, ...] = ()
    null_flavor: NullFlavor | None = None
    source: str = Field(min_length=1)

    @model_validator(mode="after")
    def _one_origin(self) -> TsParameter:
        if [self.derive is not None, bool(self.values), self.null_flavor is not None].count(True) != 1:
            raise ValueError(f"{self.parmcd}: give one of `derive`, `values` and `null_flavor`")
        return self


class DesignCodelists(_Frozen):
    """Which codelist of mappings/sdtm/terms.yaml each kind of design value is a term of."""

    epoch: str
    category: str  # DSCAT
    milestone: str  # DSDECOD of a protocol milestone
    disposition: str  # DSDECOD of a disposition event
    parameter: str  # TSPARMCD (its paired codelist: TSPARM)
    reference: str  # TSVCDREF


class SdtmDesign(_Frozen):
    """mappings/sdtm/design.yaml."""

    ct_version: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    codelists: DesignCodelists
    anchor_study_day: dict[Anchor, int]
    visits: VisitRules
    elements: tuple[Element, ...] = Field(min_length=1)
    disposition: Disposition
    trial_summary: tuple[TsParameter, ...] = Field(min_length=1)
    references: dict[str, str]  # key -> its terms.yaml DICTNAM source value (TSVCDREF)
    age_units: dict[str, str]

    @model_validator(mode="after")
    def _consistent(self) -> SdtmDesign:
        if 0 in self.anchor_study_day.values():
            raise ValueError("anchor_study_day: SDTM has no study day 0")
        for what, names in (
            ("ETCD", [e.etcd for e in self.elements]),
            ("TSPARMCD", [p.parmcd for p in self.trial_summary]),
        ):
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"{what} listed twice: {', '.join(twice)}")
        return self


def load_design(pack: MappingPack) -> SdtmDesign:
    return pack.load(SdtmDesign, DESIGN)


def plus_days(study_day: int, days: int) -> int:
    """The SDTM study day ``days`` after ``study_day`` (no day 0: day -1 + 1 day is day 1)."""
    moved = (study_day - 1 if study_day > 0 else study_day) + days
    return moved + 1 if moved >= 0 else moved


@dataclass(frozen=True)
class PlannedVisit:
    """One visit of the protocol as SDTM names it: VISITNUM, VISIT, VISITDY (None under calendar months), TVSTRL."""

    number: int
    code: str  # the study file's visit code (visits.csv visit_code)
    name: str
    month: int
    study_day: int | None
    start_rule: str


def visit_numbers(ctx: SdtmContext) -> dict[str, PlannedVisit]:
    """The planned visits by visit code, in schedule order: what TV lists and every dataset's VISIT/VISITNUM/
    VISITDY take (ask once per dataset: it is made anew from the study file each time)."""
    return _planned(ctx.trial.study, load_design(ctx.pack))


def _planned(study: StudyDefinition, design: SdtmDesign) -> dict[str, PlannedVisit]:
    months = study.protocol.visit_months
    anchor_day = design.anchor_study_day.get(months.anchor)
    if anchor_day is None:
        raise MappingError(f"mappings/{DESIGN}: anchor_study_day has no day for anchor {months.anchor!r}")
    planned: dict[str, PlannedVisit] = {}
    for number, visit in enumerate(study.visits(), start=1):
        days = None if months.rule == "calendar" else DAYS_PER_MONTH * visit.month
        fields = {
            "n": visit.month,
            "days": days,
            "window": study.protocol.visit_window_days,
            "anchor": design.visits.anchors.get(months.anchor, months.anchor),
        }
        fields["timing"] = _format(design.visits.timing.get(months.rule, ""), fields, f"timing {months.rule}")
        key = _entry_key(study, visit.code, visit.month)
        template = design.visits.start_rules.get(key)
        if template is None:
            raise MappingError(f"mappings/{DESIGN}: visits.start_rules has no rule for schedule entry {key!r}")
        study_day = None if days is None else plus_days(anchor_day, days)
        rule = _format(template, fields, f"start_rules {key}")
        planned[visit.code] = PlannedVisit(number, visit.code, visit.name, visit.month, study_day, rule)
    return planned


def _entry_key(study: StudyDefinition, code: str, month: int) -> str:
    """The schedule entry (its ``code`` or ``pattern``) a visit of the expanded schedule comes from."""
    for entry in study.protocol.schedule:
        if entry.code == code:
            return code
        if entry.pattern and entry.months and entry.pattern.format(n=month) == code:
            return entry.pattern
    return code


def _format(template: str, fields: Mapping[str, object], where: str) -> str:
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    unknown = names - {n for n, v in fields.items() if v is not None}
    if unknown:
        raise MappingError(f"mappings/{DESIGN}: {where}: no value for {', '.join(sorted(unknown))}")
    return template.format(**fields)


@dataclass(frozen=True)
class ElementSpan:
    """An element of one subject and when it started (local clock time; 00:00 for an event known to the day)."""

    element: Element
    order: int  # TAETORD: the element's place in design.yaml elements
    start: datetime

    @property
    def started(self) -> date | datetime:
        """The start as recorded: a date-time for a procedure, else a date."""
        return self.start if self.element.start.event.startswith("procedure") else self.start.date()


class Epochs:
    """Each subject's elements in the order they started, and the element (EPOCH) a date or date-time falls in.

    Ask with the trial's own values, before any keyed date shift: the shift moves all of a subject's dates alike."""

    def __init__(self, spans: dict[str, list[ElementSpan]]) -> None:
        self._spans = {sid: sorted(s, key=lambda span: span.start) for sid, s in spans.items()}

    def spans(self, subject_id: str) -> list[ElementSpan]:
        return list(self._spans.get(subject_id, []))

    def element_at(self, subject_id: str, value: date | datetime | None) -> Element | None:
        """The element ``value`` falls in; None before the subject's first element (or without ``value``)."""
        spans = self._spans.get(subject_id, [])
        if value is None or not spans:
            return None
        if isinstance(value, datetime):
            moment = value.replace(tzinfo=None)
            started = [s for s in spans if s.start <= moment]
            return started[-1].element if started else None
        that_day = [s for s in spans if s.start.date() == value]
        if that_day:
            return that_day[0].element
        before = [s for s in spans if s.start.date() < value]
        return before[-1].element if before else None

    def epoch(self, subject_id: str, value: date | datetime | None) -> str:
        """EPOCH of ``value`` (a CDISC EPOCH term), or "" before the subject's screening."""
        element = self.element_at(subject_id, value)
        return element.epoch if element is not None else ""


def epochs(ctx: SdtmContext) -> Epochs:
    """Every subject's element starts from its records, as design.yaml ``elements`` says."""
    trial = ctx.trial
    design = load_design(ctx.pack)
    terms = load_sdtm_terms(ctx.pack)
    for element in design.elements:
        terms.term(design.codelists.epoch, element.epoch)  # a value terms.yaml does not list stops the run
    first: dict[str, list[date]] = {}
    for screened in trial.screening:
        record = screened.record
        first.setdefault(record.subject_id, []).extend(d for d in (record.screened_on, record.consent_on) if d)
    for sid, history in trial.status_history.items():
        first.setdefault(sid, []).extend(change.on for change in history[:1])
    procedures: dict[tuple[str, str], tuple[datetime, datetime]] = {}
    for p in given_treatments(trial):
        procedures.setdefault((p.subject_id, p.kind), (p.started_at, p.ended_at or p.started_at))
    closing = {e.start.visit for e in design.elements if e.start.visit}
    unknown = closing - {visit.code for visit in trial.study.visits()}
    if unknown:
        raise MappingError(f"mappings/{DESIGN}: elements start after {', '.join(sorted(unknown))}: not a visit")
    after = _after_visits(ctx, closing)
    spans: dict[str, list[ElementSpan]] = {}
    for located in trial.subjects:
        sid = located.record.subject_id
        if sid not in ctx.enrolled:
            continue
        for order, element in enumerate(design.elements, start=1):
            start = _start(element.start, sid, [*first.get(sid, []), located.record.enrolled_on], procedures, after)
            if start is not None:
                spans.setdefault(sid, []).append(ElementSpan(element, order, start))
    return Epochs(spans)


def _start(
    event: ElementStart,
    subject_id: str,
    screening: list[date],
    procedures: dict[tuple[str, str], tuple[datetime, datetime]],
    after: dict[tuple[str, str], date],
) -> datetime | None:
    if event.event == "screening":
        return datetime.combine(min(screening), time()) if screening else None
    if event.event == "after_visit":
        day = after.get((subject_id, event.visit or ""))
        return datetime.combine(day + timedelta(days=1), time()) if day else None
    done = procedures.get((subject_id, event.kind or ""))
    if done is None:
        return None
    return (done[0] if event.event == "procedure_start" else done[1]).replace(tzinfo=None)


def _after_visits(ctx: SdtmContext, codes: set[str]) -> dict[tuple[str, str], date]:
    """(subject, visit code) -> the visit's date, or the end of its window when it was not held."""
    if not codes:
        return {}
    trial = ctx.trial
    schedules = evaluate_schedule(
        trial.study,
        [s.record for s in trial.subjects],
        trial.visits,
        trial.procedures,
        timelines=trial.timelines,
    )
    return {
        (schedule.subject_id, outcome.visit.code): outcome.visit_date or outcome.window_end
        for schedule in schedules
        for outcome in schedule.visits
        if outcome.visit.code in codes
    }
