"""labs.csv rows in pass 3 of the loader: each value read, coded against the lab catalogue, dated and checked.

A row is refused, with the column to blame, when its analyte is not in the catalogue, its value cannot be read
or is no number a result can be, a reference range goes with a result that is not numeric, its unit, method or
specimen does not resolve to one LOINC code, its date breaks the timeline, or an edit check refuses its value
(fhir_lupus/model/_edit_checks.py). An accepted row is a ``CheckedLab``: read and coded once, for the scoring,
the schedule and the map.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_lupus.errors import TerminologyError, UnitError
from fhir_lupus.model._csv import number_problem
from fhir_lupus.model._edit_checks import LabChecks
from fhir_lupus.model._entities import LabResult
from fhir_lupus.model._records import LoadReport, Located
from fhir_lupus.model._scoring import CheckedLab
from fhir_lupus.model._timeline import DateChecks
from fhir_lupus.terminology import LabCatalogue, parse_lab_value

__all__ = ["check_labs"]

_COLUMNS = ("value", "unit", "method", "specimen")  # lab columns a TerminologyError may blame
# (row, subject, visit code) -> whether the row's subject and visit are accepted (refusing it when not)
Belongs = Callable[[Located[Any], str, str], bool]


def check_labs(
    rows: list[Located[LabResult]],
    belongs: Belongs,
    catalogue: LabCatalogue,
    lab_checks: LabChecks,
    dates: DateChecks,
    report: LoadReport,
) -> list[Located[CheckedLab]]:
    """The accepted rows, in file order; every other row refused into ``report`` with its reason."""
    accepted = []
    ordinals = catalogue.pack.ordinals
    for row in rows:
        lab = row.record
        if not belongs(row, lab.subject_id, lab.visit_code):
            continue
        if lab.analyte not in catalogue.pack.labs.analytes:
            report.reject(row, "analyte", f"analyte {lab.analyte!r} is not in the lab catalogue")
            continue
        try:
            value = parse_lab_value(lab.value, ordinals)
        except ValueError as exc:
            report.reject(row, "value", str(exc))
            continue
        if value.number is not None and (problem := number_problem(value.number, lab.value)):
            report.reject(row, "value", problem)
            continue
        if value.kind != "quantity" and (lab.ref_low is not None or lab.ref_high is not None):
            report.reject(row, "ref_low", f"a reference range needs a numeric result, not a {value.kind}")
            continue
        try:
            resolved = catalogue.resolve(lab.analyte, value, lab.unit, lab.method, lab.specimen)
        except UnitError as exc:
            report.reject(row, "unit", str(exc))
            continue
        except TerminologyError as exc:
            fallback = "method" if lab.method else "unit" if lab.unit else "value"
            report.reject(row, exc.field if exc.field in _COLUMNS else fallback, str(exc))
            continue
        if dates.dated(row, lab.subject_id, lab.collected_at.date(), "collected_at", f"{lab.analyte} result"):
            continue
        if lab_checks.check(
            row,
            lab.analyte,
            resolved.ucum,
            value.number,
            lab.ref_low,
            lab.ref_high,
            subject_id=lab.subject_id,
            when=lab.collected_at,
            comparator=value.comparator,
        ):
            continue
        accepted.append(Located(CheckedLab(lab, value, resolved), row.file, row.line, row.row))
    return accepted
