"""The value checks of mappings/checks/: a small generic engine over the limits and rules written there.

``Flags`` routes a check's hit by its severity in checks.yaml: a reject refuses the row (file, line, column,
reason), a query or a note becomes a Finding that names the row. The checks themselves:

- ``LabChecks``: a lab value and its reference limits against the analyte's physical and plausible limits
  (lab_limits.yaml, converted to the analyte's unit through UCUM), and the delta check over a subject's results;
- ``contradictions``: rows that contradict themselves (a pregnancy recorded for a man);
- ``sledai_jumps``: SLEDAI-2K totals that jump between consecutive assessments;
- ``medication_doses`` and ``screening_values``: doses and screening numbers beyond the plausible;
- ``visit_windows``: a lab, Treg or SLEDAI-2K row dated away from its visit.

Conversions to a limit's unit are linear for every unit the catalogue knows; the factor of each unit pair is
computed once, so checking a trial costs a multiplication per value.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from fhir_lupus.errors import UnitError
from fhir_lupus.model._check_rules import CheckRules, LabLimit, LabLimits
from fhir_lupus.model._records import Finding, LoadReport, Located, record_key
from fhir_lupus.model._study import StudyDefinition
from fhir_lupus.terminology import UnitConverter

__all__ = ["Flags", "LabChecks", "contradictions", "medication_doses", "sledai_jumps", "visit_windows"]

Where = Located[Any] | tuple[str, int, dict[str, str]]


class Flags:
    """Raise a check on a row: refused (reject), or a Finding (query, note), as checks.yaml says."""

    def __init__(self, rules: CheckRules, report: LoadReport) -> None:
        self.rules = rules
        self.report = report

    def raise_(
        self,
        check: str,
        where: Where,
        column: str | None,
        message: str,
        *,
        subject_id: str | None = None,
        value: str | None = None,
    ) -> bool:
        """Record the hit; True when the row is refused (the caller then drops it)."""
        file, line, row = (where.file, where.line, where.row) if isinstance(where, Located) else where
        severity = self.rules.severity(check)
        if severity == "reject":
            self.report.reject((file, line, row), column, f"{message} [{check}]", check)
            return True
        self.report.findings.append(
            finding(check, severity, file, line, message, row=row, column=column, subject_id=subject_id, value=value)
        )
        return False


def finding(
    check: str,
    severity: str,
    file: str,
    line: int | None,
    message: str,
    *,
    row: Mapping[str, str] | None = None,
    column: str | None = None,
    subject_id: str | None = None,
    value: str | None = None,
) -> Finding:
    """A Finding of ``check``; the value is the row's cell in ``column`` unless given."""
    cells = dict(row or {})
    return Finding(
        file,
        line,
        check,
        message,
        "query" if severity == "query" else "note",
        subject_id=subject_id or cells.get("subject_id") or None,
        column=column,
        value=value if value is not None else (cells.get(column, "") if column else None),
        record=record_key(file, cells) if cells else None,
    )


@functools.lru_cache(maxsize=256)
def _factor(units: UnitConverter, from_ucum: str, to_ucum: str, molar_mass: float | None) -> float | None:
    """The factor from one unit to another (None when they do not convert); every catalogue unit is linear."""
    try:
        return units.convert(1.0, from_ucum, to_ucum, molar_mass=molar_mass)
    except UnitError:
        return None


@dataclass(frozen=True)
class _Value:
    """A numeric lab result in the analyte's limit unit, for the delta check."""

    subject_id: str
    analyte: str
    when: Any  # the collection instant: results are compared in time order
    value: float
    row: Located[Any]


