"""What flare definitions are tested on: each subject's final, unquestioned lab values, one ``Point`` each.

Two inputs give points. A pulled table (the CSV ``fhir-lupus pull -o`` writes, ``read_pulled``): a row counts
when its status is one of the statuses pull makes rows of (mappings/fhir/pull.yaml ``rows``: results a clinician
may act on), so a preliminary result, should one be in a table, never does. A trial data directory, read through
the model (``TrialSource``): only accepted rows come back, and a row the checks query is set aside too; its result
ids are set aside in the table as well, where the same result was pushed and pulled back. The same result in both
is taken once, from the table (which knows the server's Observation id). The trial also says when each subject's
first MSC infusion was (the start of "post-treatment"), and gives its SLEDAI-2K assessments: a total counts when
it is final (no descriptor left undecided, fhir_lupus/scoring) and the checks neither refused nor queried its row.

A pulled row is the hospital's record, checked by nobody on the way in: it goes through the trial's own value and
date checks (``model.check_results``: impossible or implausible values and reference limits, an isolated jump, a
date in the future or, with the trial given, after the subject's participation ended). A row they refuse or query
counts for nothing; ``Points.checks`` names each one by table and line, for the commands to print.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Literal

from fhir_lupus.errors import InputError, UnitError
from fhir_lupus.model import (
    CheckedLab,
    LoadReport,
    Located,
    ScoredAssessment,
    SubjectTimeline,
    check_results,
)
from fhir_lupus.pull import PulledLab, PullRules
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import LabValue, MappingPack, UnitConverter, parse_lab_value

__all__ = ["NotCounted", "Point", "Points", "ScorePoint", "gather_points", "read_pulled"]

LABS = "labs.csv"
SLEDAI = "sledai.csv"
PULLED_TABLE = "pulled table"  # how a pulled row's place is named when its table has no file name


@dataclass(frozen=True)
class Point:
    """One final lab value of a subject, read (number, comparator, titer) and with its UCUM unit."""

    subject_id: str
    visit_code: str
    analyte: str
    value: LabValue
    unit: str  # as written in the row
    ucum: str | None  # None: a unit UCUM cannot read (the point can then prove nothing that needs a unit)
    ref_low: Decimal | None
    ref_high: Decimal | None
    collected_at: datetime
    result_id: str
    observation_id: str = ""


@dataclass(frozen=True)
class ScorePoint:
    """One final SLEDAI-2K total of a subject; ``key`` is the assessment's business key (subject/visit), the
    value of its Observation's identifier."""

    subject_id: str
    visit_code: str
    assessed_on: date
    total: int
    key: str


Verdict = Literal["refused", "queried"]


@dataclass(frozen=True)
class NotCounted:
    """A pulled row the checks refused or queried: where it is (table, line), which result, and why."""

    table: str
    line: int
    observation_id: str
    result_id: str
    subject_id: str
    verdict: Verdict
    column: str | None
    reason: str
    check: str | None

    def __str__(self) -> str:
        observation = f" (Observation/{self.observation_id})" if self.observation_id else ""
        column = f" column {self.column}" if self.column else ""
        return f"{self.table}:{self.line}{observation}:{column} {self.verdict}: {self.reason}"


@dataclass(frozen=True)
class Doubt:
    """A row of a subject's series that the checks refused or queried: a signal judged on or after its day cannot
    be final. ``analyte`` None: a SLEDAI-2K assessment; ``day`` None: a date that could not be read."""

    subject_id: str
    analyte: str | None
    day: date | None
    where: str


