"""Cohort statistics and the responder engine: pure functions over readings, no I/O and no plotting.

A censored reading (``<10``) is an interval, not a number. Change-from-baseline statistics need numbers, so a
pair with a censored end is left out of the median and counted as such; a responder criterion is decided on
the interval and is undecidable (not evaluable) only when the interval lies on both sides of the limit.

A reading is not final when its value is preliminary (a SLEDAI-2K total whose lab descriptors could not be
judged) or when an input row of that subject and visit was refused (``Incomplete``): such a pair is left out of
the median and named, so a statistic with one is marked preliminary, and a responder criterion on it is not
evaluable, and marked ``preliminary`` (SDTM RS never writes it as a final result). Nothing computed from
incomplete input is shown as final.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fhir_lupus.report._definitions import Criterion, ResponseDefinition

__all__ = [
    "NOT_EVALUABLE",
    "ChangeSummary",
    "Classification",
    "Incomplete",
    "Interval",
    "Reading",
    "ResponseTally",
    "classify",
    "evaluate_criterion",
    "incomplete_input",
    "percent_change",
    "quartiles",
    "summarise_changes",
    "tally_responses",
]

NOT_EVALUABLE = "not_evaluable"
BASELINE = 0  # protocol month of the baseline visit

# series key -> protocol month -> reading; a subject's readings at its protocol visits
SubjectReadings = Mapping[str, Mapping[int, "Reading"]]


@dataclass(frozen=True)
class Reading:
    """One value in the series' display unit; ``comparator`` (<, <=, >, >=) when the lab reported a bound."""

    value: float
    comparator: str | None = None
    final: bool = True  # False: a preliminary value (a lower bound), never a final statistic's input

    @property
    def censored(self) -> bool:
        return self.comparator is not None

    def interval(self) -> Interval:
        """The values the reading allows; a ``<`` bound allows anything below it (no floor is assumed)."""
        inf = math.inf
        match self.comparator:
            case None:
                return Interval(self.value, self.value)
            case "<":
                return Interval(-inf, self.value, high_open=True)
            case "<=":
                return Interval(-inf, self.value)
            case ">":
                return Interval(self.value, inf, low_open=True)
            case ">=":
                return Interval(self.value, inf)
        raise ValueError(f"unknown comparator {self.comparator!r}")

    def __str__(self) -> str:
        return f"{self.comparator or ''}{self.value:g}"


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def holds(self, op: str, limit: float) -> bool | None:
        """True when every value of the interval satisfies ``value op limit``, False when none does, else None."""
        below_all = self.high < limit or (self.high == limit and self.high_open)  # every value < limit
        at_or_below_all = self.high <= limit  # every value <= limit
        above_all = self.low > limit or (self.low == limit and self.low_open)  # every value > limit
        at_or_above_all = self.low >= limit  # every value >= limit
        if op == "<":
            return True if below_all else False if at_or_above_all else None
        if op == "<=":
            return True if at_or_below_all else False if above_all else None
        if op == ">":
            return True if above_all else False if at_or_below_all else None
        if op == ">=":
            return True if at_or_above_all else False if below_all else None
        raise ValueError(f"unknown operator {op!r}")


def percent_change(baseline: Reading, value: Reading) -> Interval | None:
    """100 x (value - baseline) / baseline as an interval; None when the baseline is censored or not positive
    (a change relative to an unknown or zero baseline has no meaning)."""
    if baseline.censored or baseline.value <= 0:
        return None
    span = value.interval()
    scale = 100.0 / baseline.value
    return Interval(
        (span.low - baseline.value) * scale,
        (span.high - baseline.value) * scale,
        span.low_open,
        span.high_open,
    )


@dataclass(frozen=True)
class Incomplete:
    """(subject, protocol month) pairs of one series whose input row was refused: the value there is unknown.
    ``ANY`` stands for a subject or month the refused row does not tell (its cell could not be read)."""

    ANY = "*"
    cells: frozenset[tuple[str, int | str]] = frozenset()
    why: tuple[tuple[tuple[str, int | str], str], ...] = ()  # the refused row of each cell, for the reader

    def holds(self, subject: str, month: int) -> bool:
        return any((s == subject or s == self.ANY) and (m == month or m == self.ANY) for s, m in self.cells)

    def subjects(self) -> set[str]:
        return {s for s, _ in self.cells if s != self.ANY}


