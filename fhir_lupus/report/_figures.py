"""The report's pictures, drawn with matplotlib's Agg canvas (no display, no pyplot global state).

Every figure has a fixed size and resolution and is written without the software tag, so the same data (and the
same generation time) gives the same PNG bytes; the page embeds exactly the bytes written to the figures
directory. Each PNG carries the report's metadata (``ReportMetadata``) twice: as a footer line drawn under the
figure, which a slide shows, and as PNG text chunks (one per item, keyed by its label), which a program reads.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, MultipleLocator

from fhir_lupus.report._adverse import AdverseEventSummary, Count
from fhir_lupus.report._definitions import ReportDefinition, SeriesDefinition
from fhir_lupus.report._meta import ReportMetadata
from fhir_lupus.report._series import Point, SignalMarker, SubjectSeries
from fhir_lupus.report._stats import ChangeSummary, ResponseTally

__all__ = [
    "DPI",
    "adverse_event_figure",
    "change_figure",
    "png_bytes",
    "response_figure",
    "subject_figure",
]

DPI = 100
INFUSION_COLOUR = "#c0392b"
SIGNAL_COLOUR = "#e67e22"
LINE_COLOUR = "#1f4e79"
RESPONDER_COLOURS = ("#1b7837", "#7fbf7b", "#d9f0d3")  # the definition's categories, in order
OTHERWISE_COLOUR, NOT_EVALUABLE_COLOUR = "#bdbdbd", "#ffffff"
SERIOUS_COLOUR, NON_SERIOUS_COLOUR = "#8e2c1f", "#e8a898"
_CENSORED_MARKER = {"<": "v", "<=": "v", ">": "^", ">=": "^"}


def png_bytes(figure: Figure, meta: ReportMetadata | None = None) -> bytes:
    """The figure as PNG, without the metadata that would change from one matplotlib build to the next; with
    ``meta``: its line drawn at the foot and each of its items as a PNG text chunk."""
    buffer = io.BytesIO()
    FigureCanvasAgg(figure)
    text: dict[str, str | None] = {"Software": None}
    if meta is not None:
        # the figure-wide x label is the one text the constrained layout keeps clear of everything else
        figure.supxlabel(meta.footer(), x=0.01, ha="left", fontsize=7, color="#555555")
        text.update(meta.items())
        text["Creation Time"] = meta.items()[0][1]
    figure.savefig(buffer, format="png", dpi=DPI, metadata=text)
    return buffer.getvalue()


def _grid(count: int) -> tuple[int, int]:
    cols = 2 if count > 1 else 1
    return math.ceil(count / cols), cols


def subject_figure(
    subject: SubjectSeries, definition: ReportDefinition, markers: Sequence[SignalMarker] = ()
) -> Figure:
    """One panel per series over months around the infusion; the infusion is a vertical line, censored values
    are open triangles at their limit pointing the way the true value lies. Each flare signal (``markers``) is a
    star at the top of the panel of its analyte, or of the first panel when no panel draws that analyte."""
    rows, cols = _grid(len(definition.series))
    figure = Figure(figsize=(11, 2.6 * rows + 0.9), dpi=DPI, layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False, sharex=True)
    xs = [p.x for points in subject.points.values() for p in points] + [m.x for m in markers]
    infusion_x = None
    if subject.infusion is not None and subject.anchor is not None:
        infusion_x = (subject.infusion - subject.anchor).days / definition.x_axis.days_per_month
        xs.append(infusion_x)
    low, high = (min(xs), max(xs)) if xs else (-1.0, 1.0)
    pad = max(0.5, (high - low) * 0.03)
    for index, series in enumerate(definition.series):
        ax: Axes = axes[index // cols][index % cols]
        _timeline(ax, series, subject.points.get(series.key, []), infusion_x)
        _signals(ax, [m for m in markers if _panel_of(m, definition) == index])
        ax.set_xlim(low - pad, high + pad)
        if index // cols == rows - 1 or index + cols >= len(definition.series):
            ax.set_xlabel(_axis_label(subject, definition))
    for index in range(len(definition.series), rows * cols):
        axes[index // cols][index % cols].set_visible(False)
    title = f"{subject.subject_id}"
    if subject.infusion is not None:
        title += f" - MSC infusion {subject.infusion.isoformat()}"
    else:
        title += " - no completed MSC infusion recorded"
    figure.suptitle(title, fontsize=13, fontweight="bold")
    handles = [Line2D([], [], color=LINE_COLOUR, marker="o", markersize=4, linewidth=1.0, label="measured value")]
    if infusion_x is not None:
        handles.append(Line2D([], [], color=INFUSION_COLOUR, linestyle="--", linewidth=1.2, label="MSC infusion"))
    for provisional in sorted({m.provisional for m in markers}):
        label = "flare signal (provisional)" if provisional else "flare signal"
        handles.append(Line2D([], [], label=label, **_star(provisional)))
    comparators = sorted({p.reading.comparator for ps in subject.points.values() for p in ps if p.reading.comparator})
    for comparator in comparators:
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker=_CENSORED_MARKER[comparator],
                markersize=7,
                markerfacecolor="white",
                markeredgecolor=LINE_COLOUR,
                label=f"censored: true value {comparator} the point drawn",
            )
        )
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9, frameon=False)
    return figure


def _panel_of(marker: SignalMarker, definition: ReportDefinition) -> int:
    panels = [index for index, series in enumerate(definition.series) if series.analyte == marker.analyte]
    return panels[0] if panels else 0


def _signals(ax: Axes, markers: Sequence[SignalMarker]) -> None:
    top = ax.get_xaxis_transform()  # x in data, y in axes fraction: the top edge whatever the values
    for provisional in sorted({m.provisional for m in markers}):
        xs = [m.x for m in markers if m.provisional == provisional]
        ax.plot(xs, [0.94] * len(xs), transform=top, **_star(provisional))


def _star(provisional: bool) -> dict[str, Any]:
    """A flare signal's marker: a filled star, or an open one while it is provisional."""
    face = "white" if provisional else SIGNAL_COLOUR
    return dict(linestyle="none", marker="*", markersize=10, color=SIGNAL_COLOUR, markerfacecolor=face)


