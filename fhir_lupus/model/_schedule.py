"""The protocol schedule applied to a subject: visits done, out of window, missed, skipped or not yet due, and
the expected analytes missing at each visit held.

One schedule logic for ``fhir-lupus validate`` (its missed-visit / out-of-window findings) and ``fhir-lupus
schedule`` (the per-visit table and CSV, fhir_lupus/study/_schedule.py). The rules are data (``protocol`` in
mappings/studies/<NCT id>.yaml):

- Day 0 is ``visit_months.anchor`` (the BL visit, or the first completed MSC infusion; without one, BL), and
  visit ``n`` is due ``n`` months later under ``visit_months.rule``. A visit is in window within
  +/- ``visit_window_days`` of its due date.
- A visit with ``latest_after_previous_months`` (the follow-ups after M24, "every 6-12 months") has a window
  that reaches to that many months + ``visit_window_days`` after the previous visit held. A slot passed over
  because the next visit came within that limit is ``skipped``; a follow-up is ``missed`` only when no visit
  happens within it (the next one is then owed that many months after the missed deadline, so one gap of
  two years counts two missed follow-ups, not four).
- Any other visit not held is ``missed`` when its window closed before the subject's last contact (the last
  visit held, or the end of participation of the subject's timeline: leaving the study, or death, from
  subjects.csv, status_history.csv or a fatal adverse event; fhir_lupus/model/_timeline.py); otherwise it is
  ``not-yet-due`` (still on study) or ``off-study`` (participation over: nothing more is expected). A visit
  whose visits.csv row was refused is ``unknown``, never ``missed``.
- At a visit held, every analyte its activities expect (``protocol.activities``) is looked up in labs.csv,
  treg.csv and sledai.csv rows of that subject and visit (a row dated outside the visit's window does not
  count); the ones without a row are ``missing``, or ``unknown`` when their file is absent or empty.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from fhir_lupus.model._entities import Subject, TreatmentProcedure, Visit
from fhir_lupus.model._records import Finding, Located
from fhir_lupus.model._study import Activity, ProtocolVisit, StudyDefinition
from fhir_lupus.model._timeline import SubjectTimeline

__all__ = [
    "SubjectSchedule",
    "VisitOutcome",
    "VisitStatus",
    "activity_items",
    "evaluate_schedule",
    "schedule_findings",
]

VisitStatus = Literal["done", "out-of-window", "missed", "skipped", "not-yet-due", "off-study", "unknown"]
# where each activity source is recorded: an absent file makes its items unknown, not missing
SOURCE_FILES = {None: "labs.csv", "treg": "treg.csv", "sledai": "sledai.csv"}

VISITS, PROCEDURES = "visits.csv", "procedures.csv"


@dataclass(frozen=True)
class VisitOutcome:
    """One protocol visit of one subject. ``days_outside_window``: negative before the window, positive after."""

    subject_id: str
    visit: ProtocolVisit
    status: VisitStatus
    due: date
    window_start: date
    window_end: date
    visit_date: date | None = None
    line: int | None = None  # the visits.csv line of the visit held
    expected: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()  # expected items whose source file is absent: not known to be missing

    @property
    def held(self) -> bool:
        return self.visit_date is not None

    @property
    def days_from_due(self) -> int | None:
        return None if self.visit_date is None else (self.visit_date - self.due).days

    @property
    def days_outside_window(self) -> int:
        if self.visit_date is None:
            return 0
        if self.visit_date < self.window_start:
            return (self.visit_date - self.window_start).days
        if self.visit_date > self.window_end:
            return (self.visit_date - self.window_end).days
        return 0


@dataclass(frozen=True)
class SubjectSchedule:
    subject_id: str
    anchor: date | None  # day 0; None when the subject has no BL visit
    anchor_fallback: bool  # the anchor is the MSC infusion by the study file, but the subject has none: BL used
    last_contact: date | None
    off_study: bool
    visits: tuple[VisitOutcome, ...] = ()
    has_visits: bool = True

    def count(self, status: VisitStatus) -> int:
        return sum(1 for outcome in self.visits if outcome.status == status)

    @property
    def missing_analytes(self) -> int:
        return sum(len(outcome.missing) for outcome in self.visits)


@dataclass
class _Held:
    day: date
    line: int | None


def activity_items(activity_key: str, activity: Activity) -> tuple[str, ...]:
    """The items an activity expects, as labels: an analyte key, ``a|b`` for "any of", the key for SLEDAI."""
    if activity.source == "sledai":
        return (activity_key,)
    return tuple(item if isinstance(item, str) else "|".join(item) for item in activity.analytes)


def _item_present(label: str, present: set[str]) -> bool:
    return any(option in present for option in label.split("|"))


def evaluate_schedule(
    study: StudyDefinition,
    subjects: Iterable[Subject],
    visits: Iterable[Located[Visit]],
    procedures: Iterable[Located[TreatmentProcedure]] = (),
    *,
    present: Mapping[tuple[str, str], set[str]] | None = None,
    as_of: date | None = None,
    timelines: Mapping[str, SubjectTimeline] | None = None,
    refused_visits: Collection[tuple[str, str]] = (),
    absent: Collection[str] = (),
) -> list[SubjectSchedule]:
    """Each subject's schedule, in subject order. ``present`` maps (subject, visit code) to the analyte keys
    (and ``sledai`` for a SLEDAI-2K row, the activity key of a ``source: sledai`` activity) recorded there;
    without it no analyte is checked. ``as_of`` extends the last contact of subjects still on study.
    ``timelines`` give the end of participation (without them, subjects.csv ``off_study_on``);
    ``refused_visits`` the (subject, visit code) of refused visits.csv rows; ``absent`` the files absent or empty."""
    held: dict[str, dict[str, _Held]] = defaultdict(dict)
    for row in visits:
        held[row.record.subject_id][row.record.visit_code] = _Held(row.record.visit_date, row.line)
    infusions: dict[str, date] = {}
    for procedure in sorted(procedures, key=lambda p: p.record.started_at):
        if procedure.record.kind == "msc_infusion" and procedure.record.status == "completed":
            infusions.setdefault(procedure.record.subject_id, procedure.record.started_at.date())
    context = _Context(study, present, as_of, frozenset(refused_visits), frozenset(absent))
    return [
        _subject_schedule(
            context,
            subject,
            held.get(subject.subject_id, {}),
            infusions.get(subject.subject_id),
            (timelines or {}).get(subject.subject_id),
        )
        for subject in sorted(subjects, key=lambda s: s.subject_id)
    ]


@dataclass(frozen=True)
class _Context:
    study: StudyDefinition
    present: Mapping[tuple[str, str], set[str]] | None
    as_of: date | None
    refused_visits: frozenset[tuple[str, str]]
    absent: frozenset[str]


def _subject_schedule(
    context: _Context,
    subject: Subject,
    held: dict[str, _Held],
    infusion: date | None,
    timeline: SubjectTimeline | None,
) -> SubjectSchedule:
    study, as_of = context.study, context.as_of
    if timeline is not None:
        off_study = timeline.ended
        ended_on = timeline.end.day if timeline.end is not None else None
    else:
        off_study, ended_on = subject.off_study_on is not None, subject.off_study_on
    contacts = [visit.day for visit in held.values()]
    if ended_on is not None:
        contacts.append(ended_on)
    elif as_of is not None and not off_study:
        contacts.append(as_of)
    last_contact = max(contacts) if contacts else None
    baseline = held.get("BL")
    if baseline is None or last_contact is None:
        return SubjectSchedule(subject.subject_id, None, False, last_contact, off_study, (), bool(held))
    anchor, fallback = baseline.day, False
    if study.protocol.visit_months.anchor == "msc_infusion":
        if infusion is not None:
            anchor = infusion
        else:
            fallback = True
    window = timedelta(days=study.protocol.visit_window_days)
    protocol_visits = study.visits()
    outcomes: list[VisitOutcome] = []
    last_held: date | None = None  # the previous visit held: where a follow-up's window ends from
    owed_from: date | None = None  # where the next follow-up is owed from (moves on past a missed one)
    for index, visit in enumerate(protocol_visits):
        due = study.due_date(anchor, visit.month)
        start, end = due - window, due + window
        this = held.get(visit.code)
        expected, missing, unknown = _expected(context, visit, this is not None, subject.subject_id)
        later = [held[v.code].day for v in protocol_visits[index + 1 :] if v.code in held]
        if visit.latest_after_previous_months is not None and last_held is not None and owed_from is not None:
            months = visit.latest_after_previous_months
            if this is not None:
                end = max(end, study.due_date(last_held, months) + window)
            else:
                deadline = study.due_date(owed_from, months) + window
                end = max(end, deadline)
                if later and min(later) <= deadline:
                    status: VisitStatus = "skipped"
                elif deadline < last_contact:
                    status = "missed"
                    owed_from = study.due_date(owed_from, months)
                else:
                    status = "off-study" if off_study else "not-yet-due"
                if (subject.subject_id, visit.code) in context.refused_visits:
                    status = "unknown"
                outcomes.append(VisitOutcome(subject.subject_id, visit, status, due, start, end, expected=expected))
                continue
        if this is None:
            not_owed: VisitStatus = "off-study" if off_study else "not-yet-due"
            status = "missed" if end < last_contact else not_owed
            if (subject.subject_id, visit.code) in context.refused_visits:
                status = "unknown"  # its visits.csv row was refused: held or not, nobody can tell
            outcomes.append(VisitOutcome(subject.subject_id, visit, status, due, start, end, expected=expected))
            continue
        status = "done" if start <= this.day <= end else "out-of-window"
        outcomes.append(
            VisitOutcome(
                subject.subject_id, visit, status, due, start, end, this.day, this.line, expected, missing, unknown
            )
        )
        last_held = owed_from = this.day
    return SubjectSchedule(subject.subject_id, anchor, fallback, last_contact, off_study, tuple(outcomes))


def _expected(
    context: _Context, visit: ProtocolVisit, held: bool, subject_id: str
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(expected, missing, unknown) items of a visit; missing and unknown only for a visit held."""
    activities = context.study.protocol.activities
    sourced = [
        (item, SOURCE_FILES.get(activities[key].source, "labs.csv"))
        for key in visit.activities
        for item in activity_items(key, activities[key])
    ]
    expected = tuple(item for item, _ in sourced)
    if context.present is None or not held:
        return expected, (), ()
    there = context.present.get((subject_id, visit.code), set())
    absent = [item for item, file in sourced if file in context.absent]
    missing = tuple(item for item, _ in sourced if item not in absent and not _item_present(item, there))
    return expected, missing, tuple(absent)


