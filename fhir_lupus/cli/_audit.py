"""``fhir-lupus audit verify`` and ``fhir-lupus audit show``: the hash-chained audit trail (fhir_lupus.audit).

Exit codes of ``verify`` (cli/_exit.py): 0 the chain is intact; 1 tampered (an entry edited, removed, replaced
or reordered); 2 the log or journal cannot be read; 3 intact except a torn last line (an append killed
mid-write: not tampering, but the last push or pull may be missing from the trail). ``show`` prints the entries
as a table, or in full as CSV or JSON (``--format``).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fhir_lupus.audit import default_audit_path, read_entries, verify
from fhir_lupus.cli._common import DEFAULT_JOURNAL, JournalPath, fail
from fhir_lupus.cli._exit import stop
from fhir_lupus.cli._output import Format, FormatOption, console, emit_csv, emit_json, outcome, result_console
from fhir_lupus.journal import Journal

__all__ = ["app"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Verify and show the audit trail.")
SHOWN = ("seq", "ts", "actor", "kind", "server", "outcome", "counts", "content_hash")

LogArgument = Annotated[
    Path | None,
    typer.Argument(
        help="The audit log (default: the journal's, JOURNAL with suffix .audit.jsonl).", show_default=False
    ),
]


def _log_path(log: Path | None, journal: Path) -> Path:
    path = log if log is not None else default_audit_path(journal)
    if not path.is_file():
        fail(ValueError(f"{path}: no audit log here"))
    return path


def _anchor(journal: Path, log: Path) -> tuple[int, str] | None:
    """The journal's record of the last entry it appended to ``log`` (None without a journal file)."""
    if not journal.is_file():
        return None
    try:
        with Journal(journal, in_memory=True) as book:  # a check writes nothing
            return book.audit_head(log)
    except (OSError, sqlite3.Error) as exc:
        fail(ValueError(f"{journal}: cannot open the journal: {exc}"))


@app.command("verify")
def verify_command(
    log: LogArgument = None,
    journal: JournalPath = DEFAULT_JOURNAL,
    expect_head: Annotated[
        str | None, typer.Option("--expect-head", help="A head hash recorded elsewhere; it must be in the log.")
    ] = None,
) -> None:
    """Check the hash chain: exit 0 intact, 1 tampered, 3 only a torn last line (a killed append)."""
    path = _log_path(log, journal)
    try:
        report = verify(path, expect_head=expect_head, anchor=_anchor(journal, path))
    except OSError as exc:
        fail(ValueError(f"{path}: {exc.strerror or exc}"))
    for note in report.notes:
        console.print(f"[yellow]note[/yellow] {note}", highlight=False)
    for problem in report.problems:
        outcome.print(f"[red]tampered[/red] {problem}", highlight=False)
    if report.status == "tampered":
        outcome.print(f"[red]{report.summary()}[/red]", highlight=False)
        stop("audit-tampered")
    if report.status == "torn":
        outcome.print(
            f"[yellow]{report.summary()}[/yellow]: an append was killed mid-write; this is not tampering, "
            "but the last push or pull may be missing from the trail (the next append acknowledges the fragment)",
            highlight=False,
        )
        stop("audit-torn")
    outcome.print(report.summary(), highlight=False)


@app.command("show")
def show_command(
    log: LogArgument = None,
    journal: JournalPath = DEFAULT_JOURNAL,
    last: Annotated[int, typer.Option("--last", "-n", min=1, help="Show the last N entries.")] = 20,
    output_format: FormatOption = Format.table,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the entries as JSON Lines, one as the log stores it a line.")
    ] = False,
) -> None:
    """The last entries of the audit log (who, when, what, where, counts); ``verify`` judges them."""
    path = _log_path(log, journal)
    try:
        entries = read_entries(path)[-last:]
    except OSError as exc:
        fail(ValueError(f"{path}: {exc.strerror or exc}"))
    if as_json:
        for entry in entries:
            typer.echo(json.dumps(entry, ensure_ascii=False, sort_keys=True))
        return
    if output_format is Format.json:
        emit_json(entries)
        return
    rows = [[_cell(entry, column) for column in SHOWN] for entry in entries]
    if output_format is Format.csv:
        emit_csv(SHOWN, rows)
        return
    table = Table(title=str(path), title_justify="left")
    for column in ("seq", "time (UTC)", "actor", "kind", "server", "outcome", "counts", "content hash"):
        table.add_column(column, justify="right" if column == "seq" else "left")
    for row in rows:
        table.add_row(*row[:-1], row[-1][:16])  # the hash's head: enough to tell entries apart (csv, json: whole)
    result_console().print(table)


def _cell(entry: dict[str, object], column: str) -> str:
    """An entry's field as one cell: counts as ``name value`` pairs (those that are not 0)."""
    value = entry.get(column)
    if column == "counts" and isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items() if v)
    return "" if value is None else str(value)
