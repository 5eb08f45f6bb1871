"""The investigator report (``fhir-lupus report``): subject timelines around the MSC infusion, change from
baseline, responders under stated definitions, as one self-contained HTML page plus PNGs for slides.

The definitions are data (mappings/report/report.yaml, read by ``definitions``); ``stats`` is the pure engine
(cohort statistics, responder classification), ``series`` turns loaded trial data into display-unit values,
``figures`` draws them and ``_page`` writes the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fhir_lupus._scratch import write_atomic
from fhir_lupus.errors import InputError
from fhir_lupus.model import LoadReport, TrialData
from fhir_lupus.report._definitions import ReportDefinition, load_report_definition
from fhir_lupus.report._series import Point, SetAside, SubjectSeries, collect_series, incomplete_inputs
from fhir_lupus.report._stats import ChangeSummary, ResponseTally, summarise_changes, tally_responses
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import LabCatalogue, MappingPack, load_pack

__all__ = [
    "ReportDefinition",
    "ReportResult",
    "ReportStatistics",
    "default_figures_dir",
    "load_report_definition",
    "report_statistics",
    "write_report",
]


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


@dataclass(frozen=True)
class ReportStatistics:
    """What the report computes before it draws anything (``report_statistics``): pure, no files, no figures."""

    definition: ReportDefinition
    subjects: list[SubjectSeries]
    set_aside: list[SetAside]
    summaries: dict[str, list[ChangeSummary]]
    tallies: dict[str, list[ResponseTally]]
    preliminary: tuple[str, ...]


def report_statistics(
    data: TrialData, *, pack: MappingPack | None = None, report: LoadReport | None = None
) -> ReportStatistics:
    """The series, change from baseline and responders of a loaded trial; ``report`` (the load's): a statistic
    one of its refused rows, or a preliminary SLEDAI-2K total, could change is preliminary and leaves that
    subject out (``preliminary`` lists each). ``pack``: the mappings (default: ``load_pack()``)."""
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
    return ReportStatistics(definition, subjects, set_aside, summaries, tallies, preliminary)


def default_figures_dir(out: Path) -> Path:
    """``<report stem>_figures/`` beside the page."""
    return out.with_name(f"{out.stem}_figures")


def write_report(
    trial: TrialSource,
    out: Path,
    *,
    figures_dir: Path | None = None,
    settings: Settings | None = None,
) -> ReportResult:
    """Write the report page of the whole trial to ``out`` and its figures (PNG) to ``figures_dir`` (default
    ``<out stem>_figures/``), each file atomically. InputError names the path when a file cannot be written.
    A statistic one of the refused rows of the trial's report (or a preliminary SLEDAI-2K total) could change is
    marked preliminary and leaves that subject out. ``settings``: the mapping pack (default: ``Settings.default()``)."""
    from fhir_lupus.report import _figures as draw  # matplotlib is imported only when a report is made
    from fhir_lupus.report._page import FigureRef, render_page

    data = trial.whole()
    stats = report_statistics(data, pack=(settings or Settings.default()).pack, report=trial.report)
    definition, subjects, set_aside = stats.definition, stats.subjects, stats.set_aside
    summaries, tallies, preliminary = stats.summaries, stats.tallies, stats.preliminary

    figures_dir = figures_dir or default_figures_dir(out)
    rendered: list[tuple[str, bytes, str]] = []
    change = draw.png_bytes(draw.change_figure(definition, summaries))
    rendered.append(("cohort-change-from-baseline.png", change, "Change from baseline, all series"))
    response_refs: dict[str, FigureRef] = {}
    for response in definition.responses:
        name = f"cohort-response-{response.key}.png"
        png = draw.png_bytes(draw.response_figure(tallies[response.key]))
        rendered.append((name, png, response.title))
        response_refs[response.key] = FigureRef(name, png, response.title)
    subject_refs: dict[str, FigureRef] = {}
    for subject in subjects:
        if subject.anchor is None:
            continue  # no time axis: named in the notes
        name = f"subject-{subject.subject_id}.png"
        png = draw.png_bytes(draw.subject_figure(subject, definition))
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
    )