def _axis_label(subject: SubjectSeries, definition: ReportDefinition) -> str:
    if subject.anchor_kind == "msc_infusion":
        return definition.x_axis.label
    return "Months since baseline visit"


def _timeline(ax: Axes, series: SeriesDefinition, points: Sequence[Point], infusion_x: float | None) -> None:
    ax.set_title(f"{series.title} ({series.display_unit})", fontsize=10, loc="left")
    ax.grid(True, color="#e5e5e5", linewidth=0.6)
    ax.tick_params(labelsize=8)
    ax.xaxis.set_major_locator(MultipleLocator(6))  # protocol visits fall on multiples of 3 and 6 months
    if series.source == "sledai":
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if infusion_x is not None:
        ax.axvline(infusion_x, color=INFUSION_COLOUR, linestyle="--", linewidth=1.2)
    if not points:
        ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center", va="center", color="#888888")
        return
    ax.plot([p.x for p in points], [p.reading.value for p in points], color=LINE_COLOUR, linewidth=1.0, alpha=0.6)
    exact = [p for p in points if not p.reading.censored]
    ax.plot(
        [p.x for p in exact],
        [p.reading.value for p in exact],
        linestyle="none",
        marker="o",
        markersize=3.5,
        color=LINE_COLOUR,
    )
    for comparator, marker in _CENSORED_MARKER.items():
        censored = [p for p in points if p.reading.comparator == comparator]
        if censored:
            ax.plot(
                [p.x for p in censored],
                [p.reading.value for p in censored],
                linestyle="none",
                marker=marker,
                markersize=7,
                markerfacecolor="white",
                markeredgecolor=LINE_COLOUR,
                markeredgewidth=1.3,
            )
    values = [p.reading.value for p in points]
    if min(values) >= 0:
        ax.set_ylim(bottom=0, top=max(values) * 1.12 if max(values) > 0 else 1)