def schedule_findings(study: StudyDefinition, schedules: Sequence[SubjectSchedule]) -> list[Finding]:
    """validate's notes: no BL, no anchor, missed visits and visits out of window, subject by subject."""
    findings: list[Finding] = []
    window = study.protocol.visit_window_days
    for schedule in schedules:
        if not schedule.has_visits:
            continue
        if schedule.anchor is None:
            findings.append(Finding(VISITS, None, "no-baseline", f"{schedule.subject_id} has no BL visit"))
            continue
        if schedule.anchor_fallback:
            baseline = next(o.visit_date for o in schedule.visits if o.visit.code == "BL")
            findings.append(
                Finding(
                    PROCEDURES,
                    None,
                    "no-anchor",
                    f"{schedule.subject_id} has no completed MSC infusion: visit months counted from BL ({baseline})",
                )
            )
        for outcome in schedule.visits:
            code, sid = outcome.visit.code, schedule.subject_id
            if outcome.status == "missed":
                if outcome.visit.latest_after_previous_months is None:
                    message = f"{sid} {code} (due {outcome.due})"
                else:
                    message = f"{sid} {code} (due {outcome.due}; no follow-up by {outcome.window_end})"
                findings.append(Finding(VISITS, None, "missed-visit", message))
            elif outcome.status == "out-of-window":
                if outcome.window_end - outcome.due == timedelta(days=window):
                    where = f"due {outcome.due} +/- {window} days"
                else:
                    where = f"due {outcome.due}, window {outcome.window_start} to {outcome.window_end}"
                findings.append(
                    Finding(VISITS, outcome.line, "out-of-window", f"{sid} {code} on {outcome.visit_date}, {where}")
                )
    return findings
