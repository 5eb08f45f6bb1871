"""From loaded trial data to the report's series: every value of every subject in one display unit, placed on
a time axis around the MSC infusion and assigned to its protocol visit.

Values are converted with the project's UnitConverter (UCUM, ucumvert), never with a factor written here.
A value that cannot be put in the display unit (an ordinal, a titer, a unit of another dimension) is set
aside with its file, line and reason; censored values keep their comparator and are listed. A preliminary
SLEDAI-2K total is a reading that is not final, and ``incomplete_inputs`` finds, per series, the subjects and
visits whose input row was refused: the statistics leave both out and say so (fhir_lupus/report/_stats.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import date

from fhir_lupus.errors import FhirLupusError
from fhir_lupus.model import LoadReport, StudyDefinition, TrialData
from fhir_lupus.report._definitions import ReportDefinition, SeriesDefinition
from fhir_lupus.report._stats import Incomplete, Reading
from fhir_lupus.terminology import LabCatalogue

__all__ = ["Point", "SetAside", "SignalMarker", "SubjectSeries", "collect_series", "incomplete_inputs"]


@dataclass(frozen=True)
class SignalMarker:
    """A flare signal on a subject's timeline (fhir_lupus.signals): where, and the lab it was raised on."""

    x: float  # months from the subject's anchor, as the points
    analyte: str
    provisional: bool = False  # judged on a series the checks took a row from: drawn open, never as final


@dataclass(frozen=True)
class Point:
    """One value of one series, in the series' display unit; ``reading.comparator`` set when censored."""

    subject_id: str
    series: str
    visit_code: str
    month: int | None  # the protocol month of the visit (None: a visit code the protocol does not list)
    day: date
    x: float  # months relative to the subject's anchor (x_axis)
    reading: Reading
    reported: str  # the value and unit as the source wrote them
    where: str  # file:line


@dataclass(frozen=True)
class SetAside:
    """A value the report cannot draw, with why; shown on the page, never silently dropped."""

    subject_id: str
    series: str
    visit_code: str
    where: str
    reported: str
    reason: str


@dataclass
class SubjectSeries:
    subject_id: str
    anchor: date | None
    anchor_kind: str  # "msc_infusion", "baseline" (no completed infusion, or the definition says so) or "none"
    infusion: date | None
    points: dict[str, list[Point]] = field(default_factory=dict)  # series key -> points in date order
    notes: list[str] = field(default_factory=list)

    def at_visits(self) -> dict[str, dict[int, Reading]]:
        """series -> protocol month -> reading; when a visit holds two values, the later one (noted)."""
        out: dict[str, dict[int, Reading]] = {}
        for key, points in self.points.items():
            by_month: dict[int, Reading] = {}
            for point in points:  # date order: a later value replaces an earlier one of the same visit
                if point.month is not None:
                    by_month[point.month] = point.reading
            out[key] = by_month
        return out


