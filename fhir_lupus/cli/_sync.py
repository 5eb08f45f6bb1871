"""``fhir-lupus push`` (``pull`` is in cli/_pull.py)."""

from __future__ import annotations

import time
from typing import Annotated, cast

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fhir_lupus.bundle import DEPENDENCY_ORDER
from fhir_lupus.cli._common import (
    DEFAULT_JOURNAL,
    AllowRejects,
    DataDir,
    JournalPath,
    Mappings,
    Quarantine,
    SiteFile,
    StrictValidation,
    Workers,
    check_trial,
    exit_on_rejects,
    fail,
    open_journal,
    open_trial,
    report_load,
    settings_of,
)
from fhir_lupus.cli._connection import connection_options, open_client
from fhir_lupus.cli._exit import stop
from fhir_lupus.cli._output import console, verbose
from fhir_lupus.cli._sync_report import render_dry_run, render_push
from fhir_lupus.client import Connection, FhirClient, WriteStrategy
from fhir_lupus.errors import FhirLupusError
from fhir_lupus.journal import Journal
from fhir_lupus.push import (
    DEFAULT_CONCURRENCY,
    PushOptions,
    dry_run_trial,
    push_trial,
    reach_server,
    server_fhir_version,
)
from fhir_lupus.settings import Settings

__all__ = ["push"]


@connection_options
def push(
    data_dir: DataDir,
    connection: Connection,
    chunk_size: Annotated[
        int, typer.Option("--chunk-size", min=1, help="Most resources per transaction; less if the server asks.")
    ] = 500,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read the server's state and report; write nothing.")
    ] = False,
    show_diffs: Annotated[int, typer.Option("--show-diffs", help="Dry run: list at most this many updates.")] = 20,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            min=1,
            help="Subjects written at the same time (each in its own transactions); 1 writes one after another.",
        ),
    ] = DEFAULT_CONCURRENCY,
    conditional_creates: Annotated[
        bool,
        typer.Option(
            "--conditional-creates",
            help="Create new resources by conditional writes (the server checks for twins written by another "
            "system since the look-up) instead of by PUT to an id derived from the business key: slower.",
        ),
    ] = False,
    write_strategy: Annotated[
        str | None,
        typer.Option(
            "--write-strategy", help="transaction, batch or individual (default: from the CapabilityStatement)."
        ),
    ] = None,
    types: Annotated[
        str | None, typer.Option("--types", help="Write only these resource types (comma-separated).")
    ] = None,
    skip_types: Annotated[
        str | None,
        typer.Option("--skip-types", help="Do not write these types; references to them become logical ones."),
    ] = None,
    journal: JournalPath = DEFAULT_JOURNAL,
    quarantine: Quarantine = None,
    allow_rejects: AllowRejects = False,
    mappings: Mappings = None,
    site: SiteFile = None,
    strict_validation: StrictValidation = False,
    workers: Workers = None,
) -> None:
    """Map DATA_DIR and send what changed since the last push to SERVER (planned from the server, journaled).

    The server is asked first (its CapabilityStatement), so a wrong URL, TLS or credentials fail before the trial
    is read; every attempt but a dry run is in the audit trail, also one that fails on that first request."""
    only = _type_list(types, "--types")
    skip = _type_list(skip_types, "--skip-types") or frozenset()
    strategy = _strategy(write_strategy)
    settings = settings_of(mappings, site=site, strict_validation=strict_validation, connection=connection)
    if not dry_run:  # before any I/O and before the trial is read: the fix is in the site profile
        try:
            settings.refuse_placeholders(connection.server, "push")
        except FhirLupusError as exc:
            fail(exc)
    trial = open_trial(data_dir, settings, "push")  # a needed file missing or empty: exit 2, before any request
    with trial, open_client(settings) as client, open_journal(journal, in_memory=dry_run) as book:
        _reach(client, book, settings, audited=not dry_run)
        # every chunk is read and checked here, before anything is sent; the push replays the chunks the source kept
        check_trial(trial)
        report = trial.report
        report_load(report, quarantine, verbose_findings=False)
        exit_on_rejects(report, allow_rejects)
        try:
            if dry_run:
                preview = dry_run_trial(
                    trial, client, journal=book, settings=settings, only_types=only, skip_types=skip
                )
                render_dry_run(preview, show_diffs)
                return
            with _progress() as bar:
                task = bar.add_task("pushing", total=None)

                def progress(done: int, total: int | None) -> None:
                    bar.update(task, completed=done, total=total)

                options = PushOptions(
                    chunk_size=chunk_size,
                    strategy=strategy,
                    only_types=only,
                    skip_types=skip,
                    concurrency=concurrency,
                    new_by_id=not conditional_creates,
                    progress=progress,
                    workers=workers,
                )
                source = str(data_dir.resolve())
                result = push_trial(trial, client, book, source=source, settings=settings, options=options)
        except FhirLupusError as exc:
            fail(exc)
    render_push(result)
    if not result.complete:
        stop("push-incomplete")


def _reach(client: FhirClient, journal: Journal, settings: Settings, *, audited: bool) -> None:
    """The server's FHIR version, before the trial is read (``reach_server``: a failure is audited as a failed
    push; a dry run, which is never audited, asks the same without)."""
    started = time.monotonic()
    try:
        version = reach_server(client, journal, settings=settings) if audited else server_fhir_version(client)
    except FhirLupusError as exc:
        fail(exc)
    took = (time.monotonic() - started) * 1000
    if verbose():
        console.print(
            f"{client.base_url} speaks FHIR {version} (CapabilityStatement in {took:.0f} ms)", highlight=False
        )


def _type_list(value: str | None, option: str) -> frozenset[str] | None:
    if value is None:
        return None
    names = frozenset(name.strip() for name in value.split(",") if name.strip())
    unknown = sorted(names - set(DEPENDENCY_ORDER))
    if unknown:
        fail(
            ValueError(f"{option}: unknown resource type(s) {', '.join(unknown)}; known: {', '.join(DEPENDENCY_ORDER)}")
        )
    return names


def _strategy(name: str | None) -> WriteStrategy | None:
    if name is None:
        return None
    if name not in ("transaction", "batch", "individual"):
        fail(ValueError("--write-strategy must be transaction, batch or individual"))
    return cast(WriteStrategy, name)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