@dataclass
class Points:
    """Every subject's points in time order, per analyte, and when each subject's treatment began (if known);
    ``scores``: each subject's final SLEDAI-2K totals in time order; ``not_counted``: the pulled rows the checks
    refused or queried (set aside, never points), in table order."""

    by_subject: dict[str, dict[str, list[Point]]] = field(default_factory=dict)
    treated_from: dict[str, date] = field(default_factory=dict)
    scores: dict[str, list[ScorePoint]] = field(default_factory=dict)
    not_counted: list[NotCounted] = field(default_factory=list)
    doubts: list[Doubt] = field(default_factory=list)

    def add(self, point: Point) -> None:
        self.by_subject.setdefault(point.subject_id, {}).setdefault(point.analyte, []).append(point)

    def sort(self) -> None:
        for totals in self.scores.values():
            totals.sort(key=lambda p: (p.assessed_on, p.key))
        for analytes in self.by_subject.values():
            for series in analytes.values():
                series.sort(key=lambda p: (p.collected_at, p.result_id))


def read_pulled(path: Path) -> list[PulledLab]:
    """The rows of a pulled table (CSV, the columns of ``PulledLab``); InputError names the file when a column is
    missing."""
    names = [f.name for f in fields(PulledLab)]
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [n for n in names if n not in (reader.fieldnames or ()) and n not in ("status", "version_id")]
            if missing:
                raise InputError(str(path), 1, None, f"not a pulled lab table: no column {', '.join(missing)}")
            return [PulledLab(**{n: row.get(n) or "" for n in names}) for row in reader]
    except OSError as exc:
        raise InputError(str(path), 0, None, f"cannot read: {exc.strerror or exc}") from None


def gather_points(
    rows: Iterable[PulledLab], trial: TrialSource | None, pack: MappingPack, *, table: str = PULLED_TABLE
) -> Points:
    """The points of ``rows`` and of ``trial`` (either may be empty), as the module docstring says; ``table``
    names where the rows were read (a row is line ``index + 2`` there, under its header)."""
    units = UnitConverter(pack)
    points = Points()
    set_aside: set[str] = set()
    seen: set[str] = set()
    trial_points: list[Point] = []
    scored: list[Located[ScoredAssessment]] = []
    timelines: dict[str, SubjectTimeline] = {}
    if trial is not None:
        for data in trial.chunks():
            trial_points += [_trial_point(located.record, units) for located in data.labs]
            timelines.update(data.timelines)
            scored += data.sledai
        points.treated_from = {s: t.infusion_on for s, t in timelines.items() if t.infusion_on is not None}
        set_aside = _refused_or_queried(trial.report)
        _add_scores(points, scored, trial.report)
        points.doubts = _trial_doubts(trial.report, trial_points, scored)
    final = set(pack.load(PullRules, "fhir/pull.yaml").rows)
    candidates: list[Located[Point]] = []
    for line, row in enumerate(rows, start=2):
        if row.status not in final or row.result_id in set_aside:
            continue
        point = _table_point(row, units, pack)
        if point is not None:
            candidates.append(Located(point, table, line, asdict(row)))
    checks = check_results(candidates, pack, timelines=timelines, units=units)
    points.not_counted = _not_counted(checks, {(where.file, where.line): where.record for where in candidates})
    doubted = {(item.table, item.line) for item in points.not_counted}
    for where in candidates:
        point = where.record
        if (where.file, where.line) in doubted:
            place = f"{where.file}:{where.line}"
            points.doubts.append(Doubt(point.subject_id, point.analyte, point.collected_at.date(), place))
        else:
            points.add(point)
            seen.add(point.result_id)
    for point in trial_points:
        if point.result_id not in set_aside and point.result_id not in seen:
            points.add(point)
    points.sort()
    return points


def _not_counted(checks: LoadReport, at: dict[tuple[str, int], Point]) -> list[NotCounted]:
    def item(file: str, line: int, verdict: Verdict, column: str | None, reason: str, check: str | None) -> NotCounted:
        point = at[(file, line)]
        subject, result, observation = point.subject_id, point.result_id, point.observation_id
        return NotCounted(file, line, observation, result, subject, verdict, column, reason, check)

    items = [item(r.file, r.line, "refused", r.column, r.reason, r.check) for r in checks.rejects]
    items += [item(q.file, q.line or 0, "queried", q.column, q.message, q.kind) for q in checks.queries]
    return sorted(items, key=lambda found: (found.table, found.line, found.verdict))