# -- change from baseline ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangeSummary:
    """Change from baseline at one protocol month: median and IQR over the subjects with exact values at both
    visits; the others are named by why they are not in it."""

    month: int
    changes: tuple[float, ...]
    missing_baseline: tuple[str, ...] = ()
    missing_visit: tuple[str, ...] = ()
    censored: tuple[str, ...] = ()
    incomplete: tuple[str, ...] = ()  # a refused input row or a preliminary value at baseline or the visit

    @property
    def final(self) -> bool:
        """Whether the statistic is computed from complete input (otherwise it is preliminary)."""
        return not self.incomplete

    @property
    def n(self) -> int:
        return len(self.changes)

    @property
    def median(self) -> float | None:
        return float(f"{statistics.median(self.changes):.12g}") if self.changes else None

    @property
    def iqr(self) -> tuple[float, float] | None:
        return quartiles(self.changes)


def quartiles(values: Sequence[float]) -> tuple[float, float] | None:
    """First and third quartile by linear interpolation between order statistics (the "inclusive" method,
    R's type 7, what most statistics packages print by default); one value is its own IQR."""
    if not values:
        return None
    if len(values) == 1:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return float(f"{q1:.12g}"), float(f"{q3:.12g}")  # drop binary noise: 0.14500000000000002 -> 0.145


def summarise_changes(
    readings: Mapping[str, Mapping[int, Reading]],
    months: Sequence[int],
    incomplete: Incomplete | None = None,
) -> list[ChangeSummary]:
    """``readings``: subject -> protocol month -> reading of one series (month 0 is baseline); ``incomplete``:
    where an input row was refused (a subject refused whole is not in ``readings`` and is named too)."""
    refused = incomplete or Incomplete()
    out: list[ChangeSummary] = []
    for month in months:
        changes: list[float] = []
        missing_baseline: list[str] = []
        missing_visit: list[str] = []
        censored: list[str] = []
        partial: list[str] = []
        for subject in sorted(set(readings) | refused.subjects()):
            by_month = readings.get(subject, {})
            base, there = by_month.get(BASELINE), by_month.get(month)
            preliminary = any(r is not None and not r.final for r in (base, there))
            if refused.holds(subject, BASELINE) or refused.holds(subject, month) or preliminary:
                partial.append(subject)
            elif base is None:
                missing_baseline.append(subject)
            elif there is None:
                missing_visit.append(subject)
            elif base.censored or there.censored:
                censored.append(subject)
            else:
                changes.append(float(f"{there.value - base.value:.12g}"))
        out.append(
            ChangeSummary(
                month, tuple(changes), tuple(missing_baseline), tuple(missing_visit), tuple(censored), tuple(partial)
            )
        )
    return out


# -- responders --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Classification:
    subject_id: str
    month: int
    category: str  # a category key, the `otherwise` key, or NOT_EVALUABLE
    label: str
    reason: str  # why not evaluable, or the criteria that decided
    # not evaluable because an input was refused or preliminary: correcting it may decide the subject
    preliminary: bool = False


def incomplete_input(
    criterion: Criterion,
    readings: SubjectReadings,
    month: int,
    incomplete: Mapping[str, Incomplete] | None = None,
    subject: str = "",
) -> str | None:
    """Why the criterion's input at the month (and baseline, for a change) is incomplete: a row refused, or a
    preliminary value; None when it is complete. What the criterion waits for, not what it finds missing."""
    by_month = readings.get(criterion.series, {})
    refused = (incomplete or {}).get(criterion.series, Incomplete())
    used = (month,) if criterion.measure == "value" else (month, BASELINE)
    if any(refused.holds(subject, m) for m in used):
        return f"{criterion.series}: an input row at month {'/'.join(map(str, used))} was refused"
    if any(by_month.get(m) is not None and not by_month[m].final for m in used):
        return f"{criterion.series}: a preliminary value at month {'/'.join(map(str, used))}"
    return None


