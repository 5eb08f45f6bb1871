"""The investigator report (``fhir-lupus report``): subject timelines around the MSC infusion, change from
baseline, responders under stated definitions, as one self-contained HTML page plus PNGs for slides.

The definitions are data (mappings/report/report.yaml, read by ``definitions``); ``stats`` is the pure engine
(cohort statistics, responder classification), ``series`` turns loaded trial data into display-unit values,
``_adverse`` counts the adverse events, ``_meta`` says when and from what the report was made, ``figures``
draws them and ``_page`` writes the page.

Drawing needs matplotlib, the ``report`` extra (``pip install 'fhir-lupus[report]'``): it is imported only when a
report is drawn, so the rest of the package, and the statistics here, work without it; ``require_plotting``
says clearly (ExtraMissing) when it is not installed.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import ModuleType

from fhir_lupus._scratch import write_atomic
from fhir_lupus._version import __version__
from fhir_lupus.errors import ExtraMissing, InputError
from fhir_lupus.model import Finding, LoadReport, TrialData, track_queries
from fhir_lupus.report._adverse import AdverseEventSummary, summarise_adverse_events
from fhir_lupus.report._definitions import ReportDefinition, load_report_definition
from fhir_lupus.report._meta import CUT_OFF_FIELDS, DataCutOff, ReportMetadata, data_cut_off
from fhir_lupus.report._series import (
    Point,
    SetAside,
    SignalMarker,
    SubjectSeries,
    collect_series,
    incomplete_inputs,
)
from fhir_lupus.report._stats import ChangeSummary, ResponseTally, summarise_changes, tally_responses
from fhir_lupus.settings import Settings
from fhir_lupus.signals import Signal, flare_signals
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import LabCatalogue, MappingPack, load_adverse_event_terms, load_pack

__all__ = [
    "CUT_OFF_FIELDS",
    "PLOTTING_HINT",
    "AdverseEventSummary",
    "DataCutOff",
    "ReportDefinition",
    "ReportMetadata",
    "ReportResult",
    "ReportStatistics",
    "data_cut_off",
    "default_figures_dir",
    "load_report_definition",
    "report_statistics",
    "require_plotting",
    "write_report",
]

PLOTTING_HINT = "pip install 'fhir-lupus[report]'"


@dataclass(frozen=True)
class ReportResult:
    """What ``write_report`` wrote and what it could not draw."""

    html: Path
    figures: tuple[Path, ...]  # every PNG written, each also embedded in the page
    subjects: int
    values: int  # values drawn, all series
    censored: tuple[Point, ...]
    set_aside: tuple[SetAside, ...]
    summaries: dict[str, list[ChangeSummary]]  # series key -> change from baseline at each summary month
    tallies: dict[str, list[ResponseTally]]  # response key -> tally at each evaluation month
    preliminary: tuple[str, ...] = ()  # each statistic computed from incomplete input, as the page marks it
    metadata: ReportMetadata | None = None  # generation time, data cut-off, versions, open queries
    adverse_events: AdverseEventSummary | None = None
    signals: tuple[Signal, ...] = ()  # the flare signals drawn on the subjects' timelines (fhir_lupus.signals)


@dataclass(frozen=True)
class ReportStatistics:
    """What the report computes before it draws anything (``report_statistics``): pure, no files, no figures."""

    definition: ReportDefinition
    subjects: list[SubjectSeries]
    set_aside: list[SetAside]
    summaries: dict[str, list[ChangeSummary]]
    tallies: dict[str, list[ResponseTally]]
    preliminary: tuple[str, ...]
    adverse_events: AdverseEventSummary


def report_statistics(
    data: TrialData,
    *,
    pack: MappingPack | None = None,
    report: LoadReport | None = None,
    open_queries: list[Finding] | None = None,
) -> ReportStatistics:
    """The series, change from baseline, responders and adverse-event summary of a loaded trial; ``report`` (the
    load's): a statistic one of its refused rows, or a preliminary SLEDAI-2K total, could change is preliminary
    and leaves that subject out, and the adverse-event summary is preliminary when an adverse_events.csv row was
    refused or has an open query (``preliminary`` lists each). ``open_queries``: the queries the site has not
    closed (default: every query of ``report``). ``pack``: the mappings (default: ``load_pack()``)."""
    pack = pack or load_pack()
    definition = load_report_definition(pack)
    catalogue = LabCatalogue(pack)
    subjects, set_aside = collect_series(data, definition, catalogue)
    readings = {subject.subject_id: subject.at_visits() for subject in subjects}
    refused = incomplete_inputs(report, data.study, definition, catalogue.pack.labs.analytes) if report else {}
    summaries = {
        series.key: summarise_changes(
            {sid: by_series.get(series.key, {}) for sid, by_series in readings.items()},
            definition.summary_months,
            refused.get(series.key),
        )
        for series in definition.series
    }
    tallies = {response.key: tally_responses(response, readings, refused) for response in definition.responses}
    preliminary = tuple(
        f"{series.title} at M{item.month}: n={item.n} leaves out {', '.join(item.incomplete)} (an input row refused, "
        "or a preliminary value)"
        for series in definition.series
        for item in summaries[series.key]
        if not item.final
    )
    adverse = summarise_adverse_events(
        data,
        load_adverse_event_terms(pack),
        definition.adverse_events,
        report=report,
        open_queries=report.queries if open_queries is None and report else open_queries or (),
    )
    caveat = adverse.caveat()
    if caveat is not None:
        preliminary += (f"adverse-event summary: {caveat}",)
    return ReportStatistics(definition, subjects, set_aside, summaries, tallies, preliminary, adverse)


def _markers(subject: SubjectSeries, signals: Sequence[Signal], days_per_month: float) -> list[SignalMarker]:
    """The subject's flare signals as timeline markers (months from the subject's anchor)."""
    assert subject.anchor is not None
    return [
        SignalMarker(
            (date.fromisoformat(s.date[:10]) - subject.anchor).days / days_per_month, s.analyte, bool(s.provisional)
        )
        for s in signals
        if s.subject_id == subject.subject_id
    ]


def require_plotting() -> ModuleType:
    """The drawing module, once matplotlib imports; ExtraMissing naming the extra to install when it does not."""
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        raise ExtraMissing(f"the report draws with matplotlib, which is not installed: {PLOTTING_HINT}") from None
    return importlib.import_module("fhir_lupus.report._figures")


def _open_queries(trial: TrialSource) -> list[Finding]:
    """The queries of the trial's load that its data directory's query_responses.csv has not closed."""
    return [query.finding for query in track_queries(trial.report, trial.data_dir).open]


def default_figures_dir(out: Path) -> Path:
    """``<report stem>_figures/`` beside the page."""
    return out.with_name(f"{out.stem}_figures")


def write_report(
    trial: TrialSource,
    out: Path,
    *,
    figures_dir: Path | None = None,
    settings: Settings | None = None,
    generated_at: datetime | None = None,
) -> ReportResult:
    """Write the report page of the whole trial to ``out`` and its figures (PNG) to ``figures_dir`` (default
    ``<out stem>_figures/``), each file atomically. InputError names the path when a file cannot be written;
    ExtraMissing when matplotlib is not installed (before the trial is read).
    A statistic one of the refused rows of the trial's report (or a preliminary SLEDAI-2K total) could change is
    marked preliminary and leaves that subject out; so is the adverse-event summary when an adverse_events.csv
    row was refused or has an open query. The page and every PNG carry ``ReportMetadata``; ``generated_at``:
    the generation time (timezone-aware; default: now, UTC). ``settings``: the mapping pack (default:
    ``Settings.default()``)."""
    draw = require_plotting()  # matplotlib is imported only when a report is drawn
    from fhir_lupus.report._page import FigureRef, render_page

    if generated_at is not None and generated_at.tzinfo is None:
        raise ValueError("generated_at must be timezone-aware (it is written as UTC)")
    pack = (settings or Settings.default()).pack
    data = trial.whole()
    queries = _open_queries(trial)
    meta = ReportMetadata(
        generated_at=(generated_at or datetime.now(UTC)).astimezone(UTC),
        cut_off=data_cut_off(data),
        tool_version=__version__,
        mapping_version=pack.project.mapping_version,
        open_queries=len(queries),
    )
    stats = report_statistics(data, pack=pack, report=trial.report, open_queries=queries)
    definition, subjects, set_aside = stats.definition, stats.subjects, stats.set_aside
    summaries, tallies, preliminary = stats.summaries, stats.tallies, stats.preliminary

    figures_dir = figures_dir or default_figures_dir(out)
    rendered: list[tuple[str, bytes, str]] = []
    change = draw.png_bytes(draw.change_figure(definition, summaries), meta)
    rendered.append(("cohort-change-from-baseline.png", change, "Change from baseline, all series"))
    response_refs: dict[str, FigureRef] = {}
    for response in definition.responses:
        name = f"cohort-response-{response.key}.png"
        png = draw.png_bytes(draw.response_figure(tallies[response.key]), meta)
        rendered.append((name, png, response.title))
        response_refs[response.key] = FigureRef(name, png, response.title)
    adverse_png = draw.png_bytes(draw.adverse_event_figure(stats.adverse_events), meta)
    adverse_ref = FigureRef("cohort-adverse-events.png", adverse_png, "Adverse events by grade and relatedness")
    rendered.append((adverse_ref.name, adverse_png, adverse_ref.alt))
    subject_refs: dict[str, FigureRef] = {}
    signals = flare_signals(trial=trial, settings=settings)
    for subject in subjects:
        if subject.anchor is None:
            continue  # no time axis: named in the notes
        name = f"subject-{subject.subject_id}.png"
        markers = _markers(subject, signals, definition.x_axis.days_per_month)
        png = draw.png_bytes(draw.subject_figure(subject, definition, markers), meta)
        rendered.append((name, png, f"{subject.subject_id} timelines"))
        subject_refs[subject.subject_id] = FigureRef(name, png, f"{subject.subject_id} timelines")

    page = render_page(
        title=f"{data.study.nct_id}: investigator report",
        study_title=data.study.title,
        definition=definition,
        subjects=subjects,
        summaries=summaries,
        tallies=tallies,
        set_aside=set_aside,
        change_fig=FigureRef(rendered[0][0], change, rendered[0][2]),
        response_figs=response_refs,
        subject_figs=subject_refs,
        meta=meta,
        adverse=stats.adverse_events,
        adverse_fig=adverse_ref,
    )
    written: list[Path] = []
    try:
        for name, png, _ in rendered:
            path = figures_dir / name
            write_atomic(path, png)
            written.append(path)
    except OSError as exc:
        raise InputError(str(figures_dir), 0, None, f"cannot write the figures: {exc.strerror or exc}") from None
    try:
        write_atomic(out, page)
    except OSError as exc:
        raise InputError(str(out), 0, None, f"cannot write the report: {exc.strerror or exc}") from None
    points = [p for s in subjects for series_points in s.points.values() for p in series_points]
    return ReportResult(
        html=out,
        figures=tuple(written),
        subjects=len(subjects),
        values=len(points),
        censored=tuple(p for p in points if p.reading.censored),
        set_aside=tuple(set_aside),
        summaries=summaries,
        tallies=tallies,
        preliminary=preliminary,
        metadata=meta,
        adverse_events=stats.adverse_events,
        signals=tuple(signals),
    )
