"""``fhir-lupus validate`` and ``fhir-lupus map``."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from fhir_lupus.bundle import dumps, transaction_bundle
from fhir_lupus.cli._common import (
    AllowRejects,
    DataDir,
    Mappings,
    Quarantine,
    console,
    exit_on_rejects,
    fail,
    load,
    report_load,
)
from fhir_lupus.errors import FhirLupusError
from fhir_lupus.pipeline import MapResult, map_trial

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
    allow_rejects: AllowRejects = False,
    mappings: Mappings = None,
) -> None:
    """Check a data directory: every problem with file, line and column; nothing is written but quarantine."""
    _data, report = load(data_dir, mappings)
    report_load(report, quarantine)
    exit_on_rejects(report, allow_rejects)


def map_command(
    data_dir: DataDir,
    output: Annotated[Path, typer.Option("-o", "--output", help="Bundle file (bundle) or directory (ndjson).")],
    fhir_version: Annotated[FhirVersionOption, typer.Option("--fhir-version")] = FhirVersionOption.R4,
    output_format: Annotated[FormatOption, typer.Option("--format")] = FormatOption.bundle,
    quarantine: Quarantine = None,
    allow_rejects: AllowRejects = False,
    mappings: Mappings = None,
) -> None:
    """Map a data directory to FHIR: a transaction Bundle, or one NDJSON file per resource type."""
    data, report = load(data_dir, mappings)
    try:
        result = map_trial(data, report, fhir_version=fhir_version.value, mappings_dir=mappings)
        written = _write(result, output, output_format)
    except FhirLupusError as exc:
        fail(exc)
    console.print(f"wrote {written}")
    report_load(report, quarantine)
    counts = ", ".join(f"{name} {count}" for name, count in sorted(result.counts.items()))
    console.print(f"mapped FHIR {result.fhir_version}: {sum(result.counts.values())} resources ({counts})")
    exit_on_rejects(report, allow_rejects)


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
