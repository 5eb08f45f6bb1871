"""``fhir-lupus registry package`` and ``fhir-lupus registry submit``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fhir_lupus.cli._common import (
    DEFAULT_JOURNAL,
    AllowRejects,
    DataDir,
    JournalPath,
    Mappings,
    Quarantine,
    SiteFile,
    StrictValidation,
    exit_on_rejects,
    fail,
    open_journal,
    open_trial,
    report_load,
    settings_of,
)
from fhir_lupus.cli._connection import connection_options, open_client
from fhir_lupus.cli._exit import stop
from fhir_lupus.cli._mapping import FhirVersionOption
from fhir_lupus.cli._output import console, listed, outcome
from fhir_lupus.cli._sync_report import render_push
from fhir_lupus.client import Connection
from fhir_lupus.errors import FhirLupusError, RejectedRows
from fhir_lupus.registry import (
    KEY_ENV,
    load_key,
    package_trial,
    read_package,
    refuse_placeholder_package,
    submit_package,
)

__all__ = ["registry_app"]

registry_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="De-identified registry packages of the enrolled subjects (mappings/registry/), and their submission.",
)


@registry_app.command("package")
def package_command(
    data_dir: DataDir,
    output: Annotated[Path, typer.Option("-o", "--output", help="Package directory (NDJSON, manifest, validation).")],
    key_file: Annotated[
        Path | None,
        typer.Option("--key-file", help=f"The registry key (mode 600). Default: the environment variable {KEY_ENV}."),
    ] = None,
    link_table: Annotated[
        Path | None,
        typer.Option("--link-table", help="Pseudonym <-> subject id table (mode 600). Default: DIR.link.csv."),
    ] = None,
    fhir_version: Annotated[FhirVersionOption, typer.Option("--fhir-version")] = FhirVersionOption.R4,
    quarantine: Quarantine = None,
    allow_rejects: AllowRejects = False,
    mappings: Mappings = None,
    site: SiteFile = None,
    strict_validation: StrictValidation = False,
) -> None:
    """Map DATA_DIR, keep the enrolled subjects' data, de-identify it with the key and write a package."""
    try:
        key = load_key(key_file)
    except FhirLupusError as exc:
        fail(exc)
    trial = open_trial(
        data_dir, settings_of(mappings, site=site, strict_validation=strict_validation), "registry-package"
    )
    report = trial.report
    try:  # a chunk of subjects loaded (checked, screened) at a time, packaged subject by subject: memory stays flat
        result = package_trial(
            trial,
            output,
            key,
            link_table=link_table,
            fhir_version=fhir_version.value,
            settings=trial.settings,
            allow_rejects=allow_rejects,
        )
    except RejectedRows as exc:  # nothing was written
        report_load(report, quarantine, verbose_findings=False)
        fail(exc)
    except FhirLupusError as exc:
        fail(exc)
    report_load(report, quarantine, verbose_findings=False)
    counts = ", ".join(f"{name} {count}" for name, count in sorted(result.counts.items()))
    outcome.print(
        f"wrote {output}: {result.manifest['resources']} resources of {result.manifest['subjects']} subjects "
        f"({counts}); key id {key.key_id}",
        highlight=False,
    )
    if result.excluded:
        console.print(f"left out {result.excluded} resources of subjects who are not enrolled")
    console.print(f"link table (keep it at the site): {result.link_table}")
    for problem in result.problems[: listed(20)]:
        outcome.print(f"[red]invalid[/red] {problem['resource']}: {problem['problem']}", highlight=False)
    exit_on_rejects(report, allow_rejects)
    if result.problems:
        outcome.print(f"[red]{len(result.problems)} resource(s) do not validate[/red] (validation.json)")
        stop("package-invalid")


@registry_app.command("submit")
@connection_options
def submit_command(
    package_dir: Annotated[Path, typer.Argument(help="A package made by `registry package`.", show_default=False)],
    connection: Connection,
    chunk_size: Annotated[
        int, typer.Option("--chunk-size", min=1, help="Most resources per transaction; less if the server asks.")
    ] = 500,
    journal: JournalPath = DEFAULT_JOURNAL,
    audit_log: Annotated[
        Path | None, typer.Option("--audit-log", help="Audit log (default: beside the journal).")
    ] = None,
    mappings: Mappings = None,
    site: SiteFile = None,
) -> None:
    """Check PACKAGE_DIR against its manifest and push it to SERVER (journaled: a second submit writes nothing)."""
    settings = settings_of(mappings, site=site, connection=connection)
    try:  # the package is checked, and a placeholder refusal made, before any file is opened or request sent
        package = read_package(package_dir)
        refuse_placeholder_package(package, connection.server)
    except FhirLupusError as exc:
        fail(exc)
    with open_client(settings) as client, open_journal(journal) as book:
        try:
            result = submit_package(
                package, client, book, chunk_size=chunk_size, settings=settings, audit_log=audit_log
            )
        except FhirLupusError as exc:
            fail(exc)
    render_push(result.report)
    console.print(f"audit: {result.audit}")
    if not result.report.complete:
        stop("push-incomplete")
