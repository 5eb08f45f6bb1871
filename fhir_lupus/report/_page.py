"""The report page: one self-contained HTML file (inline CSS, PNGs as data: URIs, no script, no link out).

Plain string building with html.escape on every value from the data or the definitions: the page is small and
a template engine would be one more dependency to package.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from fhir_lupus.report._adverse import AdverseEventSummary, Count
from fhir_lupus.report._definitions import ReportDefinition, ResponseDefinition
from fhir_lupus.report._meta import CUT_OFF_FIELDS, ReportMetadata
from fhir_lupus.report._series import Point, SetAside, SubjectSeries
from fhir_lupus.report._stats import NOT_EVALUABLE, ChangeSummary, ResponseTally

__all__ = ["FigureRef", "render_page"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#222;
 background:#fafafa;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:1.5rem 2rem 4rem;background:#fff}
h1{font-size:1.6rem;margin:.2rem 0 .4rem}h2{border-bottom:2px solid #1f4e79;padding-bottom:.2rem;margin-top:2.4rem}
h3{margin-top:1.6rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.88rem}
th,td{border:1px solid #d0d0d0;padding:.25rem .5rem;text-align:right;vertical-align:top}
th{background:#eef3f8}td.l,th.l{text-align:left}
figure{margin:1rem 0 2rem}figure img{max-width:100%;height:auto;border:1px solid #e0e0e0}
figcaption{font-size:.85rem;color:#555}
.note{font-size:.88rem;color:#444}
td.prelim{background:#fff3cd}
.prelim-note{background:#fff3cd;padding:.4rem .8rem;border-left:3px solid #b8860b}
dl.about{display:grid;grid-template-columns:max-content auto;gap:.1rem 1rem;font-size:.9rem;margin:.6rem 0}
dl.about dt{font-weight:600}dl.about dd{margin:0}
.src{font-size:.85rem;background:#f4f4f4;padding:.5rem .8rem;border-left:3px solid #1f4e79}
nav a{margin-right:1rem}code{background:#f2f2f2;padding:0 .2rem}
"""


@dataclass(frozen=True)
class FigureRef:
    """A figure as the page embeds it: its file name, its PNG bytes and the alternative text."""

    name: str
    png: bytes
    alt: str

    def img(self) -> str:
        data = base64.b64encode(self.png).decode("ascii")
        return f'<img src="data:image/png;base64,{data}" alt="{escape(self.alt)}" data-figure="{escape(self.name)}">'


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def render_page(
    *,
    title: str,
    study_title: str,
    definition: ReportDefinition,
    subjects: Sequence[SubjectSeries],
    summaries: dict[str, list[ChangeSummary]],
    tallies: dict[str, list[ResponseTally]],
    set_aside: Sequence[SetAside],
    change_fig: FigureRef,
    response_figs: dict[str, FigureRef],
    subject_figs: dict[str, FigureRef],
    meta: ReportMetadata,
    adverse: AdverseEventSummary,
    adverse_fig: FigureRef,
) -> str:
    parts: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{escape(title)}</h1><p>{escape(study_title)}</p>",
        *_about(meta),
        '<nav><a href="#reading">How to read</a><a href="#cohort">Cohort summary</a>'
        '<a href="#responders">Responders</a><a href="#adverse-events">Adverse events</a>'
        '<a href="#subjects">Subjects</a><a href="#notes">Notes</a></nav>',
    ]
    parts += _reading(definition)
    parts += _cohort(definition, summaries, change_fig)
    parts += _responders(definition, tallies, response_figs)
    parts += _adverse(adverse, adverse_fig)
    parts += _subjects(definition, subjects, subject_figs)
    parts += _notes(definition, subjects, set_aside)
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def _about(meta: ReportMetadata) -> list[str]:
    fields = ", ".join(f"{file} {column}" for file, column in CUT_OFF_FIELDS)
    where = f" ({meta.cut_off.field})" if meta.cut_off else ""
    items = "".join(
        f"<dt>{escape(label)}</dt><dd>{escape(value)}{escape(where) if label == 'Data cut-off' else ''}</dd>"
        for label, value in meta.items()
    )
    return [
        f'<dl class="about" id="about">{items}</dl>',
        f"<p class=note>Data cut-off: the latest of these dates in the accepted rows: {escape(fields)}. Open "
        "queries: the data-integrity queries of this load that the site has not closed (query_responses.csv); "
        "<code>fhir-lupus validate --queries FILE</code> lists them.</p>",
    ]


