"""``fhir-lupus schedule``: visits done, missed and out of window per subject, and the analytes missing."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fhir_lupus._scratch import write_csv
from fhir_lupus.cli._common import DataDir, Mappings, console, fail, load, note_rejects, settings_of
from fhir_lupus.model import SubjectSchedule
from fhir_lupus.study import SCHEDULE_CSV_COLUMNS, schedule_report, schedule_rows

__all__ = ["schedule"]


def schedule(
    data_dir: DataDir,
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="Write one row per subject x protocol visit to this CSV file.")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Date (YYYY-MM-DD) of the data snapshot: subjects still on study count to it."),
    ] = None,
    mappings: Mappings = None,
) -> None:
    """Each subject's visits against the protocol schedule (mappings/studies/<NCT id>.yaml `protocol`)."""
    snapshot: date | None = None
    if as_of is not None:
        try:
            snapshot = datetime.strptime(as_of, "%Y-%m-%d").date()
        except ValueError:
            fail(ValueError(f"--as-of {as_of!r} is not a date (YYYY-MM-DD)"))
    trial = load(data_dir, settings_of(mappings), "schedule")
    data, report = trial.whole(), trial.report
    note_rejects(report, "are not counted: their visits are unknown")
    for name, how in sorted(data.absent.items()):
        console.print(f"[yellow]note[/yellow] {name} is {how}: what it holds is unknown, not missing", highlight=False)
    schedules = schedule_report(data, as_of=snapshot, report=report)
    out = Console()
    if not out.is_terminal:
        out = Console(width=160)  # a file or pipe: no terminal width to fit, keep each subject on one line
    out.print(summary_table(schedules))
    if csv_path is not None:
        rows = [[row[column] for column in SCHEDULE_CSV_COLUMNS] for row in schedule_rows(schedules)]
        try:
            write_csv(csv_path, [SCHEDULE_CSV_COLUMNS, *rows])
        except OSError as exc:
            fail(ValueError(f"--csv {csv_path}: {exc.strerror or exc}"))
        console.print(f"wrote {csv_path}", highlight=False)


def summary_table(schedules: list[SubjectSchedule]) -> Table:
    table = Table(title="Protocol schedule", title_justify="left")
    for column in (
        "subject",
        "day 0",
        "last contact",
        "done",
        "out of window",
        "missed",
        "skipped",
        "not yet due",
        "unknown",
        "visits short",
        "analytes missing (visits)",
    ):
        table.add_column(column, justify="left" if column in ("subject", "analytes missing (visits)") else "right")
    for item in schedules:
        if item.anchor is None:
            table.add_row(item.subject_id, "no BL visit", str(item.last_contact or ""), *([""] * 8))
            continue
        missing: Counter[str] = Counter(analyte for outcome in item.visits for analyte in outcome.missing)
        table.add_row(
            item.subject_id,
            f"{item.anchor}" + (" (BL: no infusion)" if item.anchor_fallback else ""),
            f"{item.last_contact}" + (" off study" if item.off_study else ""),
            str(item.count("done")),
            str(item.count("out-of-window")),
            str(item.count("missed")),
            str(item.count("skipped")),
            str(item.count("not-yet-due")),
            str(item.count("unknown")),
            str(sum(1 for outcome in item.visits if outcome.missing)),
            ", ".join(f"{analyte} ({count})" for analyte, count in sorted(missing.items())),
        )
    return table
