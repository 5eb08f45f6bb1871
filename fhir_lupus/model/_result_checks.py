"""The trial's value and date checks applied to lab results that did not come from labs.csv.

A pulled table holds what a hospital's systems wrote: a C3 of -0.85 g/L, a result dated next year, one dated
after the subject left the study. Pull keeps such rows (they are the hospital's record), but nothing derived
from them may be published as if the trial's checks had passed them. ``check_results`` runs the very checks a
labs.csv row goes through (physical and plausible limits, reference limits, a censored bound no assay reports,
the delta check over each subject's series, ``future-date`` and ``after-end`` against the subjects' timelines)
and returns the refusals and queries in a ``LoadReport`` that names each row where it was read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from fhir_lupus.model._check_rules import load_check_rules, load_lab_limits
from fhir_lupus.model._edit_checks import Flags, LabChecks
from fhir_lupus.model._records import LoadReport, Located
from fhir_lupus.model._timeline import DateChecks, SubjectTimeline
from fhir_lupus.terminology import LabValue, MappingPack, UnitConverter

__all__ = ["ResultToCheck", "check_results"]


@dataclass(frozen=True)
class ResultToCheck:
    """One lab result, read, with where it was read (``where``: file, line and the raw cells a report shows)."""

    where: Located[Any]
    subject_id: str
    analyte: str
    value: LabValue
    ucum: str | None  # None: a unit UCUM cannot read; its value is then not compared with any limit
    ref_low: Decimal | None
    ref_high: Decimal | None
    collected_at: datetime


def check_results(
    results: Iterable[ResultToCheck],
    pack: MappingPack,
    *,
    timelines: Mapping[str, SubjectTimeline] | None = None,
    today: date | None = None,
) -> LoadReport:
    """The rows the checks refuse (``rejects``) or query (``queries``), severities as mappings/checks/ says.
    ``timelines``: the subjects' participation (a result after its end is refused); without them only the
    future is ruled out."""
    report = LoadReport()
    flags = Flags(load_check_rules(pack), report)
    dates = DateChecks(timelines or {}, flags, today or date.today())
    molar_masses = {key: analyte.molar_mass for key, analyte in pack.labs.analytes.items()}
    values = LabChecks(load_lab_limits(pack), UnitConverter(pack), flags, molar_masses)
    for result in results:
        row = result.where
        report.read[row.file] += 1
        if dates.dated(row, result.subject_id, result.collected_at.date(), "collected_at", f"{result.analyte} result"):
            continue
        values.check(
            row,
            result.analyte,
            result.ucum,
            result.value.number,
            result.ref_low,
            result.ref_high,
            subject_id=result.subject_id,
            when=result.collected_at,
            comparator=result.value.comparator,
        )
    refused = {(r.file, r.line) for r in report.rejects}
    values.deltas(flags.rules.lab_delta.ratio, lambda row: (row.file, row.line) not in refused)
    return report