def _reading(definition: ReportDefinition) -> list[str]:
    axis = definition.x_axis
    anchor = "the subject's first completed MSC infusion (procedures.csv, kind msc_infusion)"
    if axis.anchor == "baseline":
        anchor = "the subject's baseline visit"
    rows = "".join(
        f'<tr><td class="l">{escape(s.title)}</td><td class="l">'
        f"{escape(s.analyte or 'SLEDAI-2K total (sledai.csv)')}</td>"
        f'<td class="l">{escape(s.display_unit)}</td><td class="l"><code>{escape(s.unit)}</code></td></tr>'
        for s in definition.series
    )
    return [
        '<h2 id="reading">How to read this report</h2>',
        f"<p>Timelines: x axis = months relative to {anchor}; 1 month = {axis.days_per_month:g} days. The red "
        "dashed line marks the MSC infusion. A subject without a completed infusion is drawn from the baseline "
        "visit and is named under Notes.</p>",
        "<p>Values are converted into one display unit per series with the project's UCUM unit converter. "
        "Censored results (reported as a bound, such as <code>&lt;10</code>) are open triangles at the bound, "
        "pointing to where the true value lies; they are listed under Notes and are never counted as exact "
        "numbers. Values that cannot be put into the display unit are set aside and listed under Notes.</p>",
        "<p>The value at month N is the value recorded at the protocol visit of that month (visit_code in "
        "labs.csv and sledai.csv; months from the study file's schedule); baseline is the month-0 visit.</p>",
        '<table><tr><th class="l">series</th><th class="l">source</th><th class="l">display unit</th>'
        f'<th class="l">UCUM</th></tr>{rows}</table>',
        "<p class=note>Definitions: <code>mappings/report/report.yaml</code>.</p>",
    ]


def _cohort(definition: ReportDefinition, summaries: dict[str, list[ChangeSummary]], figure: FigureRef) -> list[str]:
    months = definition.summary_months
    head = "".join(f'<th colspan="3">M{m}</th>' for m in months)
    sub = "<th>n</th><th>median</th><th>IQR</th>" * len(months)
    body: list[str] = []
    out_rows: list[str] = []
    for series in definition.series:
        cells = [f'<td class="l">{escape(series.title)} ({escape(series.display_unit)})</td>']
        for item in summaries.get(series.key, []):
            iqr = item.iqr
            mark = "" if item.final else ' class="prelim" title="preliminary: computed without some input"'
            star = "" if item.final else "*"
            cells.append(f"<td{mark}>{item.n}{star}</td><td{mark}>{_fmt(item.median)}{star}</td>")
            cells.append(f"<td{mark}>{_fmt(iqr[0])} to {_fmt(iqr[1])}{star}</td>" if iqr else "<td>-</td>")
            if not (item.missing_baseline or item.missing_visit or item.censored or item.incomplete):
                continue
            out_rows.append(
                f'<tr><td class="l">{escape(series.title)}</td><td>M{item.month}</td>'
                f"<td>{len(item.missing_baseline)}</td><td>{len(item.missing_visit)}</td><td>{len(item.censored)}</td>"
                f'<td class="l">{escape(", ".join(item.censored))}</td>'
                f'<td class="l">{escape(", ".join(item.incomplete))}</td></tr>'
            )
        body.append("<tr>" + "".join(cells) + "</tr>")
    return [
        '<h2 id="cohort">Cohort summary: change from baseline</h2>',
        "<p>Change = value at the visit minus value at baseline, in the display unit. Median and IQR (first to "
        "third quartile, linear interpolation) over subjects with exact values at both visits; n counts them. "
        "A value marked * is <b>preliminary</b>: an input row of a subject was refused, or a SLEDAI-2K total "
        "could not be scored whole (a lab it needs was refused or missing), so that subject is left out and the "
        "statistic may change once the data are corrected (listed below).</p>",
        f'<table><tr><th class="l" rowspan="2">series</th>{head}</tr><tr>{sub}</tr>{"".join(body)}</table>',
        "<h3>Not in the summary</h3>",
        (
            '<table><tr><th class="l">series</th><th>visit</th><th>no baseline</th><th>no value at visit</th>'
            '<th>censored</th><th class="l">subjects with a censored value</th>'
            '<th class="l">subjects left out: input refused or preliminary</th></tr>' + "".join(out_rows) + "</table>"
        )
        if out_rows
        else "<p class=note>Every subject has exact values at baseline and at every summary visit.</p>",
        f"<figure>{figure.img()}<figcaption>Change from baseline: box = median and IQR, whiskers 1.5 IQR, "
        "one dot per subject.</figcaption></figure>",
    ]


