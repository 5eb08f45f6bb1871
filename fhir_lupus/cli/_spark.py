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
from fhir_lupus.spark import BUCKETS
from fhir_lupus.terminology import LabCatalogue

__all__ = ["spark_labs_command"]


def spark_labs_command(
    ndjson_dir: Annotated[
        Path,
        typer.Argument(help="NDJSON files: a bulk export, or `fhir-lupus map --format ndjson`.", show_default=False),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "-o",
            "--output",
            help="Lab rows: a Parquet directory partitioned by subject bucket, or one sorted .csv (small outputs).",
        ),
    ],
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
    buckets: Annotated[
        int, typer.Option("--buckets", min=1, help="Subject buckets of a Parquet output (one directory each).")
    ] = BUCKETS,
    mappings: Mappings = None,
    site: SiteFile = None,
) -> None:
    """The study's lab table from NDJSON files, computed on Spark: the rows `pull` would write.

    A SQL-on-FHIR view (mappings/views/lab_observation.json) flattens the Observations; pull's rules then
    normalise units and assign visit windows on the executors; Spark writes the outputs (no row passes through
    this process). Results that are not rows go to OUTPUT's .unmapped output, lines no rule can read (not
    JSON, not a resource) to its .rejects output with file, line and reason. Exit 2 when the input, the
    mappings, or the spark extra (pip install 'fhir_lupus[spark]') with a Java 21 is missing.
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
            output,
            master=master,
            pathling_jar=pathling_jar,
            window_days=window_days,
            lookback_days=lookback_days,
            buckets=buckets,
        )
    except FhirLupusError as exc:
        fail(exc)
    outcome.print(
        f"{result.rows} lab rows of {result.subjects} subjects ({result.outside} outside every visit window) "
        f"-> {result.output}",
        highlight=False,
    )
    console.print(f"{result.unmapped} results set aside -> {result.unmapped_output}", highlight=False)
    if result.rejected:
        console.print(f"{result.rejected} lines no rule can read -> {result.rejects_output}", highlight=False)
    if result.skipped_subjects:
        by_status = ", ".join(f"{status} {count}" for status, count in result.skipped_subjects.items())
        console.print(f"skipped ResearchSubjects not enrolled: {by_status}", highlight=False)
    if result.others:
        console.print(f"{result.others} Observations of Patients who are no enrolled subject: not the trial's")
    console.print(
        f"{result.files} NDJSON files of Observations on Spark ({master}) in {time.monotonic() - started:.1f} s"
    )
