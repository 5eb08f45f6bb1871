"""``fhir-lupus pull``: apart from push (cli/_sync.py), so that a pull imports neither push nor the mappers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast, get_args

import typer

from fhir_lupus.cli._common import DEFAULT_JOURNAL, JournalPath, Mappings, SiteFile, fail, open_journal, settings_of
from fhir_lupus.cli._connection import connection_options, open_client
from fhir_lupus.cli._output import console
from fhir_lupus.cli._sync_report import render_pull
from fhir_lupus.client import Connection, ExportStatus
from fhir_lupus.errors import FhirLupusError
from fhir_lupus.model import load_study
from fhir_lupus.pull import DEFAULT_OVERLAP_SECONDS, BulkOptions, Level, pull_study

__all__ = ["pull"]


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
    site: SiteFile = None,
) -> None:
    """Pull the study's lab Observations into trial lab rows (units normalised, visits assigned).

    With --bulk the labs come through a Bulk Data export; an interrupted export is resumed by the next run.

    The output always holds every row pulled so far from SERVER for the study (kept in the journal, merged
    by observation id, newer version wins); results that are not rows go to OUTPUT's .unmapped file.
    """
    settings = settings_of(mappings, site=site, connection=connection)
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
