"""What the command groups share: the consoles (cli/_output.py), common options, the ``Settings`` of a command
(``settings_of``, the one place they are made), summaries, and ``fail`` (an error printed, and the exit code
cli/_exit.py gives it)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.markup import escape
from rich.table import Table

from fhir_lupus.cli._exit import exit_code, stop
from fhir_lupus.cli._output import console, outcome, verbose
from fhir_lupus.client import Connection
from fhir_lupus.errors import FhirLupusError, RejectedRows
from fhir_lupus.journal import Journal
from fhir_lupus.model import LoadReport, write_quarantine
from fhir_lupus.settings import Settings
from fhir_lupus.validation import Validation

if TYPE_CHECKING:  # imported where a trial is read: pull and audit read none
    from fhir_lupus.source import TrialSource

DataDir = Annotated[Path, typer.Argument(help="Trial data directory (docs/csv-layout.md).", show_default=False)]
Quarantine = Annotated[
    Path | None,
    typer.Option("--quarantine", help="Write each rejected row, with its reason, under this directory."),
]
AllowRejects = Annotated[bool, typer.Option("--allow-rejects", help="Go on (and exit 0) even when rows were rejected.")]
Mappings = Annotated[
    Path | None, typer.Option("--mappings", help="Use this mappings/ directory instead of the bundled one.")
]
SiteFile = Annotated[
    Path | None,
    typer.Option(
        "--site",
        envvar="FHIR_LUPUS_SITE",
        help="Site profile (fhir-lupus site init): MRN and identifier systems, canonical base, SMART client. "
        "Default: the example profile, whose placeholders only a loopback server accepts.",
    ),
]
StrictValidation = Annotated[
    bool,
    typer.Option(
        "--strict-validation",
        help="Evaluate every FHIRPath invariant with fhirpathpy (the reference path, slower); same verdicts.",
    ),
]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        help="Processes that validate the mapped resources (default: one per CPU; 1: all in this process). "
        "The output is the same for every value.",
    ),
]
JournalPath = Annotated[Path, typer.Option("--journal", help="SQLite journal of pushes and pulls.")]
DEFAULT_JOURNAL = Path("fhir-lupus-journal.sqlite")
PRELIMINARY_CHECK = "sledai-undecided"  # the query that says a published total is preliminary (checks.yaml)


def open_journal(path: Path, *, in_memory: bool = False) -> Journal:
    """The SQLite journal, or exit 2 naming the file when it cannot be opened. ``in_memory``: a copy, for a
    command that must write nothing (``push --dry-run``)."""
    try:
        return Journal(path, in_memory=in_memory)
    except (OSError, sqlite3.Error) as exc:
        fail(ValueError(f"{path}: cannot open the journal: {exc}"))


def settings_of(
    mappings: Path | None,
    *,
    site: Path | None = None,
    strict_validation: bool = False,
    connection: Connection | None = None,
) -> Settings:
    """The command's ``Settings``, from ``--mappings``, ``--site``, ``--strict-validation`` and the connection
    options (cli/_connection.py): the pack and the profile are read and checked here, once for the whole command
    (exit 2 naming the file when one is wrong)."""
    try:
        validation: Validation = "strict" if strict_validation else "fast"
        return Settings.from_mappings(mappings, site=site, validation=validation, connection=connection)
    except FhirLupusError as exc:
        fail(exc)


def open_trial(data_dir: Path, settings: Settings, command: str) -> TrialSource:
    """The data directory as a ``TrialSource``, once ``command``'s files are found there (mappings/checks/
    inputs.yaml); the source loads, checks and screens when the command asks."""
    from fhir_lupus.source import TrialSource

    try:
        return TrialSource.directory(data_dir, command=command, settings=settings)
    except FhirLupusError as exc:
        fail(exc)


def load(data_dir: Path, settings: Settings, command: str) -> TrialSource:
    """``open_trial``, then the whole trial loaded (``TrialSource.whole``): its report holds the screening
    queries too."""
    trial, started = open_trial(data_dir, settings, command), time.monotonic()
    try:
        trial.whole()
    except FhirLupusError as exc:
        fail(exc)
    _note_read(data_dir, started)
    return trial


def check_trial(trial: TrialSource) -> TrialSource:
    """Every chunk of subjects of ``trial`` (``open_trial``'s) read and checked (``TrialSource.check``), as
    ``load`` does: the report holds every reject before anything is sent, and the command replays the chunks it
    kept. Push opens the trial (its files are there), asks the server, and only then reads it through this."""
    started = time.monotonic()
    try:
        trial.check()
    except FhirLupusError as exc:
        trial.close()
        fail(exc)
    if trial.data_dir is not None:
        _note_read(trial.data_dir, started)
    return trial


def _note_read(data_dir: Path, started: float) -> None:
    if verbose():
        console.print(f"read and checked {data_dir} in {time.monotonic() - started:.1f} s", highlight=False)


def print_rows(report: LoadReport) -> None:
    table = Table(title="Rows", title_justify="left")
    for column in ("file", "read", "accepted", "rejected"):
        table.add_column(column, justify="left" if column == "file" else "right")
    for file in sorted(report.read):
        table.add_row(file, str(report.read[file]), str(report.accepted(file)), str(report.rejected[file]))
    total_accepted = sum(report.accepted(f) for f in report.read)
    table.add_row(
        "total",
        str(sum(report.read.values())),
        str(total_accepted),
        str(sum(report.rejected.values())),
        style="bold",
    )
    console.print(table)


def report_load(report: LoadReport, quarantine: Path | None, *, verbose_findings: bool = True) -> None:
    """Rows table, findings (notes and queries), rejects, quarantine files."""
    print_rows(report)
    if verbose_findings:
        for finding in report.findings:
            label = "[magenta]query[/magenta]" if finding.severity == "query" else "[yellow]note[/yellow]"
            console.print(f"{label} {finding}", highlight=False)
    else:  # what this command publishes as preliminary is listed all the same (a SLEDAI-2K total, a lower bound)
        for finding in report.findings:
            if finding.kind == PRELIMINARY_CHECK:
                console.print(f"[yellow]preliminary[/yellow] {finding}", highlight=False)
        if report.queries:
            console.print(
                f"[magenta]{len(report.queries)} queries[/magenta] for the site (fhir-lupus validate --queries lists "
                "them)",
                highlight=False,
            )
    for reject in report.rejects:
        outcome.print(f"[red]rejected[/red] {reject}", highlight=False)  # an error: shown under -q too
    if quarantine is not None and report.rejects:
        for path in write_quarantine(report.rejects, quarantine):
            console.print(f"quarantined rows in {path}")


def note_rejects(report: LoadReport, consequence: str) -> None:
    """For commands that go on despite rejected rows: one line saying how many and what that means."""
    if report.rejects:
        console.print(
            f"[yellow]note[/yellow] {sum(report.rejected.values())} row(s) rejected by the loader {consequence} "
            "(fhir-lupus validate lists them)",
            highlight=False,
        )


def exit_on_rejects(report: LoadReport, allow_rejects: bool, *, written: str = "") -> None:
    """Exit 1 when rows were rejected, unless ``allow_rejects``; ``written``: what a publishing command did not
    write because of them."""
    if report.rejects and not allow_rejects:
        outcome.print(
            f"[red]{sum(report.rejected.values())} row(s) rejected[/red]"
            + (f": {written} not written" if written else "")
            + " (use --allow-rejects to go on)"
        )
        stop("rows-rejected")


def refuse_rejects(report: LoadReport, allow_rejects: bool, what: str) -> None:
    """Before a publishing command writes ``what``: rows were rejected and --allow-rejects was not given, so
    nothing is written (exit 1). With --allow-rejects, say which derived values are preliminary."""
    if not report.rejects:
        return
    if not allow_rejects:
        report_load(report, None, verbose_findings=False)
        fail(RejectedRows(sum(report.rejected.values()), f"{what} not written"))
    console.print(
        f"[yellow]note[/yellow] {sum(report.rejected.values())} row(s) rejected and --allow-rejects given: {what} "
        "is written without them; every value derived from them is marked preliminary",
        highlight=False,
    )


def fail(exc: Exception) -> NoReturn:
    """Print the error; exit with the code cli/_exit.py gives its class."""
    outcome.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)  # "fhir_lupus[spark]" stays as written
    raise typer.Exit(exit_code(exc))