def evaluate_criterion(
    criterion: Criterion,
    readings: SubjectReadings,
    month: int,
    incomplete: Mapping[str, Incomplete] | None = None,
    subject: str = "",
) -> tuple[bool | None, str]:
    """Decide one criterion for one subject at one month: (True/False/None, what was compared or missing).
    Undecidable (None) when an input at the month or baseline was refused or is preliminary."""
    held_back = incomplete_input(criterion, readings, month, incomplete, subject)
    if held_back is not None:
        return None, held_back
    by_month = readings.get(criterion.series, {})
    there = by_month.get(month)
    if there is None:
        return None, f"no {criterion.series} at month {month}"
    if criterion.measure == "value":
        verdict = there.interval().holds(criterion.op, criterion.limit)
        return verdict, f"{criterion.series} {there} {criterion.op} {criterion.limit:g}"
    base = by_month.get(BASELINE)
    if base is None:
        return None, f"no {criterion.series} at baseline"
    change = percent_change(base, there)
    if change is None:
        return None, f"{criterion.series} baseline {base} gives no percent change"
    verdict = change.holds(criterion.op, criterion.limit)
    shown = f"{(there.value - base.value) * 100 / base.value:+.1f} %"
    if there.censored:
        shown = f"{there.comparator} {shown} (censored)"
    return verdict, f"{criterion.series} change {shown} {criterion.op} {criterion.limit:g} %"


def classify(
    response: ResponseDefinition,
    subject_id: str,
    readings: SubjectReadings,
    month: int,
    incomplete: Mapping[str, Incomplete] | None = None,
) -> Classification:
    """The first category whose criteria all hold; not evaluable as soon as one category cannot be decided
    (the subject might belong to it), ``otherwise`` when every category is ruled out."""
    for category in response.categories:
        reasons: list[str] = []
        undecided: list[str] = []
        held_back = False
        failed = False
        for criterion in category.all_of:
            verdict, why = evaluate_criterion(criterion, readings, month, incomplete, subject_id)
            reasons.append(why)
            if verdict is None:
                undecided.append(why)
                held_back |= incomplete_input(criterion, readings, month, incomplete, subject_id) is not None
            elif not verdict:
                failed = True
        if failed:
            continue
        if undecided:
            return Classification(
                subject_id, month, NOT_EVALUABLE, "Not evaluable", "; ".join(undecided), preliminary=held_back
            )
        return Classification(subject_id, month, category.key, category.label, "; ".join(reasons))
    other = response.otherwise
    return Classification(subject_id, month, other.key, other.label, "no category met")


@dataclass(frozen=True)
class ResponseTally:
    response: ResponseDefinition
    month: int
    classifications: tuple[Classification, ...]

    def count(self, category: str) -> int:
        return sum(1 for item in self.classifications if item.category == category)

    @property
    def evaluable(self) -> int:
        return sum(1 for item in self.classifications if item.category != NOT_EVALUABLE)

    def categories(self) -> list[tuple[str, str]]:
        """(key, label) of every outcome in display order, not evaluable last."""
        return [
            *((c.key, c.label) for c in self.response.categories),
            (self.response.otherwise.key, self.response.otherwise.label),
            (NOT_EVALUABLE, "Not evaluable"),
        ]


def tally_responses(
    response: ResponseDefinition,
    cohort: Mapping[str, SubjectReadings],
    incomplete: Mapping[str, Incomplete] | None = None,
) -> list[ResponseTally]:
    """Classify every subject of ``cohort`` (subject -> series -> month -> reading) at each month of the
    definition; ``incomplete``: per series, where an input row was refused (a subject refused whole is not
    evaluable)."""
    subjects = set(cohort)
    for refused in (incomplete or {}).values():
        subjects |= refused.subjects()
    return [
        ResponseTally(
            response,
            month,
            tuple(
                classify(response, subject, cohort.get(subject, {}), month, incomplete) for subject in sorted(subjects)
            ),
        )
        for month in response.months
    ]
