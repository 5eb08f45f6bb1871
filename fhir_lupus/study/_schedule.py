"""The schedule report of a loaded trial (``fhir-lupus schedule``): each subject's visits with the analytes
missing at each visit held, as a table and a CSV. The schedule logic itself (due dates, windows, missed or
skipped visits) is the loader's (fhir_lupus/model/_schedule.py), which also checks it when a trial loads.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date

from fhir_lupus.model import LoadReport, SubjectSchedule, TrialData, evaluate_schedule

__all__ = ["SCHEDULE_CSV_COLUMNS", "present_items", "schedule_report", "schedule_rows"]

VISITS = "visits.csv"
SCHEDULE_CSV_COLUMNS = (
    "subject_id",
    "visit_code",
    "visit_name",
    "month",
    "status",
    "due_date",
    "window_start",
    "window_end",
    "visit_date",
    "days_from_due",
    "days_outside_window",
    "expected",
    "missing",
    "unknown",
    "visits_line",
)


def present_items(data: TrialData) -> dict[tuple[str, str], set[str]]:
    """What each (subject, visit) has rows for: lab analyte keys, the Treg analyte, SLEDAI-2K activities. A row
    dated outside its visit's window (``data.outside_visit``) is not that visit's measurement."""
    present: dict[tuple[str, str], set[str]] = defaultdict(set)
    away = data.outside_visit
    for lab in data.labs:
        if (lab.file, lab.line) in away:
            continue
        present[(lab.record.lab.subject_id, lab.record.lab.visit_code)].add(lab.record.lab.analyte)
    activities = data.study.protocol.activities
    treg_keys = {a for activity in activities.values() if activity.source == "treg" for a in activity.analytes}
    sledai_keys = {key for key, activity in activities.items() if activity.source == "sledai"}
    for treg in data.treg:
        if (treg.file, treg.line) in away:
            continue
        present[(treg.record.subject_id, treg.record.visit_code)].update(
            key for key in treg_keys if isinstance(key, str)
        )
    for scored in data.sledai:
        if (scored.file, scored.line) in away:
            continue
        present[(scored.record.assessment.subject_id, scored.record.assessment.visit_code)].update(sledai_keys)
    return dict(present)


def schedule_report(
    data: TrialData, *, as_of: date | None = None, report: LoadReport | None = None
) -> list[SubjectSchedule]:
    """The schedule of every subject of a loaded trial, with the analytes missing at each visit held; with the
    load ``report``, a visit whose row was refused is ``unknown``."""
    refused = {
        (r.row.get("subject_id", "").strip(), r.row.get("visit_code", "").strip())
        for r in (report.rejects if report is not None else ())
        if r.file == VISITS
    }
    return evaluate_schedule(
        data.study,
        (row.record for row in data.subjects),
        data.visits,
        data.procedures,
        present=present_items(data),
        as_of=as_of,
        timelines=data.timelines,
        refused_visits=refused,
        absent=data.absent,
    )


def schedule_rows(schedules: Sequence[SubjectSchedule]) -> list[dict[str, str]]:
    """One CSV row per subject x protocol visit (SCHEDULE_CSV_COLUMNS); a subject without BL gets one row."""
    rows: list[dict[str, str]] = []
    for schedule in schedules:
        if schedule.anchor is None:
            rows.append(
                {
                    **dict.fromkeys(SCHEDULE_CSV_COLUMNS, ""),
                    "subject_id": schedule.subject_id,
                    "visit_code": "BL",
                    "status": "no-baseline",
                }
            )
            continue
        for outcome in schedule.visits:
            rows.append(
                {
                    "subject_id": schedule.subject_id,
                    "visit_code": outcome.visit.code,
                    "visit_name": outcome.visit.name,
                    "month": str(outcome.visit.month),
                    "status": outcome.status,
                    "due_date": outcome.due.isoformat(),
                    "window_start": outcome.window_start.isoformat(),
                    "window_end": outcome.window_end.isoformat(),
                    "visit_date": outcome.visit_date.isoformat() if outcome.visit_date else "",
                    "days_from_due": "" if outcome.days_from_due is None else str(outcome.days_from_due),
                    "days_outside_window": str(outcome.days_outside_window) if outcome.held else "",
                    "expected": ";".join(outcome.expected),
                    "missing": ";".join(outcome.missing),
                    "unknown": ";".join(outcome.unknown),
                    "visits_line": str(outcome.line) if outcome.line else "",
                }
            )
    return rows
