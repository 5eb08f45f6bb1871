"""``fhir-lupus demo``: the main job on an embedded default, end to end."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from fhir_lupus import devserver
from fhir_lupus.cli._common import fail, load, print_rows
from fhir_lupus.cli._connection import open_client
from fhir_lupus.cli._exit import stop
from fhir_lupus.cli._output import console, outcome
from fhir_lupus.cli._sync_report import render_push, subject_table
from fhir_lupus.client import Connection
from fhir_lupus.errors import ExtraMissing, FhirLupusError
from fhir_lupus.journal import Journal
from fhir_lupus.pull import compare_round_trip, pull_study
from fhir_lupus.push import push_trial
from fhir_lupus.report import write_report  # matplotlib itself loads only when the report is drawn
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import LabCatalogue

__all__ = ["demo"]

EXAMPLE = "examples/nct00698191"


def demo(
    server: Annotated[
        str | None, typer.Option("--server", help="Use this FHIR server instead of starting one.")
    ] = None,
    engine: Annotated[
        str, typer.Option("--engine", help="Embedded server to start: medplum (quick) or hapi.")
    ] = "medplum",
    data_dir: Annotated[
        Path | None, typer.Option("--data", help="Trial data directory (default: the example trial of a checkout).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Where the pulled labs and the journal go.")] = Path("out/demo"),
) -> None:
    """Start a local FHIR server, push the example trial, pull its labs back, report, stop the server.

    Without --server and --data it needs a checkout (servers/, examples/); from a wheel, pass both. The report
    needs matplotlib, the package's report extra (make demo installs it): without it, a note says how to add it."""
    needed = ([] if data_dir else [EXAMPLE]) + ([] if server else ["servers"])
    missing = devserver.checkout_missing(*needed)
    if missing is not None:  # installed from a wheel: the example trial and the servers live in a checkout
        fail(missing)
    data_dir = data_dir or devserver.repo_root() / EXAMPLE
    trial = load(data_dir, Settings.default(), "push")
    data, report = trial.whole(), trial.report
    print_rows(report)
    if report.rejects:
        fail(FhirLupusError(f"{len(report.rejects)} example rows rejected; run fhir-lupus validate {data_dir}"))
    handle = None
    if server is None:
        console.print(f"starting the embedded {engine} FHIR server on 127.0.0.1 ...")
        try:
            handle = devserver.start(engine)
        except (RuntimeError, ValueError) as exc:
            fail(exc)
        server = handle.url
        console.print(f"{engine} answers at {server}")
    settings = trial.settings.with_connection(Connection(server))
    out.mkdir(parents=True, exist_ok=True)
    try:
        with (
            tempfile.TemporaryDirectory() as scratch,
            open_client(settings) as client,
            Journal(Path(scratch) / "journal.sqlite") as book,
        ):
            result = push_trial(trial, client, book, source=str(data_dir), settings=settings)
            render_push(result)
            again = push_trial(trial, client, book, source=str(data_dir), settings=settings)
            console.print(f"second push: {again.written} written, {again.unchanged} unchanged")
            pulled = pull_study(client, book, data.study, since=None, output=out / "labs.csv", settings=settings)
    except FhirLupusError as exc:
        fail(exc)
    finally:
        if handle is not None:
            devserver.stop(handle)
            console.print(f"stopped the {engine} server")
    console.print(subject_table(pulled.rows))
    trip = compare_round_trip(data, pulled.rows, LabCatalogue(settings.pack))
    console.print(
        f"pulled {len(pulled.rows)} lab rows ({pulled.outside_windows} outside visit windows, "
        f"{len(pulled.unmapped)} not in the catalogue) into {out / 'labs.csv'}"
    )
    verdict = "[green]identical[/green]" if trip.exact else "[red]DIFFERENT[/red]"
    outcome.print(
        f"round trip: {trip.matched} of {len(data.labs) + len(data.treg)} lab and Treg values {verdict} "
        "after unit normalisation "
        f"({len(trip.missing)} missing, {len(trip.different)} different, {len(trip.extra)} extra)"
    )
    for line in (trip.missing + trip.different + trip.extra)[:10]:
        console.print(f"  {line}")
    _report(trial, out, settings)
    if not trip.exact:
        stop("round-trip-different")


def _report(trial: TrialSource, out: Path, settings: Settings) -> None:
    """The investigator report of the pushed trial; without the report extra (matplotlib), a note instead: the
    demo's job, push and pull, is done by then."""
    try:
        page = write_report(trial, out / "report.html", figures_dir=out / "report_figures", settings=settings)
    except ExtraMissing as exc:
        console.print(f"[yellow]note[/yellow] investigator report skipped: {escape(str(exc))}", highlight=False)
        return
    except FhirLupusError as exc:
        fail(exc)
    console.print(f"investigator report: {len(page.figures)} figures in {out / 'report_figures'}; page:")
    typer.echo(str(page.html))
