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
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

from fhir_lupus.model._check_rules import load_check_rules, load_lab_limits
from fhir_lupus.model._edit_checks import Flags, LabChecks
from fhir_lupus.model._records import LoadReport, Located
from fhir_lupus.model._timeline import DateChecks, SubjectTimeline
from fhir_lupus.terminology import LabValue, MappingPack, UnitConverter

__all__ = ["ResultToCheck", "check_results"]


class ResultToCheck(Protocol):
    """What the checks read of a lab result, read already (a signals ``Point`` is one); ``ucum`` None: a unit
    UCUM cannot read, whose value is then compared with no limit."""

    @property
    def subject_id(self) -> str: ...
    @property
    def analyte(self) -> str: ...
    @property
    def value(self) -> LabValue: ...
    @property
    def ucum(self) -> str | None: ...
    @property
    def ref_low(self) -> Decimal | None: ...
    @property
    def ref_high(self) -> Decimal | None: ...
    @property
    def collected_at(self) -> datetime: ...


def check_results(
    results: Iterable[Located[Any]],
    pack: MappingPack,
    *,
    timelines: Mapping[str, SubjectTimeline] | None = None,
    today: date | None = None,
    units: UnitConverter | None = None,
) -> LoadReport:
    """The rows the checks refuse (``rejects``) or query (``queries``), severities as mappings/checks/ says. Each
    of ``results`` is a ``ResultToCheck`` with where it was read (file, line and the raw cells a report shows).
    ``timelines``: the subjects' participation (a result after its end is refused); without them only the future
    is ruled out. ``units``: the caller's converter, whose conversion factors are then computed once."""
    report = LoadReport()
    flags = Flags(load_check_rules(pack), report)
    dates = DateChecks(timelines or {}, flags, today or date.today())
    molar_masses = {key: analyte.molar_mass for key, analyte in pack.labs.analytes.items()}
    values = LabChecks(load_lab_limits(pack), units or UnitConverter(pack), flags, molar_masses)
    for row in results:
        result: ResultToCheck = row.record
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
