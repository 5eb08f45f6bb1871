"""The protocol schedule at load time: each subject's day 0, the schedule's findings, rows dated off their visit.

The schedule is evaluated once the procedures are in (day 0 may be the MSC infusion) and the subjects' timelines
are resolved (fhir_lupus/model/_schedule.py decides missed and out-of-window visits). Its day 0 then places the
lab, Treg and SLEDAI-2K rows: one dated away from the visit it names is a query (``visit_windows``), and
``schedule`` does not count it as measured there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from fhir_lupus.model._edit_checks import Flags, visit_windows
from fhir_lupus.model._entities import Subject, TreatmentProcedure, TregMeasurement, Visit
from fhir_lupus.model._records import Located
from fhir_lupus.model._schedule import evaluate_schedule, schedule_findings
from fhir_lupus.model._scoring import CheckedLab, ScoredAssessment
from fhir_lupus.model._study import StudyDefinition
from fhir_lupus.model._timeline import SubjectTimeline

__all__ = ["place_visits"]


def place_visits(
    study: StudyDefinition,
    subjects: Iterable[Subject],
    visits: list[Located[Visit]],
    procedures: list[Located[TreatmentProcedure]],
    timelines: Mapping[str, SubjectTimeline],
    measured: tuple[list[Located[CheckedLab]], list[Located[TregMeasurement]], list[Located[ScoredAssessment]]],
    flags: Flags,
    *,
    findings_at: int,
) -> set[tuple[str, int]]:
    """The schedule's findings go in at ``findings_at`` (where the visits pass left off, so the report keeps file
    order); returns the (file, line) of the ``measured`` rows (labs, Treg, SLEDAI-2K) dated outside their visit."""
    schedules = evaluate_schedule(study, subjects, visits, procedures, timelines=timelines)
    flags.report.findings[findings_at:findings_at] = schedule_findings(study, schedules)
    anchors = {schedule.subject_id: schedule.anchor for schedule in schedules if schedule.anchor is not None}
    held = {(v.record.subject_id, v.record.visit_code): v.record.visit_date for v in visits}
    labs, treg, sledai = measured
    rows: list[tuple[Located[Any], str, str, date, str]] = []
    rows += [
        (r, r.record.lab.subject_id, r.record.lab.visit_code, r.record.lab.collected_at.date(), "collected_at")
        for r in labs
    ]
    rows += [(r, r.record.subject_id, r.record.visit_code, r.record.measured_at.date(), "measured_at") for r in treg]
    for r in sledai:
        assessment = r.record.assessment
        rows.append((r, assessment.subject_id, assessment.visit_code, assessment.assessed_on, "assessed_on"))
    return visit_windows(study, anchors, held, rows, flags)
