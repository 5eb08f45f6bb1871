"""``fhir-lupus signals``: flare signals from a pulled table and/or a trial data directory (fhir_lupus.signals),
printed, written as CSV, and with ``--publish`` written to a server as DetectedIssue."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fhir_lupus.cli._common import (
    DEFAULT_JOURNAL,
    AllowRejects,
    JournalPath,
    Mappings,
    SiteFile,
    exit_on_rejects,
    fail,
    open_journal,
    open_trial,
    print_rows,
    settings_of,
)
from fhir_lupus.cli._connection import open_client
from fhir_lupus.cli._output import outcome, result_console
from fhir_lupus.client import Connection
from fhir_lupus.errors import FhirLupusError
from fhir_lupus.signals import NotCounted, describe, flare_signals, publish_signals, read_pulled, write_signals

__all__ = ["signals"]


def signals(
    data_dir: Annotated[
        Path | None,
        typer.Argument(
            help="Trial data directory: its labs too, checked (refused or queried rows never count).",
            show_default=False,
        ),
    ] = None,
    table: Annotated[
        Path | None, typer.Option("--table", help="A pulled lab table (the CSV `fhir-lupus pull -o` writes).")
    ] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the signals as CSV.")] = None,
    publish: Annotated[
        bool, typer.Option("--publish", help="Write each signal to --server as a DetectedIssue (idempotent, audited).")
    ] = False,
    server: Annotated[str | None, typer.Option("--server", help="FHIR base URL for --publish.")] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="FHIR_LUPUS_TOKEN", help="Bearer token.")] = None,
    study: Annotated[str, typer.Option("--study", help="NCT id: the identifier systems of what --publish writes.")] = (
        "NCT00698191"
    ),
    audit_log: Annotated[
        Path | None, typer.Option("--audit-log", help="Audit log (default: the journal's, .audit.jsonl).")
    ] = None,
    journal: JournalPath = DEFAULT_JOURNAL,
    allow_rejects: AllowRejects = False,
    mappings: Mappings = None,
    site: SiteFile = None,
) -> None:
    """Flare signals: SLEDAI-2K laboratory descriptors that appear since the previous value, and KDIGO kidney
    relapse from the post-treatment nadir (mappings/signals/flares.yaml, each with its source).

    Give a pulled table (--table), a data directory, or both. Only final results count. Each signal is printed;
    -o writes them all as CSV; --publish --server URL writes each as a DetectedIssue, once."""
    if table is None and data_dir is None:
        fail(ValueError("give a pulled table (--table) or a trial data directory, or both"))
    if publish and not server:
        fail(ValueError("--publish needs --server"))
    connection = Connection(server=server, token=token) if publish and server else None
    settings = settings_of(mappings, site=site, connection=connection)
    trial = open_trial(data_dir, settings, "signals") if data_dir is not None else None
    try:
        rows = read_pulled(table) if table is not None else []
        not_counted: list[NotCounted] = []
        found = flare_signals(rows, trial=trial, settings=settings, table=str(table), not_counted=not_counted)
        if output is not None:
            write_signals(found, output)
    except (FhirLupusError, OSError) as exc:
        fail(exc)
    console = result_console()
    for signal in found:
        console.print(describe(signal), highlight=False, markup=False)
    for item in not_counted:
        console.print(f"not counted: {item}", highlight=False, markup=False)
    provisional = sum(1 for signal in found if signal.provisional)
    outcome.print(
        f"{len(found)} signal(s)"
        + (f" ({provisional} provisional)" if provisional else "")
        + (f", written to {output}" if output is not None else "")
        + (f"; {len(not_counted)} pulled row(s) not counted: the checks refused or queried them" if not_counted else "")
    )
    if publish:
        client = open_client(settings)
        try:
            with client:
                report = publish_signals(
                    client, found, settings=settings, study=study, journal=open_journal(journal), audit_log=audit_log
                )
        except FhirLupusError as exc:
            fail(exc)
        outcome.print(
            f"published to {client.base_url}: {len(report.created)} created, {len(report.updated)} updated, "
            f"{len(report.unchanged)} unchanged"
        )
        if report.unresolved:
            outcome.print(
                f"no Patient on the server for {', '.join(report.unresolved)}: named by study id in words only "
                "(push the trial, or pull the table from this server, to link them)"
            )
    if trial is not None:
        if trial.report.rejects:
            print_rows(trial.report)
        exit_on_rejects(trial.report, allow_rejects)
