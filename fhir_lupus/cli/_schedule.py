"""``fhir-lupus schedule``: visits done, missed and out of window per subject, and the analytes missing."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from fhir_lupus._scratch import write_csv
from fhir_lupus.cli._common import DataDir, Mappings, fail, load, note_rejects, settings_of
from fhir_lupus.cli._output import Format, FormatOption, console, emit_csv, emit_json, result_console
from fhir_lupus.model import SubjectSchedule
from fhir_lupus.study import SCHEDULE_CSV_COLUMNS, schedule_report, schedule_rows

__all__ = ["SUMMARY_COLUMNS", "schedule", "summary_rows"]

# the visit statuses the table counts, in its order (SubjectSchedule.count)
STATUSES: tuple[Literal["done", "out-of-window", "missed", "skipped", "not-yet-due", "unknown"], ...] = (
    "done",
    "out-of-window",
    "missed",
    "skipped",
    "not-yet-due",
    "unknown",
)


def schedule(
    data_dir: DataDir,
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="Write one row per subject x protocol visit to this CSV file.")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Date (YYYY-MM-DD) of the data snapshot: subjects still on study count to it."),
    ] = None,
    output_format: FormatOption = Format.table,
    mappings: Mappings = None,
) -> None:
    """Each subject's visits against the protocol schedule (mappings/studies/<NCT id>.yaml `protocol`).

    The result, one row per subject, goes to standard output: a table, or with --format csv or json in full for
    a program; --csv writes one row per subject and protocol visit to a file."""
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
    rows = summary_rows(schedules)
    if output_format is Format.json:
        emit_json(rows)
    elif output_format is Format.csv:
        emit_csv(SUMMARY_COLUMNS, ([_flat(row[column]) for column in SUMMARY_COLUMNS] for row in rows))
    else:
        result_console().print(summary_table(rows))
    if csv_path is not None:
        visit_rows = [[row[column] for column in SCHEDULE_CSV_COLUMNS] for row in schedule_rows(schedules)]
        try:
            write_csv(csv_path, [SCHEDULE_CSV_COLUMNS, *visit_rows])
        except OSError as exc:
            fail(ValueError(f"--csv {csv_path}: {exc.strerror or exc}"))
        console.print(f"wrote {csv_path}", highlight=False)


SUMMARY_COLUMNS = (
    "subject_id",
    "day_0",
    "day_0_is_bl",
    "last_contact",
    "off_study",
    *(status.replace("-", "_") for status in STATUSES),
    "visits_short",
    "analytes_missing",
)


def summary_rows(schedules: list[SubjectSchedule]) -> list[dict[str, Any]]:
    """One row per subject (SUMMARY_COLUMNS): day 0 (``day_0_is_bl``: the BL visit, for want of an infusion),
    last contact, visits per status, visits short of an analyte and, per analyte, at how many visits it is
    missing. A subject without a BL visit has no day 0 and no counts."""
    rows: list[dict[str, Any]] = []
    for item in schedules:
        row: dict[str, Any] = dict.fromkeys(SUMMARY_COLUMNS)
        row |= {"subject_id": item.subject_id, "last_contact": item.last_contact, "off_study": item.off_study}
        if item.anchor is not None:
            missing: Counter[str] = Counter(analyte for outcome in item.visits for analyte in outcome.missing)
            row |= {"day_0": item.anchor, "day_0_is_bl": item.anchor_fallback}
            row |= {status.replace("-", "_"): item.count(status) for status in STATUSES}
            row["visits_short"] = sum(1 for outcome in item.visits if outcome.missing)
            row["analytes_missing"] = dict(sorted(missing.items()))
        rows.append(row)
    return rows


def _flat(value: object) -> object:
    """A cell of the CSV: ``analyte count`` pairs joined by ``; ``, true/false as JSON writes them."""
    if isinstance(value, dict):
        return "; ".join(f"{key} {count}" for key, count in value.items())
    return str(value).lower() if isinstance(value, bool) else value


def summary_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Protocol schedule", title_justify="left")
    headers = ("subject", "day 0", "last contact", *(status.replace("-", " ") for status in STATUSES))
    for column in (*headers, "visits short", "analytes missing (visits)"):
        table.add_column(column, justify="left" if column in ("subject", "analytes missing (visits)") else "right")
    for row in rows:
        contact = f"{row['last_contact'] or ''}" + (" off study" if row["off_study"] else "")
        if row["day_0"] is None:
            table.add_row(row["subject_id"], "no BL visit", contact, *([""] * 8))
            continue
        table.add_row(
            row["subject_id"],
            f"{row['day_0']}" + (" (BL: no infusion)" if row["day_0_is_bl"] else ""),
            contact,
            *(str(row[status.replace("-", "_")]) for status in STATUSES),
            str(row["visits_short"]),
            ", ".join(f"{analyte} ({count})" for analyte, count in row["analytes_missing"].items()),
        )
    return table
