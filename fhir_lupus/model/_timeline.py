"""One resolved timeline per subject: enrolment, the MSC infusion, leaving the study and death, each with the row
that says so; and the date checks every file's rows go through.

Every command reads a subject's participation from here (validate, screen, schedule, safety, map, push, report,
registry; pull reads the same end from ResearchSubject.period.end), so "when did this subject's participation
end" has one answer:

- **Leaving the study**: subjects.csv ``off_study_on``, else the date of the status history's last row when
  that row leaves the study (``left_study`` of mappings/fhir/lifecycle.yaml). A status that says the subject left
  without any date is a query (``end-date-missing``): the participation is over, its end unknown.
- **Death**: a fatal adverse event (outcome fatal, CTCAE grade 5), dated by its ``resolved_on`` (the date of
  death); without it, its onset is only the earliest date of death (a ``death-date-inexact`` query, and nothing
  is refused for it). Or a coded off-study reason whose code means death (``off_study_reasons`` in
  lifecycle.yaml): the off-study date is then the date of death. Free text is never parsed. Two sources that
  disagree, or one without the other, are a ``death-disagreement`` query.
- **End** of participation: the earlier of leaving and an exact death.

The checks (severities in mappings/checks/checks.yaml): nothing is dated after today (``future-date``); visits,
labs, Treg, SLEDAI-2K, procedures and medication courses are not dated after the end (``after-end``); visits and
procedures not before enrolment (``before-enrolment``); an adverse event may start after the subject left (a
safety follow-up: ``ae-after-off-study`` note) but never after death (``ae-after-death``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from fhir_lupus.model._adverse_events import FATAL_OUTCOME, AdverseEventRow
from fhir_lupus.model._edit_checks import Flags
from fhir_lupus.model._entities import StatusChange, Subject, TreatmentProcedure
from fhir_lupus.model._lifecycle import LifecycleRules
from fhir_lupus.model._records import Located

__all__ = ["DateChecks", "Dated", "SubjectTimeline", "resolve_timelines", "with_infusions"]

SUBJECTS, STATUS_HISTORY, ADVERSE_EVENTS = "subjects.csv", "status_history.csv", "adverse_events.csv"


@dataclass(frozen=True)
class Dated:
    """A day and the row that gives it. ``exact`` False: only the earliest the day can be (an onset)."""

    day: date
    where: str
    exact: bool = True


@dataclass(frozen=True)
class SubjectTimeline:
    subject_id: str
    enrolled_on: date
    enrolled_where: str
    left: Dated | None = None  # left the study (off-study, withdrawn)
    died: Dated | None = None
    ended: bool = False  # participation is over (left, or died), even when no date says when
    infusion_on: date | None = None  # the first completed MSC infusion (procedures.csv)

    @property
    def end(self) -> Dated | None:
        """When participation ended: leaving the study or an exact date of death, whichever came first."""
        known = [d for d in (self.left, self.died) if d is not None and d.exact]
        return min(known, key=lambda d: d.day) if known else None

    def describe_end(self) -> str:
        end = self.end
        if end is None:
            return "no end recorded"
        how = "died" if self.died is not None and end == self.died else "left the study"
        return f"{self.subject_id} {how} on {end.day} ({end.where})"


def resolve_timelines(
    subjects: Mapping[str, Located[Subject]],
    histories: Mapping[str, Sequence[Located[StatusChange]]],
    events: Iterable[Located[AdverseEventRow]],
    rules: LifecycleRules,
    flags: Flags,
    *,
    events_recorded: bool,
) -> dict[str, SubjectTimeline]:
    """Each subject's timeline from its subjects.csv row, its accepted status history and its adverse events
    (rows that passed their own checks); queries go through ``flags``. ``events_recorded``: adverse_events.csv
    holds rows, so a death without a fatal event there is a disagreement."""
    fatal: dict[str, list[Located[AdverseEventRow]]] = {}
    for row in events:
        if row.record.outcome == FATAL_OUTCOME or row.record.grade == 5:
            fatal.setdefault(row.record.subject_id, []).append(row)
    timelines = {}
    for subject_id, located in subjects.items():
        subject = located.record
        history = histories.get(subject_id, ())
        left_row = history[-1] if history and history[-1].record.status in rules.left_study else None
        left: Dated | None = None
        if subject.off_study_on is not None:
            left = Dated(subject.off_study_on, f"{SUBJECTS}:{located.line}")
        elif left_row is not None:
            left = Dated(left_row.record.on, f"{STATUS_HISTORY}:{left_row.line}")
        code = subject.off_study_reason_code or (left_row.record.reason_code if left_row else None)
        says_left = subject.status in rules.left_study or left_row is not None
        if says_left and left is None:
            flags.raise_(
                "end-date-missing",
                located,
                "off_study_on",
                f"{subject_id} is {subject.status} but no date says when it left (off_study_on, or a dated "
                f"{'/'.join(sorted(rules.left_study))} row in {STATUS_HISTORY}); the schedule stops at its last "
                "contact",
                subject_id=subject_id,
            )
        died = _death(located, left, rules.means_death(code), fatal.get(subject_id, []), flags, events_recorded)
        if died is not None and not says_left:
            flags.raise_(
                "death-disagreement",
                located,
                "status",
                f"{subject_id} died on {died.day} ({died.where}) but {SUBJECTS}:{located.line} says {subject.status}",
                subject_id=subject_id,
            )
        timelines[subject_id] = SubjectTimeline(
            subject_id,
            subject.enrolled_on,
            f"{SUBJECTS}:{located.line}",
            left=left,
            died=died,
            ended=says_left or died is not None,
        )
    return timelines


def _death(
    subject: Located[Subject],
    left: Dated | None,
    coded: bool,
    fatal: Sequence[Located[AdverseEventRow]],
    flags: Flags,
    events_recorded: bool,
) -> Dated | None:
    """The date of death the subject's rows give, with a query for every disagreement among them."""
    subject_id = subject.record.subject_id
    by_event = [
        (
            row,
            Dated(
                row.record.resolved_on or row.record.onset_on,
                f"{ADVERSE_EVENTS}:{row.line}",
                exact=row.record.resolved_on is not None,
            ),
        )
        for row in fatal
    ]
    exact = sorted({d.day for _, d in by_event if d.exact})
    if len(exact) > 1:
        row = next(r for r, d in by_event if d.exact and d.day == exact[-1])
        listed = ", ".join(f"{d.day} ({d.where})" for _, d in by_event if d.exact)
        flags.raise_(
            "death-disagreement",
            row,
            "resolved_on",
            f"{subject_id} has fatal events on different days: {listed}",
            subject_id=subject_id,
        )
    from_event = min((d for _, d in by_event), key=lambda d: (not d.exact, d.day), default=None)
    from_code = Dated(left.day, left.where) if coded and left is not None else None
    if from_code is not None and from_event is None and events_recorded:
        flags.raise_(
            "death-disagreement",
            subject,
            "off_study_reason_code",
            f"{subject_id} left the study because of death ({from_code.where}) but {ADVERSE_EVENTS} has no fatal "
            "event for it",
            subject_id=subject_id,
        )
    if from_event is not None and not from_event.exact and from_code is None:
        row = next(r for r, d in by_event if d == from_event)
        flags.raise_(
            "death-date-inexact",
            row,
            "resolved_on",
            f"{subject_id}: fatal event without resolved_on (the date of death); its onset {from_event.day} is the "
            "earliest date of death",
            subject_id=subject_id,
        )
    if from_event is not None and from_code is not None and from_event.exact and from_event.day != from_code.day:
        flags.raise_(
            "death-disagreement",
            subject,
            "off_study_on",
            f"{subject_id} left the study because of death on {from_code.day} ({from_code.where}), the fatal event "
            f"gives {from_event.day} ({from_event.where})",
            subject_id=subject_id,
        )
    if left is not None and from_event is not None and from_event.exact and left.day > from_event.day and not coded:
        flags.raise_(
            "death-disagreement",
            subject,
            "off_study_on",
            f"{subject_id} left the study on {left.day} ({left.where}), after its death on {from_event.day} "
            f"({from_event.where})",
            subject_id=subject_id,
        )
    candidates = [d for d in (from_event, from_code) if d is not None]
    return min(candidates, key=lambda d: (not d.exact, d.day)) if candidates else None


