"""``fhir-lupus push`` and ``fhir-lupus pull``."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, cast, get_args

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fhir_lupus.bundle import DEPENDENCY_ORDER
from fhir_lupus.cli._common import (
    DEFAULT_JOURNAL,
    AllowRejects,
    DataDir,
    JournalPath,
    Mappings,
    Quarantine,
    StrictValidation,
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
from fhir_lupus.cli._output import console, listed, outcome, verbose
from fhir_lupus.client import Connection, ExportStatus, FhirClient, WriteStrategy
from fhir_lupus.errors import FhirLupusError
from fhir_lupus.journal import Journal
from fhir_lupus.model import load_study
from fhir_lupus.pull import DEFAULT_OVERLAP_SECONDS, BulkOptions, Level, PulledLab, PullResult, pull_study
from fhir_lupus.push import (
    DEFAULT_CONCURRENCY,
    DryRunReport,
    PushOptions,
    PushReport,
    dry_run_trial,
    push_trial,
    reach_server,
    server_fhir_version,
)
from fhir_lupus.settings import Settings

__all__ = ["pull", "push", "render_pull", "render_push"]


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
    strict_validation: StrictValidation = False,
) -> None:
    """Map DATA_DIR and send what changed since the last push to SERVER (planned from the server, journaled).

    The server is asked first (its CapabilityStatement), so a wrong URL, TLS or credentials fail before the trial
    is read; every attempt but a dry run is in the audit trail, also one that fails on that first request."""
    only = _type_list(types, "--types")
    skip = _type_list(skip_types, "--skip-types") or frozenset()
    strategy = _strategy(write_strategy)
    settings = settings_of(mappings, strict_validation=strict_validation, connection=connection)
    trial = open_trial(data_dir, settings, "push")  # a needed file missing or empty: exit 2, before any request
    with trial, open_client(settings) as client, open_journal(journal) as book:  # trial: its spooled chunks go
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


def render_push(result: PushReport, *, limit: int = 20) -> None:
    """The summary and what was not written (shown under -q too: the result and its errors), warnings and
    routes; ``limit`` problems, all of them under -v."""
    outcome.print(f"push {result.push_id} to {result.server}: {result.summary()}", highlight=False)
    if result.written == 0 and not result.problems:
        console.print("nothing changed since the last push: nothing was sent")
    for route in result.routes.values():
        if route.skipped or route.lookup != "search" or not route.conditional:
            console.print(f"route {route.describe()}", highlight=False)
    for warning in result.warnings:
        console.print(f"[yellow]warning[/yellow] {warning}", highlight=False)
    if result.provenance:
        console.print(f"provenance: {result.provenance}")
    for reference in result.earlier_provenance:
        console.print(f"provenance of an earlier push: {reference}")
    for missing in result.provenance_missing:
        outcome.print(f"[red]provenance missing[/red] {missing}", highlight=False)
    shown = [p for p in result.problems if p.kind != "skipped"]
    for problem in shown[: listed(limit)]:
        outcome.print(
            f"[red]{problem.kind}[/red] {problem.resource_type} {problem.business_key}: "
            f"{problem.reason}" + (f" (server ids: {', '.join(problem.server_ids)})" if problem.server_ids else ""),
            highlight=False,
        )
    if len(shown) > len(shown[: listed(limit)]):
        outcome.print(f"... and {len(shown) - limit} more not written (see the summary counts; -v lists them)")


def render_dry_run(report: DryRunReport, show: int) -> None:
    counts = report.counts
    actions = ("create", "update", "unchanged", "conflict", "held-back", "skipped")
    outcome.print("dry run (nothing written): " + ", ".join(f"{counts.get(action, 0)} {action}" for action in actions))
    for warning in report.warnings:
        console.print(f"[yellow]warning[/yellow] {warning}", highlight=False)
    for item in [i for i in report.items if i.action == "conflict"]:
        console.print(
            f"[red]conflict[/red] {item.resource_type} {item.business_key}: server ids {', '.join(item.server_ids)}",
            highlight=False,
        )
    for item in [i for i in report.items if i.action == "held-back"][:show]:
        console.print(f"held back {item.resource_type} {item.business_key}: {item.reason}", highlight=False)
    for item in [i for i in report.items if i.action == "update"][:show]:
        console.print(
            f"update {item.resource_type}/{item.server_ids[0]} ({item.business_key}): {', '.join(item.diffs)}",
            highlight=False,
        )


@connection_options
def pull(
    connection: Connection,
    output: Annotated[Path, typer.Option("-o", "--output", help="Lab rows (.csv, or .parquet with pyarrow).")],
    study: Annotated[str, typer.Option("--study", help="NCT id of a study in mappings/studies/.")] = "NCT00698191",
    since: Annotated[
        str, typer.Option("--since", help="'auto' (journal high-water mark), 'all', or an ISO date-time.")
    ] = "auto",
    window_days: Annotated[
        int | None, typer.Option("--window-days", help="Visit window +/- days (default: the protocol's).")
    ] = None,
    overlap: Annotated[
        int, typer.Option("--overlap", min=0, help="--since auto: seconds before the mark to ask again.")
    ] = DEFAULT_OVERLAP_SECONDS,
    lookback_days: Annotated[
        int | None,
        typer.Option(
            "--lookback-days",
            min=0,
            help="Fetch results up to N days before each subject's day 0 (default: mappings/fhir/pull.yaml).",
        ),
    ] = None,
    bulk: Annotated[
        bool,
        typer.Option("--bulk", help="Fetch the labs through a Bulk Data $export instead of searches (same rows)."),
    ] = False,
    bulk_level: Annotated[
        str,
        typer.Option(
            "--bulk-level",
            help="--bulk: Patient/$export of the enrolled Patients, Group/ID/$export (--group), or $export.",
        ),
    ] = "patient",
    group: Annotated[
        str | None, typer.Option("--group", help="--bulk-level group: the id of a Group (actual) of the Patients.")
    ] = None,
    downloads: Annotated[int, typer.Option("--downloads", min=1, help="--bulk: files downloaded at once.")] = 3,
    poll_max_wait: Annotated[
        float,
        typer.Option("--poll-max-wait", min=0, help="--bulk: honour Retry-After up to this many seconds a poll."),
    ] = 120.0,
    bulk_lab_filters: Annotated[
        bool,
        typer.Option(
            "--bulk-lab-filters",
            help="--bulk: ask the server to filter Observations by lab category and catalogue codes (_typeFilter).",
        ),
    ] = False,
    bulk_restart: Annotated[
        bool, typer.Option("--bulk-restart", help="--bulk: start a new export, not the unfinished one in the journal.")
    ] = False,
    journal: JournalPath = DEFAULT_JOURNAL,
    mappings: Mappings = None,
) -> None:
    """Pull the study's lab Observations into trial lab rows (units normalised, visits assigned).

    With --bulk the labs come through a Bulk Data export; an interrupted export is resumed by the next run.

    The output always holds every row pulled so far from SERVER for the study (kept in the journal, merged
    by observation id, newer version wins); results that are not rows go to OUTPUT's .unmapped file.
    """
    settings = settings_of(mappings, connection=connection)
    client = open_client(settings)
    options = None
    if bulk:
        if bulk_level not in get_args(Level):
            fail(FhirLupusError(f"--bulk-level must be one of {', '.join(get_args(Level))}, not {bulk_level!r}"))
        if bulk_level == "group" and not group:
            fail(FhirLupusError("--bulk-level group needs --group ID (a Group, actual: true, of the Patients)"))
        options = BulkOptions(
            level=cast(Level, bulk_level),
            group_id=group,
            downloads=downloads,
            max_poll_wait=poll_max_wait,
            restart=bulk_restart,
            lab_filters=bulk_lab_filters,
            on_poll=_show_poll,
        )
    with client, open_journal(journal) as book:
        try:
            definition = load_study(study, settings.pack)
            result = pull_study(
                client,
                book,
                definition,
                since=None if since == "all" else since,
                window_days=window_days,
                lookback_days=lookback_days,
                output=output,
                overlap_seconds=overlap,
                settings=settings,
                bulk=options,
            )
        except FhirLupusError as exc:
            fail(exc)
    render_pull(result)


def _show_poll(status: ExportStatus) -> None:
    asked = f" (Retry-After {status.retry_after:.0f} s)" if status.retry_after is not None else ""
    console.print(f"export in progress: {status.progress or 'no progress given'}{asked}", highlight=False)


def render_pull(result: PullResult, *, limit: int = 20) -> None:
    rows, unmapped = result.outputs or (None, None)
    outcome.print(
        f"pulled {len(result.rows)} new or changed lab rows of {result.subjects} subjects "
        f"({result.outside_windows} outside every visit window; {result.unchanged} fetched again unchanged); "
        f"{result.total_rows} rows in {rows}",
        highlight=False,
    )
    console.print(
        f"{len(result.unmapped)} results set aside in this pull ({result.total_unmapped} in all) -> {unmapped}",
        highlight=False,
    )
    if result.skipped_subjects:
        by_status = ", ".join(f"{status} {count}" for status, count in result.skipped_subjects.items())
        console.print(
            f"skipped {sum(result.skipped_subjects.values())} ResearchSubjects not enrolled ({by_status}): "
            "their labs are not pulled (mappings/fhir/lifecycle.yaml enrolled)",
            highlight=False,
        )
    for removal in result.removed[: listed(limit)]:
        console.print(
            f"[yellow]removed[/yellow] row {removal.result_id or removal.observation_id} of {removal.subject_id} "
            f"(Observation/{removal.observation_id}): {removal.reason}",
            highlight=False,
        )
    if len(result.removed) > len(result.removed[: listed(limit)]):
        console.print(f"... and {len(result.removed) - limit} more rows removed (-v lists them)")
    for note in result.fallbacks:
        console.print(f"[yellow]note[/yellow] {note}", highlight=False)
    if (export := result.bulk) is not None:
        how = "resumed from the journal" if export.resumed else "kicked off"
        console.print(
            f"bulk export ({export.level} level, {how}): {export.polls} status request(s), {export.waited:.0f} s "
            f"waited, {export.files} file(s) ({export.reused_files} from an interrupted run), {export.bytes:,} bytes; "
            f"{export.others} results of other Patients left out",
            highlight=False,
        )
    console.print(f"since: {result.since or 'the beginning'}; high-water mark now {result.high_water or '-'}")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def subject_table(rows: Iterable[PulledLab]) -> Table:
    table = Table(title="Pulled labs per subject", title_justify="left")
    for column in ("subject", "rows", "visits", "outside windows"):
        table.add_column(column, justify="left" if column == "subject" else "right")
    subjects: dict[str, list[PulledLab]] = {}
    for row in rows:
        subjects.setdefault(row.subject_id, []).append(row)
    for subject_id, items in sorted(subjects.items()):
        visits = {row.visit_code for row in items if row.visit_code}
        outside = sum(1 for row in items if row.window != "in-window")
        table.add_row(subject_id, str(len(items)), str(len(visits)), str(outside))
    return table