def _criteria(response: ResponseDefinition, definition: ReportDefinition) -> str:
    by_key = definition.series_by_key()
    items = []
    for category in response.categories:
        rules = " and ".join(escape(c.describe(by_key[c.series])) for c in category.all_of)
        items.append(f"<li><b>{escape(category.label)}</b>: {rules}</li>")
    items.append(f"<li><b>{escape(response.otherwise.label)}</b>: none of the above</li>")
    items.append(
        "<li><b>Not evaluable</b>: a criterion cannot be decided (no value at baseline or at the visit, or a "
        "censored value on both sides of a limit)</li>"
    )
    return "<ol>" + "".join(items) + "</ol>"


def _responders(
    definition: ReportDefinition, tallies: dict[str, list[ResponseTally]], figures: dict[str, FigureRef]
) -> list[str]:
    parts = ['<h2 id="responders">Responders</h2>']
    for response in definition.responses:
        parts.append(f"<h3>{escape(response.title)}</h3>")
        parts.append(
            f"<p>Evaluated at months {', '.join(str(m) for m in response.months)}. Categories are tried in this "
            "order; the first whose criteria all hold is the subject's:</p>"
        )
        parts.append(_criteria(response, definition))
        parts.append(f'<div class="src"><b>Source:</b> {escape(response.source)}')
        if response.verified:
            parts.append(f"<br><b>Verified:</b> {escape(response.verified)}")
        if response.assumptions:
            parts.append("<br><b>Assumptions:</b><ul>" + "".join(f"<li>{escape(a)}</li>" for a in response.assumptions))
            parts.append("</ul>")
        parts.append("</div>")
        items = tallies.get(response.key, [])
        if not items:
            continue
        categories = items[0].categories()
        head = "".join(f"<th>{escape(label)}</th>" for _, label in categories)
        rows = "".join(
            f"<tr><td>M{t.month}</td>"
            + "".join(f"<td>{t.count(key)}</td>" for key, _ in categories)
            + f"<td>{t.evaluable}</td></tr>"
            for t in items
        )
        parts.append(f"<table><tr><th>visit</th>{head}<th>evaluable</th></tr>{rows}</table>")
        if response.key in figures:
            parts.append(
                f"<figure>{figures[response.key].img()}<figcaption>{escape(response.title)}: subjects "
                "per category at each evaluation visit.</figcaption></figure>"
            )
        subjects = sorted({c.subject_id for t in items for c in t.classifications})
        table = ['<table><tr><th class="l">subject</th>' + "".join(f"<th>M{t.month}</th>" for t in items) + "</tr>"]
        for sid in subjects:
            cells = []
            for t in items:
                found = next(c for c in t.classifications if c.subject_id == sid)
                style = ' style="color:#888"' if found.category == NOT_EVALUABLE else ""
                cells.append(f'<td class="l"{style} title="{escape(found.reason)}">{escape(found.label)}</td>')
            table.append(f'<tr><td class="l">{escape(sid)}</td>{"".join(cells)}</tr>')
        table.append("</table>")
        parts.append("<details><summary>Per subject (hover a cell for the values compared)</summary>")
        parts += table
        not_evaluable = [c for t in items for c in t.classifications if c.category == NOT_EVALUABLE]
        if not_evaluable:
            parts.append(
                "<p class=note>Not evaluable: "
                + "; ".join(escape(f"{c.subject_id} M{c.month}: {c.reason}") for c in not_evaluable)
                + "</p>"
            )
        parts.append("</details>")
    return parts


def _counts(title: str, counts: Sequence[Count], unit: str, mark: str) -> str:
    rows = "".join(f'<tr><td class="l">{escape(c.label)}</td><td{mark}>{c.count}</td></tr>' for c in counts)
    return f'<table><tr><th class="l">{escape(title)}</th><th>{escape(unit)}</th></tr>{rows}</table>'


