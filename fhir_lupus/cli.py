"""The ``fhir-lupus`` command: parses arguments, calls the library, renders results, sets the exit code.

Exit codes: 0 success; 1 rows were rejected (unless --allow-rejects); 2 usage or configuration error.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from fhir_lupus.bundle import dumps, transaction_bundle
from fhir_lupus.errors import FhirLupusError
from fhir_lupus.model import LoadReport, TrialData, load_trial, write_quarantine
from fhir_lupus.pipeline import MapResult, map_trial

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="FHIR adapter for the NCT00698191 MSC trial."
)
console = Console(stderr=True, soft_wrap=True)  # messages stay one grep-able line each


class FhirVersionOption(StrEnum):
    R4 = "R4"
    R5 = "R5"


class FormatOption(StrEnum):
    bundle = "bundle"
    ndjson = "ndjson"


DataDir = Annotated[
    Path, typer.Argument(help="Trial data directory (docs/csv-layout.md).", show_default=False)
]
Quarantine = Annotated[
    Path | None,
    typer.Option("--quarantine", help="Write each rejected row, with its reason, under this directory."),
]
AllowRejects = Annotated[bool, typer.Option("--allow-rejects", help="Exit 0 even when rows were rejected.")]
Mappings = Annotated[
    Path | None, typer.Option("--mappings", help="Use this mappings/ directory instead of the bundled one.")
]


@app.command()
def validate(
    data_dir: DataDir,
    quarantine: Quarantine = None,
    allow_rejects: AllowRejects = False,
    mappings: Mappings = None,
) -> None:
    """Check a data directory: every problem with file, line and column; nothing is written but quarantine."""
    _data, report = _load(data_dir, mappings)
    _finish(report, None, quarantine, allow_rejects)


@app.command("map")
def map_command(
    data_dir: DataDir,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Bundle file (bundle) or directory (ndjson).")
    ],
    fhir_version: Annotated[FhirVersionOption, typer.Option("--fhir-version")] = FhirVersionOption.R4,
    output_format: Annotated[FormatOption, typer.Option("--format")] = FormatOption.bundle,
    quarantine: Quarantine = None,
    allow_rejects: AllowRejects = False,
    mappings: Mappings = None,
) -> None:
    """Map a data directory to FHIR: a transaction Bundle, or one NDJSON file per resource type."""
    data, report = _load(data_dir, mappings)
    try:
        result = map_trial(data, report, fhir_version=fhir_version.value, mappings_dir=mappings)
        written = _write(result, output, output_format)
    except FhirLupusError as exc:
        _fail(exc)
    console.print(f"wrote {written}")
    _finish(report, result, quarantine, allow_rejects)


def _load(data_dir: Path, mappings: Path | None) -> tuple[TrialData, LoadReport]:
    try:
        return load_trial(data_dir, mappings_dir=mappings)
    except FhirLupusError as exc:
        _fail(exc)


def _write(result: MapResult, output: Path, output_format: FormatOption) -> Path:
    if output_format is FormatOption.bundle:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(dumps(transaction_bundle(result.resources)), encoding="utf-8")
        return output
    output.mkdir(parents=True, exist_ok=True)
    by_type: dict[str, list[str]] = {}
    for resource in result.resources:
        by_type.setdefault(resource["resourceType"], []).append(dumps(resource, pretty=False))
    for resource_type, lines in by_type.items():
        (output / f"{resource_type}.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return output


def _finish(
    report: LoadReport, result: MapResult | None, quarantine: Path | None, allow_rejects: bool
) -> None:
    table = Table(title="Rows", title_justify="left")
    for column in ("file", "read", "accepted", "rejected"):
        table.add_column(column, justify="left" if column == "file" else "right")
    for file in sorted(report.read):
        table.add_row(file, str(report.read[file]), str(report.accepted(file)), str(report.rejected[file]))
    table.add_row(
        "total",
        str(sum(report.read.values())),
        str(sum(report.accepted(f) for f in report.read)),
        str(sum(report.rejected.values())),
        style="bold",
    )
    console.print(table)
    if result is not None:
        counts = ", ".join(f"{name} {count}" for name, count in sorted(result.counts.items()))
        console.print(
            f"mapped FHIR {result.fhir_version}: {sum(result.counts.values())} resources ({counts})"
        )
    for finding in report.findings:
        console.print(f"[yellow]note[/yellow] {finding}", highlight=False)
    for reject in report.rejects:
        console.print(f"[red]rejected[/red] {reject}", highlight=False)
    if quarantine is not None and report.rejects:
        for path in write_quarantine(report.rejects, quarantine):
            console.print(f"quarantined rows in {path}")
    if report.rejects and not allow_rejects:
        console.print(
            f"[red]{sum(report.rejected.values())} row(s) rejected[/red] (use --allow-rejects to exit 0)"
        )
        raise typer.Exit(1)


def _fail(exc: Exception) -> NoReturn:
    console.print(f"[red]error:[/red] {exc}", highlight=False)
    raise typer.Exit(2)


def main() -> None:
    app()
