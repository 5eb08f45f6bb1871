"""``fhir-lupus push`` and ``fhir-lupus pull``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fhir_lupus.cli._common import (
    DEFAULT_JOURNAL,
    AllowRejects,
    Basic,
    CaBundle,
    DataDir,
    JournalPath,
    Mappings,
    Quarantine,
    Server,
    SmartAlg,
    SmartClient,
    SmartKey,
    SmartTokenUrl,
    Timeout,
    Token,
    console,
    exit_on_rejects,
    fail,
    load,
    make_client,
    report_load,
)
from fhir_lupus.client import WriteStrategy
from fhir_lupus.errors import FhirLupusError
from fhir_lupus.model import load_study
from fhir_lupus.sync import (
    DryRunReport,
    Journal,
    PulledLab,
    PushReport,
    UnmappedResult,
    dry_run_trial,
    pull_study,
    push_trial,
    write_rows,
)

__all__ = ["pull", "push", "render_push"]


def push(
    data_dir: DataDir,
    server: Server,
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=1, help="Resources per transaction.")] = 500,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read the server's state and report; write nothing.")
    ] = False,
    show_diffs: Annotated[int, typer.Option("--show-diffs", help="Dry run: list at most this many updates.")] = 20,
    write_strategy: Annotated[
        str | None,
        typer.Option(
            "--write-strategy", help="transaction, batch or individual (default: from the CapabilityStatement)."
        ),
    ] = None,
    journal: JournalPath = DEFAULT_JOURNAL,
    quarantine: Quarantine = None,
    allow_rejects: AllowRejects = False,
    mappings: Mappings = None,
    token: Token = None,
    basic: Basic = None,
    smart_client_id: SmartClient = None,
    smart_key: SmartKey = None,
    smart_token_url: SmartTokenUrl = None,
    smart_alg: SmartAlg = "RS384",
    ca_bundle: CaBundle = None,
    timeout: Timeout = 60.0,
) -> None:
    """Map DATA_DIR and send what changed since the last push to SERVER (conditional writes, journal)."""
    data, report = load(data_dir, mappings)
    report_load(report, quarantine, verbose_findings=False)
    exit_on_rejects(report, allow_rejects)
    client = make_client(
        server,
        token=token,
        basic=basic,
        smart_client_id=smart_client_id,
        smart_key=smart_key,
        smart_token_url=smart_token_url,
        smart_alg=smart_alg,
        ca_bundle=ca_bundle,
        timeout=timeout,
    )
    with client:
        try:
            if dry_run:
                render_dry_run(dry_run_trial(data, report, client, mappings_dir=mappings), show_diffs)
                return
            with Journal(journal) as book, _progress() as bar:
                task = bar.add_task("pushing", total=None)
                result = push_trial(
                    data,
                    report,
                    client,
                    book,
                    source=str(data_dir.resolve()),
                    chunk_size=chunk_size,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                    mappings_dir=mappings,
                    strategy=_strategy(write_strategy),
                )
        except FhirLupusError as exc:
            fail(exc)
    render_push(result)
    if result.conflicts:
        raise typer.Exit(1)


def _strategy(name: str | None) -> WriteStrategy | None:
    if name is None:
        return None
    if name not in ("transaction", "batch", "individual"):
        fail(ValueError("--write-strategy must be transaction, batch or individual"))
    return cast(WriteStrategy, name)


def render_push(result: PushReport) -> None:
    console.print(f"push {result.push_id} to {result.server}: {result.summary()}")
    if result.written == 0 and not result.conflicts:
        console.print("nothing changed since the last push: nothing was sent")
    if result.provenance:
        console.print(f"provenance: {result.provenance}")
    for conflict in result.conflicts:
        console.print(f"[red]conflict[/red] {conflict}", highlight=False)


def render_dry_run(report: DryRunReport, show: int) -> None:
    counts = report.counts
    console.print(
        "dry run (nothing written): "
        + ", ".join(f"{counts.get(action, 0)} {action}" for action in ("create", "update", "unchanged", "conflict"))
    )
    for item in [i for i in report.items if i.action == "conflict"]:
        console.print(
            f"[red]conflict[/red] {item.resource_type} {item.business_key}: server ids {', '.join(item.server_ids)}"
        )
    for item in [i for i in report.items if i.action == "update"][:show]:
        console.print(
            f"update {item.resource_type}/{item.server_ids[0]} ({item.business_key}): {', '.join(item.diffs)}"
        )


def pull(
    server: Server,
    output: Annotated[Path, typer.Option("-o", "--output", help="Lab rows (.csv, or .parquet with pyarrow).")],
    study: Annotated[str, typer.Option("--study", help="NCT id of a study in mappings/studies/.")] = "NCT00698191",
    since: Annotated[
        str, typer.Option("--since", help="'auto' (journal high-water mark), 'all', or an ISO date-time.")
    ] = "auto",
    window_days: Annotated[
        int | None, typer.Option("--window-days", help="Visit window +/- days (default: the protocol's).")
    ] = None,
    journal: JournalPath = DEFAULT_JOURNAL,
    mappings: Mappings = None,
    token: Token = None,
    basic: Basic = None,
    smart_client_id: SmartClient = None,
    smart_key: SmartKey = None,
    smart_token_url: SmartTokenUrl = None,
    smart_alg: SmartAlg = "RS384",
    ca_bundle: CaBundle = None,
    timeout: Timeout = 60.0,
) -> None:
    """Pull the study's lab Observations into trial lab rows (units normalised, visits assigned)."""
    client = make_client(
        server,
        token=token,
        basic=basic,
        smart_client_id=smart_client_id,
        smart_key=smart_key,
        smart_token_url=smart_token_url,
        smart_alg=smart_alg,
        ca_bundle=ca_bundle,
        timeout=timeout,
    )
    with client, Journal(journal) as book:
        try:
            definition = load_study(study, mappings)
            result = pull_study(
                client,
                book,
                definition,
                since=None if since == "all" else since,
                window_days=window_days,
                mappings_dir=mappings,
            )
            rows = write_rows(result.rows, output, PulledLab)
            unmapped = write_rows(
                result.unmapped, output.with_name(output.stem + ".unmapped" + output.suffix), UnmappedResult
            )
        except FhirLupusError as exc:
            fail(exc)
    console.print(
        f"pulled {len(result.rows)} lab rows of {result.subjects} subjects into {rows}"
        f" ({result.outside_windows} outside every visit window); "
        f"{len(result.unmapped)} not in the catalogue -> {unmapped}"
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


def subject_table(rows: list[PulledLab]) -> Table:
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
