"""Pass 3 for screening.csv and medications.csv: references between files and the medication catalogue.

A screened candidate who enrolled is the subject of subjects.csv with the same id, so the two must agree on
sex and birth date, and screening comes before enrolment. A medication row belongs to a subject or a screened
candidate; its drug, route, frequency and outcome are keys of mappings/terminology/medications.yaml and its dose
unit is UCUM. The edit checks of mappings/checks/ apply (``HistoryChecks``): contradictions (a pregnancy recorded
for a man), dates in the future or after the subject's participation, implausible screening values and doses,
and a course started after its candidate's screening (a note: eligibility ignores it). A refused row keeps its
file, line, column and reason (LoadReport.reject), as everywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Protocol, TypeVar

from pydantic import BaseModel

from fhir_lupus.errors import UnitError
from fhir_lupus.model._check_rules import CheckRules
from fhir_lupus.model._edit_checks import Flags, LabChecks, contradictions, medication_doses, screening_values
from fhir_lupus.model._entities import Subject
from fhir_lupus.model._history import MedicationHistory, ScreeningRecord
from fhir_lupus.model._records import LoadReport, Located
from fhir_lupus.model._timeline import DateChecks
from fhir_lupus.terminology import MappingPack, UnitConverter, load_medication_catalogue

__all__ = ["MEDICATIONS", "SCREENING", "HistoryChecks", "check_history"]

SCREENING, MEDICATIONS = "screening.csv", "medications.csv"

M = TypeVar("M", bound=BaseModel)


class _Reader(Protocol):
    def __call__(self, name: str, model: type[M], key: tuple[str, ...]) -> list[Located[M]]: ...


@dataclass(frozen=True)
class HistoryChecks:
    """The edit checks and the subjects' timelines, for the two files of this module."""

    rules: CheckRules
    flags: Flags
    labs: LabChecks
    dates: DateChecks


def check_history(
    read: _Reader,
    report: LoadReport,
    subjects: dict[str, Located[Subject]],
    units: UnitConverter,
    pack: MappingPack,
    checks: HistoryChecks,
) -> tuple[list[Located[ScreeningRecord]], list[Located[MedicationHistory]]]:
    """Read and check both files (each optional); refused rows go to ``report``."""
    screening = [
        row
        for row in read(SCREENING, ScreeningRecord, ("subject_id",))
        if _screening_ok(row, report, subjects, units) and not _screening_dates(row, subjects, checks)
    ]
    screening = contradictions(checks.rules, SCREENING, screening, checks.flags)
    screening_values(checks.labs, screening, units)
    screened_on = {row.record.subject_id: row.record.screened_on for row in screening}
    catalogue = load_medication_catalogue(pack)
    known = set(subjects) | {row.record.subject_id for row in screening}
    medications = []
    for row in read(MEDICATIONS, MedicationHistory, ("medication_id",)):
        record = row.record
        if record.subject_id not in known:
            refused = [
                r for r in report.rejects if r.file == SCREENING and r.row.get("subject_id") == record.subject_id
            ]
            reason = (
                f"candidate {record.subject_id} was rejected ({SCREENING}:{refused[0].line})"
                if refused
                else f"unknown subject {record.subject_id} (neither in subjects.csv nor in {SCREENING})"
            )
            report.reject(row, "subject_id", reason)
            continue
        problem = next(
            (
                (column, f"{column} {value!r} is not in mappings/terminology/medications.yaml ({table})")
                for column, value, table in (
                    ("drug", record.drug, catalogue.drugs),
                    ("route", record.route, catalogue.routes),
                    ("frequency", record.frequency, catalogue.frequencies),
                    ("outcome", record.outcome, catalogue.outcomes),
                )
                if value is not None and value not in table
            ),
            None,
        )
        if problem is None and record.dose_unit:
            try:
                units.to_ucum(record.dose_unit)
            except UnitError as exc:
                problem = ("dose_unit", str(exc))
        if problem is not None:
            report.reject(row, *problem)
            continue
        if _medication_dates(row, screened_on.get(record.subject_id), checks):
            continue
        medications.append(row)
    medication_doses(checks.rules, medications, units, checks.flags)
    return screening, medications


def _screening_dates(
    row: Located[ScreeningRecord], subjects: dict[str, Located[Subject]], checks: HistoryChecks
) -> bool:
    """Screening and consent: not in the future, and before the enrolment of a candidate who enrolled."""
    record = row.record
    for column, day in (("screened_on", record.screened_on), ("consent_on", record.consent_on)):
        if day is None:
            continue
        if checks.dates.future(row, day, column):
            return True
        enrolled = subjects.get(record.subject_id)
        if enrolled is not None and day > enrolled.record.enrolled_on:
            return checks.flags.raise_(
                "screening-after-enrolment",
                row,
                column,
                f"{column} {day} is after the enrolment of {record.subject_id} on {enrolled.record.enrolled_on} "
                f"(subjects.csv:{enrolled.line})",
            )
    return False


def _medication_dates(row: Located[MedicationHistory], screened: date | None, checks: HistoryChecks) -> bool:
    """A course: not in the future, not started after the subject's participation (a candidate who did not enrol
    has no timeline: only the future is impossible for it); one started after its
    candidate's screening is a note (eligibility, judged as of the screening date, ignores it)."""
    record = row.record
    what = f"{record.drug} course"
    if checks.dates.future(row, record.ended_on, "ended_on") or checks.dates.dated(
        row, record.subject_id, record.started_on, "started_on", what
    ):
        return True
    if screened is not None and record.started_on > screened:
        checks.flags.raise_(
            "medication-after-screening",
            row,
            "started_on",
            f"{record.drug} course started on {record.started_on}, after {record.subject_id} was screened on "
            f"{screened}: eligibility does not count it",
        )
    return False


def _screening_ok(
    row: Located[ScreeningRecord],
    report: LoadReport,
    subjects: dict[str, Located[Subject]],
    units: UnitConverter,
) -> bool:
    record = row.record
    enrolled = subjects.get(record.subject_id)
    if enrolled is not None:
        subject = enrolled.record
        if record.sex != subject.sex:
            report.reject(row, "sex", f"{record.sex}, but {subject.sex} in subjects.csv:{enrolled.line}")
            return False
        if record.birth_date and record.birth_date != subject.birth_date:
            report.reject(
                row, "birth_date", f"{record.birth_date}, but {subject.birth_date} in subjects.csv:{enrolled.line}"
            )
            return False
    if record.urine_protein_unit:
        try:
            units.to_ucum(record.urine_protein_unit)
        except UnitError as exc:
            report.reject(row, "urine_protein_unit", str(exc))
            return False
    return True
