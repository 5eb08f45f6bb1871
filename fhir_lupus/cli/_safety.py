"""``fhir-lupus safety``: the adverse events of a data directory, summarised (fhir_lupus.study._safety)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fhir_lupus.cli._common import (
    AllowRejects,
    DataDir,
    Mappings,
    exit_on_rejects,
    fail,
    load,
    print_rows,
    settings_of,
)
from fhir_lupus.cli._output import Format, FormatOption, emit_csv, emit_json, outcome, result_console
from fhir_lupus.errors import FhirLupusError
from fhir_lupus.study import SafetySummary, summarise_safety, write_summary_csv
from fhir_lupus.terminology import load_adverse_event_terms

__all__ = ["safety"]

CsvOut = Annotated[Path | None, typer.Option("--csv", help="Also write the counts as CSV (dimension, value, events).")]


def safety(
    data_dir: DataDir,
    csv: CsvOut = None,
    output_format: FormatOption = Format.table,
    allow_rejects: AllowRejects = False,
    mappings: Mappings = None,
) -> None:
    """Adverse events by grade, seriousness and relatedness, per subject, and the serious events.

    The result goes to standard output: tables, or with --format csv the counts (dimension, value, events) and
    with --format json everything, in full, for a program."""
    settings = settings_of(mappings)
    trial = load(data_dir, settings, "safety")
    data, report = trial.whole(), trial.report
    try:
        terms = load_adverse_event_terms(settings.pack)
        summary = summarise_safety((c.record.event for c in data.adverse_events), terms)
    except FhirLupusError as exc:
        fail(exc)
    if report.rejects:
        print_rows(report)
        for reject in report.rejects:
            outcome.print(f"[red]rejected[/red] {reject}", highlight=False)
    if output_format is Format.json:
        emit_json(_document(summary))
    elif output_format is Format.csv:
        emit_csv(("dimension", "value", "events"), ([r["dimension"], r["value"], r["events"]] for r in summary.rows()))
    else:
        _render(summary, result_console())
    if csv is not None:
        try:
            write_summary_csv(summary, csv)
        except OSError as exc:
            fail(exc)
    exit_on_rejects(report, allow_rejects)


def _document(summary: SafetySummary) -> dict[str, Any]:
    """The whole summary as JSON: the counts, each subject's, and every serious event with all its fields."""
    return {
        "events": summary.events,
        "by_grade": {str(grade): count for grade, count in summary.by_grade.items()},
        "by_seriousness": summary.by_seriousness,
        "by_relatedness": summary.by_relatedness,
        "by_causality": summary.by_causality,
        "per_subject": {
            subject_id: {
                "events": subject.events,
                "serious": subject.serious,
                "max_grade": subject.max_grade,
                "related": dict(sorted(subject.related.items())),
            }
            for subject_id, subject in summary.per_subject.items()
        },
        "serious_events": [event.model_dump(mode="json") for event in summary.serious_events],
    }


def _render(summary: SafetySummary, out: Console) -> None:
    out.print(f"{summary.events} adverse event(s)")
    for title, counts in (
        ("By CTCAE grade", summary.by_grade),
        ("By seriousness", summary.by_seriousness),
        ("Related to (causality possible or stronger)", summary.by_relatedness),
        ("By causality", summary.by_causality),
    ):
        table = Table(title=title, title_justify="left")
        table.add_column("value")
        table.add_column("events", justify="right")
        for key, count in counts.items():
            table.add_row(str(key), str(count))
        out.print(table)
    table = Table(title="Per subject", title_justify="left")
    for column in ("subject", "events", "serious", "max grade", "related"):
        table.add_column(column, justify="left" if column in ("subject", "related") else "right")
    for subject_id, subject in summary.per_subject.items():
        related = ", ".join(f"{k} {v}" for k, v in sorted(subject.related.items()))
        table.add_row(subject_id, str(subject.events), str(subject.serious), str(subject.max_grade), related)
    out.print(table)
    table = Table(title="Serious events", title_justify="left")
    for column in ("event", "subject", "term", "grade", "criteria", "onset", "outcome", "related to", "causality"):
        table.add_column(column)
    for e in summary.serious_events:
        table.add_row(
            e.event_id,
            e.subject_id,
            e.term,
            str(e.grade),
            ";".join(e.seriousness_criteria),
            e.onset_on.isoformat(),
            e.outcome,
            e.related_to,
            e.causality or "",
        )
    out.print(table)
