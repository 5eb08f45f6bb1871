"""``fhir-lupus validate`` and ``fhir-lupus map``."""

from __future__ import annotations

import gc
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fhir_lupus.cli._common import (
    AllowRejects,
    DataDir,
    Mappings,
    Quarantine,
    SiteFile,
    StrictValidation,
    Workers,
    exit_on_rejects,
    fail,
    load,
    open_trial,
    report_load,
    settings_of,
)
from fhir_lupus.cli._output import PIPE_WIDTH, console, outcome
from fhir_lupus.errors import FhirLupusError, RejectedRows
from fhir_lupus.model import LoadReport, QueryLog, TrialData, load_check_rules, track_queries, write_queries
from fhir_lupus.pipeline import refuse_rejected, stream_trial
from fhir_lupus.settings import Settings
from fhir_lupus.streaming import write_bundle, write_ndjson

__all__ = ["map_command", "validate"]


class FhirVersionOption(StrEnum):
    R4 = "R4"
    R5 = "R5"


class FormatOption(StrEnum):
    bundle = "bundle"
    ndjson = "ndjson"


def validate(
    data_dir: DataDir,
    quarantine: Quarantine = None,
    queries: Annotated[
        Path | None,
        typer.Option(
            "--queries",
            help="Write every open query (implausible values, missing data and the like) as CSV for the site; "
            "answers go in the data directory's query_responses.csv.",
        ),
    ] = None,
    allow_rejects: AllowRejects = False,
    mappings: Mappings = None,
    site: SiteFile = None,
) -> None:
    """Check a data directory: every problem with file, line and column; nothing is written but quarantine and
    the query list. Rejects exit 1; queries and notes do not change the exit code."""
    settings = settings_of(mappings, site=site)
    report = load(data_dir, settings, "validate").report
    try:
        log = track_queries(report, data_dir)
    except FhirLupusError as exc:
        fail(exc)
    closed = {query.finding for query in log.queries if query.status == "closed"}
    report.findings = [finding for finding in report.findings if finding not in closed]
    report_load(report, quarantine)
    _print_check_counts(report, log, settings)
    if queries is not None:
        try:
            written = write_queries(log, queries)
        except OSError as exc:
            fail(ValueError(f"--queries {queries}: {exc.strerror or exc}"))
        console.print(f"wrote {written} open queries to {queries}", highlight=False)
    rejected, read = sum(report.rejected.values()), sum(report.read.values())
    outcome.print(f"{data_dir}: {read} rows read, {rejected} rejected; open queries: {len(log.open)}", highlight=False)
    exit_on_rejects(report, allow_rejects)


def _print_check_counts(report: LoadReport, log: QueryLog, settings: Settings) -> None:
    """One line per check that fired: severity, and for queries how many are open, answered, reopened, closed."""
    severities = {check: d.severity for check, d in load_check_rules(settings.pack).checks.items()}
    rows: dict[str, list[int]] = {}
    for reject in report.rejects:
        if reject.check is not None:
            rows.setdefault(reject.check, [0, 0, 0, 0, 0])[0] += 1
    for finding in report.notes:
        rows.setdefault(finding.kind, [0, 0, 0, 0, 0])[0] += 1
    statuses = ("open", "answered", "reopened", "closed")
    for (check, status), count in log.counts().items():
        rows.setdefault(check, [0, 0, 0, 0, 0])[1 + statuses.index(status)] += count
    if not rows:
        return
    table = Table(title="Checks", title_justify="left")
    widest = max(len(check) for check in rows)
    for column in ("check", "severity", "rows", "open", "answered", "reopened", "closed"):
        left = column in ("check", "severity")
        table.add_column(
            column, justify="left" if left else "right", no_wrap=True, min_width=widest if column == "check" else None
        )
    for check, counts in sorted(rows.items(), key=lambda item: (severities.get(item[0], ""), item[0])):
        table.add_row(check, severities.get(check, "reject"), *(str(n) if n else "" for n in counts))
    (console if console.is_terminal else Console(stderr=True, width=PIPE_WIDTH, quiet=console.quiet)).print(table)
    if log.resolved:
        console.print(f"{len(log.resolved)} answered queries are no longer raised (corrected in the data)")


def _settle(data: TrialData) -> None:
    """A chunk just loaded: keep the collector off it while it is mapped (its rows live that long anyway).

    The loaded entities are a hundred thousand objects that every full collection walked again during the map
    (a tenth of the parent's time with workers); frozen, they are not. What an earlier chunk left (its rows are
    let go before the next loads) is collected first, so a trial of many chunks does not keep their cycles.
    """
    del data
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def map_command(
    data_dir: DataDir,
    output: Annotated[Path, typer.Option("-o", "--output", help="Bundle file (bundle) or directory (ndjson).")],
    fhir_version: Annotated[FhirVersionOption, typer.Option("--fhir-version")] = FhirVersionOption.R4,
    output_format: Annotated[FormatOption, typer.Option("--format")] = FormatOption.bundle,
    quarantine: Quarantine = None,
    allow_rejects: AllowRejects = False,
    mappings: Mappings = None,
    site: SiteFile = None,
    strict_validation: StrictValidation = False,
    workers: Workers = None,
) -> None:
    """Map a data directory to FHIR: a transaction Bundle, or one NDJSON file per resource type.

    When a row is rejected nothing is written (exit 1), unless --allow-rejects: then every value derived from a
    rejected row (a SLEDAI-2K total whose lab descriptors could not be judged) is written as preliminary."""
    trial = open_trial(data_dir, settings_of(mappings, site=site, strict_validation=strict_validation), "map")
    report = trial.report
    gc.freeze()  # what is imported and read so far lives as long as the command: no collection walks it again
    try:
        # a chunk of subjects loaded (checked, screened) at a time, mapped and written subject by subject
        # (fhir_lupus/streaming.py): memory holds one chunk's entities and one subject's resources, not the trial's;
        # the writers put the output in place only once every batch is in, and a refusal at the end leaves it as it was
        batches = refuse_rejected(
            stream_trial(
                trial, fhir_version=fhir_version.value, settings=trial.settings, workers=workers, on_chunk=_settle
            ),
            report,
            allow_rejects=allow_rejects,
        )
        if output_format is FormatOption.bundle:
            counts = write_bundle(batches, output)
        else:
            counts = write_ndjson(batches, output)
    except RejectedRows as exc:
        report_load(report, quarantine)
        fail(exc)
    except FhirLupusError as exc:
        fail(exc)
    finally:
        gc.unfreeze()  # the collector as it was, for a caller that runs the command in its own process (tests)
    console.print(f"wrote {output}")
    report_load(report, quarantine)
    listed = ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))
    outcome.print(f"mapped FHIR {fhir_version.value}: {sum(counts.values())} resources ({listed}) -> {output}")
    exit_on_rejects(report, allow_rejects)
