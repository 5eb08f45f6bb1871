"""``fhir-lupus spark-labs``: the lab table from NDJSON on Spark with Pathling (the ``spark`` extra)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from fhir_lupus.cli._common import Mappings, SiteFile, fail, settings_of
from fhir_lupus.cli._output import console, outcome
from fhir_lupus.errors import FhirLupusError
from fhir_lupus.model import load_study
from fhir_lupus.pull import PulledLab, UnmappedResult, unmapped_path, write_rows
from fhir_lupus.terminology import LabCatalogue

__all__ = ["spark_labs_command"]


def spark_labs_command(
    ndjson_dir: Annotated[
        Path,
        typer.Argument(help="NDJSON files: a bulk export, or `fhir-lupus map --format ndjson`.", show_default=False),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Lab rows (.csv, or .parquet with pyarrow).")],
    study: Annotated[str, typer.Option("--study", help="NCT id of a study in mappings/studies/.")] = "NCT00698191",
    master: Annotated[str, typer.Option("--master", help="Spark master: local[*], local[N], or a cluster URL.")] = (
        "local[*]"
    ),
    pathling_jar: Annotated[
        Path | None,
        typer.Option(
            "--pathling-jar",
            envvar="FHIR_LUPUS_PATHLING_JAR",
            help="Pathling library-runtime jar (default: Spark resolves the Maven package, local repository first).",
        ),
    ] = None,
    window_days: Annotated[
        int | None, typer.Option("--window-days", help="Visit window +/- days (default: the protocol's).")
    ] = None,
    lookback_days: Annotated[
        int | None,
        typer.Option(
            "--lookback-days", min=0, help="Results up to N days before day 0 (default: mappings/fhir/pull.yaml)."
        ),
    ] = None,
    mappings: Mappings = None,
    site: SiteFile = None,
) -> None:
    """The study's lab table from NDJSON files, computed on Spark: the rows `pull` would write.

    A SQL-on-FHIR view (mappings/views/lab_observation.json) flattens the Observations; pull's rules then
    normalise units and assign visit windows on the executors. Results that are not rows go to OUTPUT's
    .unmapped file. Exit 2 when the input, the mappings, or the spark extra (pip install 'fhir_lupus[spark]')
    with a Java 21 is missing.
    """
    from fhir_lupus.spark import spark_labs

    started = time.monotonic()
    try:
        pack = settings_of(mappings, site=site).pack
        definition = load_study(study, pack)
        result = spark_labs(
            ndjson_dir,
            definition,
            LabCatalogue(pack),
            master=master,
            pathling_jar=pathling_jar,
            window_days=window_days,
            lookback_days=lookback_days,
        )
        rows = write_rows(result.rows, output, PulledLab)
        unmapped = write_rows(result.unmapped, unmapped_path(output), UnmappedResult)
    except FhirLupusError as exc:
        fail(exc)
    outside = sum(1 for r in result.rows if r.window != "in-window")
    outcome.print(
        f"{len(result.rows)} lab rows of {result.subjects} subjects ({outside} outside every visit window) -> {rows}",
        highlight=False,
    )
    console.print(f"{len(result.unmapped)} results set aside -> {unmapped}", highlight=False)
    if result.skipped_subjects:
        by_status = ", ".join(f"{status} {count}" for status, count in result.skipped_subjects.items())
        console.print(f"skipped ResearchSubjects not enrolled: {by_status}", highlight=False)
    if result.others:
        console.print(f"{result.others} Observations of Patients who are no enrolled subject: not the trial's")
    console.print(
        f"{result.files} NDJSON files of Observations on Spark ({master}) in {time.monotonic() - started:.1f} s"
    )