def with_infusions(
    timelines: Mapping[str, SubjectTimeline], procedures: Iterable[Located[TreatmentProcedure]]
) -> dict[str, SubjectTimeline]:
    """The timelines with each subject's first completed MSC infusion (of the accepted procedures)."""
    first: dict[str, date] = {}
    for row in procedures:
        procedure = row.record
        if procedure.kind == "msc_infusion" and procedure.status == "completed":
            day = procedure.started_at.date()
            if procedure.subject_id not in first or day < first[procedure.subject_id]:
                first[procedure.subject_id] = day
    return {sid: replace(t, infusion_on=first.get(sid)) for sid, t in timelines.items()}


class DateChecks:
    """The date rules of the module docstring, for rows of any file; each returns True when it refused the row."""

    def __init__(self, timelines: Mapping[str, SubjectTimeline], flags: Flags, today: date) -> None:
        self.timelines = timelines
        self.flags = flags
        self.today = today

    def future(self, row: Located[Any], day: date | None, column: str, what: str = "") -> bool:
        """``future-date``: nothing in a trial record can have happened after today."""
        if day is None or day <= self.today:
            return False
        return self.flags.raise_(
            "future-date",
            row,
            column,
            f"{f'{what} on' if what else column} {day} is in the future (today is {self.today})",
            value=day.isoformat(),
        )

    def dated(
        self, row: Located[Any], subject_id: str, day: date, column: str, what: str, *, from_enrolment: bool = False
    ) -> bool:
        """``future-date``, ``after-end`` and (``from_enrolment``) ``before-enrolment`` for one dated row."""
        if self.future(row, day, column, what):
            return True
        timeline = self.timelines.get(subject_id)
        if timeline is None:
            return False
        end = timeline.end
        if end is not None and day > end.day:
            return self.flags.raise_(
                "after-end",
                row,
                column,
                f"{what} on {day} is after the end of participation: {timeline.describe_end()}",
                subject_id=subject_id,
                value=day.isoformat(),
            )
        if from_enrolment and day < timeline.enrolled_on:
            return self.flags.raise_(
                "before-enrolment",
                row,
                column,
                f"{what} on {day} is before enrolment ({timeline.enrolled_on}, {timeline.enrolled_where})",
                subject_id=subject_id,
                value=day.isoformat(),
            )
        return False

    def adverse_event(self, row: Located[AdverseEventRow]) -> bool:
        """An event's dates never in the future, its onset never after death; after leaving the study, a note."""
        event = row.record
        refused = [
            self.future(row, day, column)
            for column, day in (
                ("onset_on", event.onset_on),
                ("resolved_on", event.resolved_on),
                ("recorded_on", event.recorded_on),
            )
        ]
        if any(refused):
            return True
        timeline = self.timelines.get(event.subject_id)
        if timeline is None:
            return False
        died = timeline.died
        if died is not None and died.exact and event.onset_on > died.day:
            return self.flags.raise_(
                "ae-after-death",
                row,
                "onset_on",
                f"onset on {event.onset_on} is after {event.subject_id} died on {died.day} ({died.where})",
                subject_id=event.subject_id,
                value=event.onset_on.isoformat(),
            )
        left = timeline.left
        if left is not None and event.onset_on > left.day:
            self.flags.raise_(
                "ae-after-off-study",
                row,
                "onset_on",
                f"onset on {event.onset_on}, after {event.subject_id} left "
                f"the study on {left.day} ({left.where}): a safety follow-up, kept",
                subject_id=event.subject_id,
                value=event.onset_on.isoformat(),
            )
        return False