class LabChecks:
    """Physical and plausible limits for one result at a time; ``deltas`` over all of them at the end."""

    def __init__(self, limits: LabLimits, units: UnitConverter, flags: Flags, molar_masses: Mapping[str, float | None]):
        self.limits = limits.analytes
        self.units = units
        self.flags = flags
        self.molar_masses = molar_masses
        self._values: list[_Value] = []

    def in_unit(self, analyte: str, value: Decimal | float, ucum: str | None) -> tuple[float, LabLimit] | None:
        """``value`` in the analyte's limit unit, with its limits (``ucum`` None: it is in that unit already);
        None when the analyte has no limits or the unit does not convert."""
        limit = self.limits.get(analyte)
        if limit is None:
            return None
        factor = 1.0 if ucum is None else _factor(self.units, ucum, limit.unit, self.molar_masses.get(analyte))
        return None if factor is None else (float(value) * factor, limit)

    def check(
        self,
        row: Located[Any],
        analyte: str,
        ucum: str | None,
        value: Decimal | None,
        ref_low: Decimal | None = None,
        ref_high: Decimal | None = None,
        *,
        subject_id: str,
        when: Any = None,
        comparator: str | None = None,
    ) -> bool:
        """Check a result and its reference limits; True when the row is refused. The result joins the delta
        check unless it is censored (``comparator``: a bound is not a value), and a censored bound is checked
        against the reference limits."""
        if ucum is None:
            return False
        refused = self._censored_bound(row, analyte, comparator, value, ref_low, ref_high, subject_id)
        for column, number in (("value", value), ("ref_low", ref_low), ("ref_high", ref_high)):
            if number is None:
                continue
            converted = self.in_unit(analyte, number, ucum)
            if converted is None:
                continue
            amount, limit = converted
            shown = f"{number:g} {ucum}" + ("" if ucum == limit.unit else f" (= {amount:.4g} {limit.unit})")
            if broken := limit.physical.broken_by(amount):
                refused |= self.flags.raise_(
                    "lab-impossible",
                    row,
                    column,
                    f"{analyte} {column} {shown} is {broken} {limit.unit}: impossible",
                    subject_id=subject_id,
                )
            elif broken := limit.plausible.broken_by(amount):
                refused |= self.flags.raise_(
                    "lab-implausible",
                    row,
                    column,
                    f"{analyte} {column} {shown} is {broken} {limit.unit}, the "
                    f"plausible range ({limit.reason}): a unit slip? Confirm or correct",
                    subject_id=subject_id,
                )
            elif column == "value" and comparator is None and when is not None:
                self._values.append(_Value(subject_id, analyte, when, amount, row))
        return refused

    def _censored_bound(
        self,
        row: Located[Any],
        analyte: str,
        comparator: str | None,
        bound: Decimal | None,
        low: Decimal | None,
        high: Decimal | None,
        subject_id: str,
    ) -> bool:
        """``<X`` with X above the upper reference limit, or ``>X`` with X below the lower one, is no assay limit."""
        if comparator is None or bound is None:
            return False
        if comparator.startswith("<") and high is not None and bound > high:
            why = f"{comparator}{bound:g} is above the upper reference limit {high:g}"
        elif comparator.startswith(">") and low is not None and bound < low:
            why = f"{comparator}{bound:g} is below the lower reference limit {low:g}"
        else:
            return False
        return self.flags.raise_(
            "lab-censored-bound",
            row,
            "value",
            f"{analyte} {why}: no assay reports such a limit. Confirm or correct",
            subject_id=subject_id,
        )

    def deltas(self, ratio: Decimal, accepted: Callable[[Located[Any]], bool]) -> None:
        """Query every result that is ``ratio`` times above or below each of its neighbours (module docstring).
        ``accepted`` tells which rows survived the later checks: only those are compared."""
        series: dict[tuple[str, str], list[_Value]] = defaultdict(list)
        for item in self._values:
            if accepted(item.row):
                series[(item.subject_id, item.analyte)].append(item)
        limit = float(ratio)
        for (subject_id, analyte), values in series.items():
            values.sort(key=lambda v: v.when)
            floor = float(self.limits[analyte].floor)

            def apart(i: int, j: int, values: list[_Value] = values, floor: float = floor) -> bool:
                return 0 <= j < len(values) and _ratio(values[i].value, values[j].value, floor) >= limit

            for index, item in enumerate(values):
                neighbours = [i for i in (index - 1, index + 1) if 0 <= i < len(values)]
                if not neighbours or not all(apart(index, i) for i in neighbours):
                    continue
                if len(neighbours) == 1:  # at an end: the jump is this value's only if its neighbour fits its own
                    other = neighbours[0] + (neighbours[0] - index)
                    if apart(neighbours[0], other):
                        continue
                listed = ", ".join(
                    f"{values[i].value:g} ({values[i].row.file}:{values[i].row.line})" for i in neighbours
                )
                factor = min(_ratio(item.value, values[i].value, floor) for i in neighbours)
                self.flags.raise_(
                    "lab-delta",
                    item.row,
                    "value",
                    f"{analyte} {item.value:g} {self.limits[analyte].unit} is {factor:.0f} times away from its "
                    f"neighbours {listed}: an isolated jump (unit slip?). Confirm or correct",
                    subject_id=subject_id,
                )
        self._values.clear()


def _ratio(a: float, b: float, floor: float) -> float:
    low, high = sorted((a + floor, b + floor))
    if low <= 0:
        return float("inf") if high > 0 else 1.0
    return high / low


def contradictions(rules: CheckRules, file: str, rows: Iterable[Located[Any]], flags: Flags) -> list[Located[Any]]:
    """The rows of ``file`` that break no contradiction rule of checks.yaml (the others are raised)."""
    kept = []
    applicable = [rule for rule in rules.contradictions if rule.file == file]
    for row in rows:
        refused = False
        for rule in applicable:
            if all(getattr(row.record, column, None) in values for column, values in rule.when.items()):
                for column, forbidden in rule.forbid.items():
                    if getattr(row.record, column, None) in forbidden:
                        refused |= flags.raise_(
                            "contradiction", row, column, f"{column} {row.row.get(column, '')}: {rule.reason}"
                        )
        if not refused:
            kept.append(row)
    return kept