def _add_scores(points: Points, scored: Iterable[Located[ScoredAssessment]], report: LoadReport) -> None:
    """The final totals of assessments whose rows no check queried (a refused row never comes back at all)."""
    queried = {(f.file, f.line) for f in report.queries if f.file.endswith(SLEDAI)}
    for row in scored:
        assessment, score = row.record.assessment, row.record.score
        if not score.final or (row.file, row.line) in queried:
            continue
        key = f"{assessment.subject_id}/{assessment.visit_code}"
        point = ScorePoint(assessment.subject_id, assessment.visit_code, assessment.assessed_on, score.total, key)
        points.scores.setdefault(assessment.subject_id, []).append(point)


def _trial_doubts(report: LoadReport, labs: list[Point], scored: list[Located[ScoredAssessment]]) -> list[Doubt]:
    """The trial's lab and SLEDAI-2K rows the checks refused (their raw cells) or queried (kept, so read)."""
    doubts = []
    for reject in report.rejects:
        cells = reject.row
        where = f"{reject.file}:{reject.line}"
        if reject.file.endswith(LABS):
            day = _day(cells.get("collected_at", ""))
            doubts.append(Doubt(cells.get("subject_id", "").strip(), cells.get("analyte", "").strip(), day, where))
        elif reject.file.endswith(SLEDAI):
            doubts.append(Doubt(cells.get("subject_id", "").strip(), None, _day(cells.get("assessed_on", "")), where))
    queried = {f.record for f in report.queries if f.file.endswith(LABS)}
    doubts += [
        Doubt(point.subject_id, point.analyte, point.collected_at.date(), f"{LABS} result {point.result_id}")
        for point in labs
        if point.result_id in queried
    ]
    queried_scores = {(f.file, f.line) for f in report.queries if f.file.endswith(SLEDAI)}
    doubts += [
        Doubt(row.record.assessment.subject_id, None, row.record.assessment.assessed_on, f"{row.file}:{row.line}")
        for row in scored
        if (row.file, row.line) in queried_scores
    ]
    return doubts


def _day(text: str) -> date | None:
    try:
        return datetime.fromisoformat(text.strip()).date()
    except ValueError:
        try:
            return date.fromisoformat(text.strip()[:10])
        except ValueError:
            return None


def _refused_or_queried(report: LoadReport) -> set[str]:
    """The result ids of lab rows the checks refused or queried."""
    refused = {reject.row.get("result_id", "").strip() for reject in report.rejects if reject.file.endswith(LABS)}
    queried = {f.record for f in report.queries if f.file.endswith(LABS) and f.record}
    return refused | queried


def _ucum(units: UnitConverter, unit: str | None) -> str | None:
    try:
        return units.to_ucum(unit) if unit else None
    except UnitError:
        return None


def _trial_point(checked: CheckedLab, units: UnitConverter) -> Point:
    lab, value = checked.lab, checked.value
    return Point(
        subject_id=lab.subject_id,
        visit_code=lab.visit_code,
        analyte=lab.analyte,
        value=value,
        unit=lab.unit or "",
        ucum=_ucum(units, lab.unit),
        ref_low=lab.ref_low,
        ref_high=lab.ref_high,
        collected_at=lab.collected_at,
        result_id=lab.result_id,
    )


def _table_point(row: PulledLab, units: UnitConverter, pack: MappingPack) -> Point | None:
    """The row as a point; None when its value or date cannot be read (pull wrote it, so this is a hand edit)."""
    try:
        value = parse_lab_value(row.value, pack.ordinals)
        collected = datetime.fromisoformat(row.collected_at)
    except ValueError:
        return None
    return Point(
        subject_id=row.subject_id,
        visit_code=row.visit_code,
        analyte=row.analyte,
        value=value,
        unit=row.unit,
        ucum=_ucum(units, row.unit),
        ref_low=_decimal(row.ref_low),
        ref_high=_decimal(row.ref_high),
        collected_at=collected,
        result_id=row.result_id,
        observation_id=row.observation_id,
    )


def _decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text) if text.strip() else None
    except InvalidOperation:
        return None