def collect_series(
    data: TrialData, definition: ReportDefinition, catalogue: LabCatalogue
) -> tuple[list[SubjectSeries], list[SetAside]]:
    """Every subject's points of every series, and what was set aside."""
    months = {visit.code: visit.month for visit in data.study.visits()}
    baseline_code = next(visit.code for visit in data.study.visits() if visit.month == 0)
    baselines = {
        row.record.subject_id: row.record.visit_date for row in data.visits if row.record.visit_code == baseline_code
    }
    infusions: dict[str, date] = {}
    for done in sorted(data.procedures, key=lambda p: p.record.started_at):
        procedure = done.record
        if procedure.kind == "msc_infusion" and procedure.status == "completed":
            infusions.setdefault(procedure.subject_id, procedure.started_at.date())
    subjects: dict[str, SubjectSeries] = {}
    for row in sorted(data.subjects, key=lambda r: r.record.subject_id):
        sid = row.record.subject_id
        infusion = infusions.get(sid)
        if definition.x_axis.anchor == "msc_infusion" and infusion is not None:
            anchor, kind = infusion, "msc_infusion"
        elif sid in baselines:
            anchor, kind = baselines[sid], "baseline"
        else:
            anchor, kind = None, "none"
        item = SubjectSeries(sid, anchor, kind, infusion)
        if kind == "baseline" and definition.x_axis.anchor == "msc_infusion":
            item.notes.append(f"no completed MSC infusion in procedures.csv: months counted from {baseline_code}")
        elif kind == "none":
            item.notes.append(f"no MSC infusion and no {baseline_code} visit: no time axis, nothing drawn")
        subjects[sid] = item

    set_aside: list[SetAside] = []
    per_month = definition.x_axis.days_per_month

    def add(
        series: SeriesDefinition, sid: str, code: str, day: date, reading: Reading, reported: str, where: str
    ) -> None:
        subject = subjects.get(sid)
        if subject is None or subject.anchor is None:
            return
        x = (day - subject.anchor).days / per_month
        subject.points.setdefault(series.key, []).append(
            Point(sid, series.key, code, months.get(code), day, x, reading, reported, where)
        )

    by_analyte: dict[str, list[SeriesDefinition]] = defaultdict(list)
    for series in definition.series:
        if series.source == "labs" and series.analyte is not None:
            by_analyte[series.analyte].append(series)
    for located in data.labs:
        checked = located.record
        lab = checked.lab
        for series in by_analyte.get(lab.analyte, ()):
            where = f"{located.file}:{located.line}"
            reported = f"{lab.value} {lab.unit or ''}".strip()
            number, ucum = checked.value.number, checked.resolved.ucum
            if checked.value.kind != "quantity" or number is None or ucum is None:
                reason = f"a {checked.value.kind} result has no value in {series.unit}"
                set_aside.append(SetAside(lab.subject_id, series.key, lab.visit_code, where, reported, reason))
                continue
            try:
                value = catalogue.units.convert(
                    number, ucum, series.unit, molar_mass=catalogue.analyte(lab.analyte).molar_mass
                )
            except FhirLupusError as exc:
                set_aside.append(SetAside(lab.subject_id, series.key, lab.visit_code, where, reported, str(exc)))
                continue
            reading = Reading(value, checked.value.comparator)
            add(series, lab.subject_id, lab.visit_code, lab.collected_at.date(), reading, reported, where)
    for series in definition.series:
        if series.source != "sledai":
            continue
        for scored in data.sledai:
            assessment, score = scored.record.assessment, scored.record.score
            where = f"{scored.file}:{scored.line}"
            add(
                series,
                assessment.subject_id,
                assessment.visit_code,
                assessment.assessed_on,
                Reading(float(score.total), final=score.final),
                str(score.total) if score.final else f"{score.total} (preliminary, up to {score.upper_total})",
                where,
            )
    for subject in subjects.values():
        for key, points in subject.points.items():
            points.sort(key=lambda p: (p.day, p.where))
            seen: dict[str, Point] = {}
            for point in points:
                if point.visit_code in seen:
                    subject.notes.append(
                        f"{key} at {point.visit_code}: two values ({seen[point.visit_code].where}, {point.where});"
                        " the later one is the visit's value"
                    )
                seen[point.visit_code] = point
    return list(subjects.values()), set_aside


def incomplete_inputs(
    report: LoadReport, study: StudyDefinition, definition: ReportDefinition, analytes: Collection[str]
) -> dict[str, Incomplete]:
    """Per series, the (subject, protocol month) whose input row was refused. A refused subjects.csv or visits.csv
    row takes every series of that subject (or visit) with it; a cell that cannot be read (a blank subject, an
    unknown visit code or analyte: not one of ``analytes``) stands for any (``Incomplete.ANY``)."""
    months: dict[str, int | str] = {visit.code: visit.month for visit in study.visits()}
    cells: dict[str, set[tuple[str, int | str]]] = {series.key: set() for series in definition.series}
    why: dict[str, list[tuple[tuple[str, int | str], str]]] = {series.key: [] for series in definition.series}
    for reject in report.rejects:
        row = reject.row
        subject = (row.get("subject_id") or "").strip() or Incomplete.ANY
        month = months.get((row.get("visit_code") or "").strip(), Incomplete.ANY)
        analyte = (row.get("analyte") or "").strip()
        for series in definition.series:
            if reject.file == "subjects.csv":
                hit: tuple[str, int | str] | None = (subject, Incomplete.ANY)
            elif reject.file == "visits.csv" or (reject.file == "sledai.csv" and series.source == "sledai"):
                hit = (subject, month)
            elif reject.file == "labs.csv" and series.source == "labs":
                hit = (subject, month) if analyte == series.analyte or analyte not in analytes else None
            else:
                hit = None
            if hit is not None:
                cells[series.key].add(hit)
                why[series.key].append((hit, f"{reject.file}:{reject.line}"))
    return {key: Incomplete(frozenset(found), tuple(why[key])) for key, found in cells.items() if found}