def _adverse(summary: AdverseEventSummary, figure: FigureRef) -> list[str]:
    parts = [
        '<h2 id="adverse-events">Adverse events</h2>',
        "<p>Accepted rows of adverse_events.csv. Related: the event names a study treatment and its causality "
        "is one that <code>mappings/terminology/adverse_events.yaml</code> (<code>related_causality</code>) counts "
        "as related; an event related to both treatments counts under each. Labels: "
        "<code>mappings/report/report.yaml</code>.</p>",
    ]
    caveat = summary.caveat()
    if caveat is not None:
        parts.append(f'<p class="prelim-note"><b>Not final.</b> {escape(caveat)}.</p>')
    if summary.absent is None:
        mark = "" if summary.final else ' class="prelim" title="preliminary: computed without some input"'
        parts += [
            _counts(f"By grade (all {summary.events} events)", summary.by_grade, "events", mark),
            _counts("By seriousness", summary.by_seriousness, "events", mark),
            _counts("By relatedness", summary.by_relatedness, "events", mark),
            _counts(f"Subjects (of {summary.subjects})", summary.per_subject, "subjects", mark),
        ]
    parts.append(
        f"<figure>{figure.img()}<figcaption>Adverse events by grade (serious ones darker) and relatedness, and "
        "subjects with each kind of event.</figcaption></figure>"
    )
    return parts


def _subjects(
    definition: ReportDefinition, subjects: Sequence[SubjectSeries], figures: dict[str, FigureRef]
) -> list[str]:
    parts = ['<h2 id="subjects">Subjects</h2>']
    for subject in subjects:
        parts.append(f'<h3 id="s-{escape(subject.subject_id)}">{escape(subject.subject_id)}</h3>')
        for note in subject.notes:
            parts.append(f"<p class=note>{escape(note)}</p>")
        if subject.subject_id in figures:
            parts.append(f"<figure>{figures[subject.subject_id].img()}</figure>")
    return parts


def _notes(definition: ReportDefinition, subjects: Sequence[SubjectSeries], set_aside: Sequence[SetAside]) -> list[str]:
    titles = {s.key: s.title for s in definition.series}
    censored: list[Point] = [p for s in subjects for points in s.points.values() for p in points if p.reading.censored]
    parts = ['<h2 id="notes">Notes</h2>', f"<h3>Censored values ({len(censored)})</h3>"]
    if censored:
        parts.append(
            '<table><tr><th class="l">subject</th><th class="l">series</th><th>visit</th><th>reported</th>'
            '<th>drawn at</th><th class="l">row</th></tr>'
            + "".join(
                f'<tr><td class="l">{escape(p.subject_id)}</td><td class="l">{escape(titles[p.series])}</td>'
                f"<td>{escape(p.visit_code)}</td><td>{escape(p.reported)}</td><td>{escape(str(p.reading))}</td>"
                f'<td class="l">{escape(p.where)}</td></tr>'
                for p in censored
            )
            + "</table>"
        )
    else:
        parts.append("<p class=note>None.</p>")
    parts.append(f"<h3>Set aside ({len(set_aside)})</h3>")
    if set_aside:
        parts.append(
            '<table><tr><th class="l">subject</th><th class="l">series</th><th>visit</th><th>reported</th>'
            '<th class="l">why</th><th class="l">row</th></tr>'
            + "".join(
                f'<tr><td class="l">{escape(a.subject_id)}</td><td class="l">{escape(titles[a.series])}</td>'
                f'<td>{escape(a.visit_code)}</td><td>{escape(a.reported)}</td><td class="l">{escape(a.reason)}</td>'
                f'<td class="l">{escape(a.where)}</td></tr>'
                for a in set_aside
            )
            + "</table>"
        )
    else:
        parts.append("<p class=note>None: every value of every series was drawn.</p>")
    notes = [(s.subject_id, n) for s in subjects for n in s.notes]
    if notes:
        parts.append("<h3>Subject notes</h3><ul>")
        parts += [f"<li>{escape(sid)}: {escape(note)}</li>" for sid, note in notes]
        parts.append("</ul>")
    return parts