def change_figure(definition: ReportDefinition, summaries: dict[str, list[ChangeSummary]]) -> Figure:
    """Change from baseline at the summary months, one panel per series: box (median, IQR, 1.5 IQR whiskers)
    and every subject's change as a dot; n under each box."""
    rows, cols = _grid(len(definition.series))
    figure = Figure(figsize=(11, 2.8 * rows + 0.9), dpi=DPI, layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False)
    for index, series in enumerate(definition.series):
        ax: Axes = axes[index // cols][index % cols]
        ax.set_title(f"{series.title}: change from baseline ({series.display_unit})", fontsize=10, loc="left")
        ax.axhline(0, color="#888888", linewidth=0.8)
        ax.grid(True, axis="y", color="#e5e5e5", linewidth=0.6)
        ax.tick_params(labelsize=8)
        items = summaries.get(series.key, [])
        positions = list(range(1, len(items) + 1))
        filled = [(pos, item) for pos, item in zip(positions, items, strict=True) if item.changes]
        if filled:
            ax.boxplot(
                [list(item.changes) for _, item in filled],
                positions=[pos for pos, _ in filled],
                widths=0.5,
                showfliers=False,
                medianprops={"color": INFUSION_COLOUR, "linewidth": 1.5},
            )
            for pos, item in filled:
                offsets = _spread(len(item.changes))
                ax.plot(
                    [pos + o for o in offsets],
                    list(item.changes),
                    linestyle="none",
                    marker="o",
                    markersize=3,
                    color=LINE_COLOUR,
                    alpha=0.7,
                )
        ax.set_xticks(positions, [f"M{item.month}\nn={item.n}" for item in items])
        ax.set_xlim(0.4, len(items) + 0.6)
    for index in range(len(definition.series), rows * cols):
        axes[index // cols][index % cols].set_visible(False)
    figure.suptitle("Change from baseline at protocol visits", fontsize=13, fontweight="bold")
    return figure


def _spread(count: int) -> list[float]:
    """Fixed horizontal offsets for the dots of one box (deterministic, unlike random jitter)."""
    if count <= 1:
        return [0.0] * count
    return [-0.15 + 0.3 * i / (count - 1) for i in range(count)]


def response_figure(tallies: Sequence[ResponseTally]) -> Figure:
    """Stacked bars: subjects per response category at each evaluation month (not evaluable included)."""
    figure = Figure(figsize=(8, 4.5), dpi=DPI, layout="constrained")
    ax = figure.subplots()
    if not tallies:
        return figure
    labels = [f"M{tally.month}" for tally in tallies]
    bottoms = [0] * len(tallies)
    response = tallies[0].response
    colours = [RESPONDER_COLOURS[min(i, len(RESPONDER_COLOURS) - 1)] for i in range(len(response.categories))]
    colours += [OTHERWISE_COLOUR, NOT_EVALUABLE_COLOUR]
    for (key, label), colour in zip(tallies[0].categories(), colours, strict=True):
        counts = [tally.count(key) for tally in tallies]
        bars = ax.bar(
            labels, counts, bottom=bottoms, color=colour, edgecolor="#555555", linewidth=0.6, label=label, width=0.6
        )
        for bar, count, bottom in zip(bars, counts, bottoms, strict=True):
            if count:
                ax.text(
                    bar.get_x() + bar.get_width() / 2,
                    bottom + count / 2,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="white" if key == response.categories[0].key else "black",
                )
        bottoms = [b + c for b, c in zip(bottoms, counts, strict=True)]
    ax.set_ylabel("subjects")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(response.title, fontsize=12, fontweight="bold", loc="left")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    ax.set_ylim(0, max(bottoms) * 1.05 if max(bottoms) else 1)
    return figure


def adverse_event_figure(summary: AdverseEventSummary) -> Figure:
    """Three panels: events by grade (the serious ones darker), events by relatedness, and subjects with any,
    a serious, a severe and a related event out of all subjects. The title says when the counts are not final."""
    figure = Figure(figsize=(11, 3.9), dpi=DPI, layout="constrained")
    by_grade, by_relatedness, subjects = figure.subplots(1, 3)
    caveat = summary.caveat()
    if caveat is not None:  # at most three lines of the figure's width
        caveat = textwrap.fill(textwrap.shorten(caveat, 270, placeholder=" ... (see the page)"), 90)
    title = "Adverse events" if caveat is None else f"Adverse events: NOT FINAL\n{caveat}"
    figure.suptitle(title, fontsize=12, fontweight="bold")
    if summary.absent is not None:
        for ax in (by_grade, by_relatedness, subjects):
            ax.set_axis_off()
        by_relatedness.text(0.5, 0.5, "unknown: no rows", ha="center", va="center", color="#888888")
        return figure
    serious = [c.count for c in summary.serious_by_grade]
    others = [c.count - s for c, s in zip(summary.by_grade, serious, strict=True)]
    labels = [c.label for c in summary.by_grade]
    serious_label, other_label = (c.label for c in summary.by_seriousness)
    by_grade.barh(labels, serious, color=SERIOUS_COLOUR, label=serious_label)
    by_grade.barh(labels, others, left=serious, color=NON_SERIOUS_COLOUR, label=other_label)
    by_grade.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=2)
    _bars(by_grade, f"Events by grade (n={summary.events})", summary.by_grade)
    by_relatedness.barh([c.label for c in summary.by_relatedness], [c.count for c in summary.by_relatedness],
                        color=LINE_COLOUR)  # fmt: skip
    _bars(by_relatedness, "Events by relatedness", summary.by_relatedness)
    subjects.barh([c.label for c in summary.per_subject], [c.count for c in summary.per_subject], color=LINE_COLOUR)
    _bars(subjects, f"Subjects (of {summary.subjects})", summary.per_subject)
    subjects.set_xlim(0, max(summary.subjects, 1) * 1.12)
    return figure


def _bars(ax: Axes, title: str, counts: Sequence[Count]) -> None:
    """Title, integer axis, top row first, and each bar's total written at its end."""
    ax.set_title(title, fontsize=10, loc="left")
    ax.invert_yaxis()
    ax.tick_params(labelsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, axis="x", color="#e5e5e5", linewidth=0.6)
    for row, count in enumerate(counts):
        ax.text(count.count, row, f" {count.count}", va="center", fontsize=8)
    ax.set_xlim(0, max([1, *(c.count for c in counts)]) * 1.12)  # room for the number at the longest bar
