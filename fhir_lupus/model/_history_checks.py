"""Pass 3 for screening.csv and medications.csv: references between files and the medication catalogue.

A screened candidate who enrolled is the subject of subjects.csv with the same id, so the two must agree on
sex and birth date. A medication row belongs to a subject or a screened candidate; its drug, route, frequency
and outcome are keys of mappings/terminology/medications.yaml and its dose unit is UCUM. A refused row keeps
its file, line, column and reason (LoadReport.reject), as everywhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, TypeVar

from pydantic import BaseModel

from fhir_lupus.errors import UnitError
from fhir_lupus.model._records import LoadReport, Located
from fhir_lupus.model.entities import Subject
from fhir_lupus.model.history import MedicationHistory, ScreeningRecord
from fhir_lupus.terminology.medications import load_medication_catalogue
from fhir_lupus.terminology.units import UnitConverter

__all__ = ["MEDICATIONS", "SCREENING", "check_history"]

SCREENING, MEDICATIONS = "screening.csv", "medications.csv"

M = TypeVar("M", bound=BaseModel)


class _Reader(Protocol):
    def __call__(self, name: str, model: type[M], key: tuple[str, ...]) -> list[Located[M]]: ...


def check_history(
    read: _Reader,
    report: LoadReport,
    subjects: dict[str, Located[Subject]],
    units: UnitConverter,
    mappings_root: Path,
) -> tuple[list[Located[ScreeningRecord]], list[Located[MedicationHistory]]]:
    """Read and check both files (each optional); refused rows go to ``report``."""
    screening = [
        row for row in read(SCREENING, ScreeningRecord, ("subject_id",)) if _screening_ok(row, report, subjects, units)
    ]
    catalogue = load_medication_catalogue(mappings_root)
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
        medications.append(row)
    return screening, medications


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