def sledai_jumps(rules: CheckRules, totals: Iterable[tuple[Located[Any], str, date, int]], flags: Flags) -> None:
    """Query totals that move by more than ``sledai_jump.max_change`` from the subject's previous assessment.
    ``totals``: (row, subject, assessed on, total)."""
    by_subject: dict[str, list[tuple[date, int, Located[Any]]]] = defaultdict(list)
    for row, subject_id, day, total in totals:
        by_subject[subject_id].append((day, total, row))
    limit = rules.sledai_jump.max_change
    for subject_id, items in by_subject.items():
        items.sort(key=lambda item: (item[0], item[2].line))
        for (day, total, row), (before_day, before, before_row) in zip(items[1:], items, strict=False):
            if abs(total - before) > limit:
                flags.raise_(
                    "sledai-jump",
                    row,
                    "descriptors",
                    f"{subject_id}: SLEDAI-2K {total} on {day}, {total - before:+d} "
                    f"from {before} on {before_day} ({before_row.file}:{before_row.line}); more than {limit} in one "
                    "step: confirm or correct",
                    subject_id=subject_id,
                    value=str(total),
                )


def medication_doses(rules: CheckRules, rows: Iterable[Located[Any]], units: UnitConverter, flags: Flags) -> None:
    """Query doses above the largest single dose of their drug (``medication_doses``); a unit of another
    dimension than every limit of the drug is left alone (screening says it cannot compare it)."""
    for row in rows:
        record = row.record
        limits = rules.medication_doses.get(record.drug, ())
        if record.dose is None or not record.dose_unit or not limits:
            continue
        try:
            ucum = units.to_ucum(record.dose_unit)
        except UnitError:
            continue
        for limit in limits:
            factor = _factor(units, ucum, limit.unit, None)
            if factor is None:
                continue
            dose = float(record.dose) * factor
            if dose > limit.max:
                flags.raise_(
                    "medication-dose-implausible",
                    row,
                    "dose",
                    f"{record.drug} {record.dose:g} {record.dose_unit} "
                    f"is above {limit.max:g} {limit.unit} ({limit.reason}): confirm or correct",
                )
            break


def screening_values(lab_checks: LabChecks, rows: Iterable[Located[Any]], units: UnitConverter) -> None:
    """screening.csv's ALT (and its ULN, in ALT's unit: the file gives none, so the limit's unit is assumed) and
    24-h urine protein (in its urine_protein_unit) against the limits of the same analytes (queries only)."""
    for row in rows:
        record = row.record
        cells: list[tuple[str, str, Decimal | None, str | None]] = [
            ("alt", "alt", record.alt, None),
            ("alt_uln", "alt", record.alt_uln, None),
            ("urine_protein_24h", "urine_protein_24h", record.urine_protein_24h, record.urine_protein_unit),
        ]
        for column, analyte, number, unit in cells:
            if number is None or (column == "urine_protein_24h" and not unit):
                continue
            try:
                converted = lab_checks.in_unit(analyte, number, units.to_ucum(unit) if unit else None)
            except UnitError:
                continue
            if converted is None:
                continue
            value, limit = converted
            if broken := limit.plausible.broken_by(value):
                shown = f"{number:g} {unit or limit.unit}"
                lab_checks.flags.raise_(
                    "screening-implausible",
                    row,
                    column,
                    f"{column} {shown} is {broken} {limit.unit} ({limit.reason}): confirm or correct",
                )


def visit_windows(
    study: StudyDefinition,
    anchors: Mapping[str, date],
    visits: Mapping[tuple[str, str], date],
    rows: Iterable[tuple[Located[Any], str, str, date, str]],
    flags: Flags,
) -> set[tuple[str, int]]:
    """Query rows dated outside their visit's window; returns their (file, line), which ``schedule`` does not
    count as measured at that visit. ``rows``: (row, subject, visit code, day, column). The window is the
    protocol's (due date +/- visit_window_days from the subject's day 0) or visit_window_days around the day the
    visit was held, whichever holds the day."""
    months = {visit.code: visit.month for visit in study.visits()}
    width = timedelta(days=study.protocol.visit_window_days)
    outside: set[tuple[str, int]] = set()
    for row, subject_id, code, day, column in rows:
        held = visits.get((subject_id, code))
        if held is None:
            continue
        if abs(day - held) <= width:
            continue
        anchor, month = anchors.get(subject_id), months.get(code)
        if anchor is not None and month is not None and abs(day - study.due_date(anchor, month)) <= width:
            continue
        outside.add((row.file, row.line))
        flags.raise_(
            "lab-outside-visit",
            row,
            column,
            f"{subject_id} {code}: dated {day}, {(day - held).days:+d} days from the "
            f"visit held on {held} (window +/- {width.days} days): not counted as that visit's; confirm the visit "
            "or the date",
            subject_id=subject_id,
            value=day.isoformat(),
        )
    return outside
