"""``fhir-lupus validate`` and ``fhir-lupus map``."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from fhir_lupus.cli._common import (
    AllowRejects,
    DataDir,
    Mappings,
    Quarantine,
    StrictValidation,
    console,
    exit_on_rejects,
    fail,
    load,
    report_load,
)
from fhir_lupus.errors import FhirLupusError
from fhir_lupus.model import LoadReport, TrialData
from fhir_lupus.pipeline import stream_trial
from fhir_lupus.screening import screen_trial, screening_findings
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
    strict_validation: StrictValidation = False,
) -> None:
    """Map a data directory to FHIR: a transaction Bundle, or one NDJSON file per resource type."""
    report = LoadReport()

    def screened(data: TrialData) -> None:  # as `load` does: enrolled subjects who did not screen eligible
        report.findings.extend(screening_findings(data, screen_trial(data, mappings)))

    try:
        # a chunk of subjects loaded at a time, mapped and written subject by subject (fhir_lupus/streaming.py):
        # memory holds one chunk's entities and one subject's resources, not the trial's
        batches = stream_trial(
            data_dir,
            report,
            fhir_version=fhir_version.value,
            mappings_dir=mappings,
            validation="strict" if strict_validation else "fast",
            on_chunk=screened,
        )
        if output_format is FormatOption.bundle:
            counts = write_bundle(batches, output)
        else:
            counts = write_ndjson(batches, output)
    except FhirLupusError as exc:
        fail(exc)
    console.print(f"wrote {output}")
    report_load(report, quarantine)
    listed = ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))
    console.print(f"mapped FHIR {fhir_version.value}: {sum(counts.values())} resources ({listed})")
    exit_on_rejects(report, allow_rejects)
