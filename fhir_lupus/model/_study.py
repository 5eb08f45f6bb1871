"""The study definition (mappings/studies/<NCT id>.yaml) as a frozen pydantic contract."""

from __future__ import annotations

import calendar
import re
from datetime import date, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fhir_lupus.errors import MappingError
from fhir_lupus.model._eligibility import EligibilityRule
from fhir_lupus.terminology import CodeRef, MappingPack, load_fhir_codes, load_pack

__all__ = [
    "DAYS_PER_MONTH",
    "Activity",
    "Eligibility",
    "MonthRule",
    "Outcome",
    "ProtocolVisit",
    "StudyDefinition",
    "VisitMonths",
    "add_calendar_months",
    "due_date",
    "load_study",
    "nearest_month",
]

MonthRule = Literal["30-day", "calendar"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RecruitmentStatus(_Frozen):
    registered: str
    fhir_r4: str
    fhir_r5: str


class Sponsor(_Frozen):
    name: str
    key: str


class Arm(_Frozen):
    name: str
    type: str
    description: str


class RangeValue(_Frozen):
    low: float | None = None
    high: float | None = None
    unit: str


class EligibilityValue(_Frozen):
    boolean: bool | None = None
    range: RangeValue | None = None
    concept: CodeRef | None = None
    text: str | None = None


class Eligibility(_Frozen):
    """One criterion. ``assumptions`` records readings of the registration it rests on that the registration
    does not state (a unit it omits), so they are visible instead of silently built in.

    ``rule`` (fhir_lupus/model/_eligibility.py) is how screening decides it; the Group characteristic's value
    is ``value`` when given, else the rule's range or boolean, so a threshold is written once.
    """

    text: str
    code: CodeRef
    rule: EligibilityRule
    value: EligibilityValue | None = None
    exclude: bool = False
    assumptions: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_definition(self) -> Eligibility:
        if self.value is not None and self.value.range is not None and self.rule.has_limits:
            raise ValueError("the range is the rule's: give at_least / at_most in `rule` only")
        self.characteristic_value()  # a criterion the Group cannot show fails when the study loads
        return self

    def characteristic_value(self) -> EligibilityValue:
        """The Group characteristic's value: ``value``, else the rule's boolean or inclusive range."""
        if self.value is not None:
            return self.value
        rule = self.rule
        if rule.equals is not None:
            return EligibilityValue(boolean=rule.equals)
        if rule.has_limits and rule.more_than is None and rule.less_than is None and rule.unit:
            low = None if rule.at_least is None else float(rule.at_least)
            high = None if rule.at_most is None else float(rule.at_most)
            return EligibilityValue(range=RangeValue(low=low, high=high, unit=rule.unit))
        raise ValueError("give `value` for the Group: the rule has no boolean or inclusive range with a unit")


class Outcome(_Frozen):
    type: Literal["primary", "secondary", "exploratory"]
    name: str
    time_frame: str
    measures: tuple[str, ...]


class HoursWindow(_Frozen):
    min: float
    max: float


class ScheduleEntry(_Frozen):
    code: str | None = None
    pattern: str | None = None
    name: str
    month: int | None = None
    months: tuple[int, int] | None = None
    every: int = 1
    # a code of mappings/fhir/codes.yaml encounter_class (the baseline is an in-patient admission); none: its default
    encounter_class: str | None = None
    activities: tuple[str, ...] = ()  # keys of Protocol.activities expected at every visit of the entry
    every_months: dict[str, int] = {}  # activity -> n: expected only in months that are multiples of n
    # a follow-up whose window reaches to this many months (+ the window) after the previous visit held
    latest_after_previous_months: int | None = Field(default=None, gt=0)


class VisitMonths(_Frozen):
    """How protocol months are counted: from which event (day 0), and 30-day or calendar months."""

    anchor: Literal["baseline", "msc_infusion"]  # the BL visit, or the subject's completed MSC infusion
    rule: MonthRule
    infusion_code: CodeRef  # Procedure.code of the MSC infusion, how pull finds the anchor on a server


class Activity(_Frozen):
    """One activity of the schedule of activities: what a visit is expected to measure, and where it is read.

    ``analytes`` are lab catalogue keys (an inner tuple: any one of them satisfies the item); ``source`` says
    which input file holds the rows (labs.csv, treg.csv, sledai.csv)."""

    title: str
    source: Literal["labs", "treg", "sledai"] = "labs"
    analytes: tuple[str | tuple[str, ...], ...] = ()
    code: CodeRef | None = None


class Protocol(_Frozen):
    pretreatment_to_infusion_hours: HoursWindow
    visit_window_days: int = Field(ge=0)
    visit_months: VisitMonths
    plan_type: CodeRef | None = None  # PlanDefinition.type of the schedule of activities
    activities: dict[str, Activity] = {}
    schedule: tuple[ScheduleEntry, ...]

    @model_validator(mode="after")
    def _activities_known(self) -> Protocol:
        for entry in self.schedule:
            for key in (*entry.activities, *entry.every_months):
                if key not in self.activities:
                    raise ValueError(f"schedule entry {entry.code or entry.pattern}: unknown activity {key!r}")
            if any(n <= 0 for n in entry.every_months.values()):
                raise ValueError(f"schedule entry {entry.code or entry.pattern}: every_months must be positive")
        return self


class ProtocolVisit(_Frozen):
    """One visit of the protocol schedule: code, name and month after baseline."""

    code: str
    name: str
    month: int
    encounter_class: str | None = None  # see ScheduleEntry
    activities: tuple[str, ...] = ()  # keys of Protocol.activities expected at this visit
    latest_after_previous_months: int | None = None  # see ScheduleEntry


class StudyDefinition(_Frozen):
    nct_id: str = Field(pattern=r"^NCT\d{8}$")
    title: str
    description: str
    phase: str
    study_type: str
    design: str
    recruitment_status: RecruitmentStatus
    sponsor: Sponsor
    arms: tuple[Arm, ...] = Field(min_length=1)
    target_enrollment: int = Field(gt=0)
    sex: str
    conditions: tuple[CodeRef, ...]
    protocol: Protocol
    eligibility: tuple[Eligibility, ...]
    outcomes: tuple[Outcome, ...]

    def visits(self) -> tuple[ProtocolVisit, ...]:
        """The schedule expanded: BL, M01..M24, FU30, FU36, ... in month order."""
        visits: list[ProtocolVisit] = []
        for entry in self.protocol.schedule:
            if entry.code is not None and entry.month is not None:
                visits.append(
                    ProtocolVisit(
                        code=entry.code,
                        name=entry.name,
                        month=entry.month,
                        encounter_class=entry.encounter_class,
                        activities=_activities_at(entry, entry.month),
                        latest_after_previous_months=entry.latest_after_previous_months,
                    )
                )
            elif entry.pattern and entry.months:
                first, last = entry.months
                start = first if entry.every == 1 else first + (-first % entry.every)
                for month in range(start, last + 1, entry.every):
                    visits.append(
                        ProtocolVisit(
                            code=entry.pattern.format(n=month),
                            name=entry.name.format(n=month),
                            month=month,
                            encounter_class=entry.encounter_class,
                            activities=_activities_at(entry, month),
                            latest_after_previous_months=entry.latest_after_previous_months,
                        )
                    )
        return tuple(sorted(visits, key=lambda visit: visit.month))

    def visit(self, code: str) -> ProtocolVisit:
        for visit in self.visits():
            if visit.code == code:
                return visit
        raise KeyError(code)

    def due_date(self, anchor: date, month: int) -> date:
        """Protocol date of month ``month`` after ``anchor`` under this study's month rule."""
        return due_date(anchor, month, self.protocol.visit_months.rule)

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(name)


def _activities_at(entry: ScheduleEntry, month: int) -> tuple[str, ...]:
    """The activities an entry expects in ``month``: its own, plus each periodic one due that month."""
    periodic = tuple(key for key, every in entry.every_months.items() if month % every == 0)
    return (*entry.activities, *(key for key in periodic if key not in entry.activities))


def load_study(nct_id: str, pack: MappingPack | None = None) -> StudyDefinition:
    """mappings/studies/<nct_id>.yaml of ``pack`` (default: ``load_pack()``); MappingError when missing or
    malformed."""
    if not re.fullmatch(r"NCT\d{8}", nct_id):
        raise MappingError(f"{nct_id!r} is not an NCT id (NCT followed by 8 digits)")
    pack = pack or load_pack()
    path = pack.root / "studies" / f"{nct_id}.yaml"
    study = pack.load(StudyDefinition, f"studies/{nct_id}.yaml")  # read once per pack
    if study.nct_id != nct_id:
        raise MappingError(f"{path}: nct_id {study.nct_id} does not match the file name")
    classes = load_fhir_codes(pack).encounter_class.display
    for entry in study.protocol.schedule:
        if entry.encounter_class is not None and entry.encounter_class not in classes:
            raise MappingError(
                f"{path}: schedule entry {entry.code or entry.pattern}: encounter_class {entry.encounter_class!r} "
                f"is not one of {', '.join(classes)} (mappings/fhir/codes.yaml)"
            )
    return study


DAYS_PER_MONTH = 30  # a protocol month under the ``30-day`` rule (protocol.visit_months.rule)


def add_calendar_months(day: date, months: int) -> date:
    """The same day of the month ``months`` later, clamped to that month's last day (Jan 31 + 1 = Feb 28/29)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def due_date(anchor: date, month: int, rule: MonthRule) -> date:
    """Protocol date of the visit ``month`` months after ``anchor`` (day 0) under ``rule``."""
    if rule == "calendar":
        return add_calendar_months(anchor, month)
    return anchor + timedelta(days=DAYS_PER_MONTH * month)


def nearest_month(anchor: date, day: date, rule: MonthRule) -> int:
    """The month (0 or more) after ``anchor`` whose due date under ``rule`` is nearest to ``day``; ties go early."""
    if rule == "calendar":
        guess = max(0, (day.year - anchor.year) * 12 + day.month - anchor.month)
        candidates = range(max(0, guess - 1), guess + 2)
        return min(candidates, key=lambda month: (abs((day - add_calendar_months(anchor, month)).days), month))
    return max(0, round((day - anchor).days / DAYS_PER_MONTH))
