"""Trial-level push, dry run and pull: the steps the CLI, the demo and the tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fhir_lupus.client import FhirClient, UnsupportedInteraction, WriteStrategy
from fhir_lupus.model import LoadReport, TrialData
from fhir_lupus.model.study import StudyDefinition
from fhir_lupus.pipeline import map_trial
from fhir_lupus.sync.dryrun import DryRunReport, dry_run
from fhir_lupus.sync.journal import Journal
from fhir_lupus.sync.pull import PullResult, pull_labs
from fhir_lupus.sync.push import Progress, PushReport, push_resources
from fhir_lupus.terminology import LabCatalogue, load_pack
from fhir_lupus.validation import FhirVersion

__all__ = ["dry_run_trial", "pull_study", "push_trial", "server_fhir_version"]


def server_fhir_version(client: FhirClient) -> FhirVersion:
    """R4 or R5, from the server's CapabilityStatement.fhirVersion."""
    version = client.capabilities().fhir_version
    if version.startswith("4.0"):
        return "R4"
    if version.startswith("5."):
        return "R5"
    raise UnsupportedInteraction(f"server speaks FHIR {version or '(unstated)'}; fhir_lupus writes R4 (4.0.x) or R5")


def push_trial(
    data: TrialData,
    report: LoadReport,
    client: FhirClient,
    journal: Journal,
    *,
    source: str,
    chunk_size: int = 500,
    progress: Progress | None = None,
    mappings_dir: Path | None = None,
    strategy: WriteStrategy | None = None,
) -> PushReport:
    result = map_trial(data, report, fhir_version=server_fhir_version(client), mappings_dir=mappings_dir)
    return push_resources(
        result.resources,
        client,
        journal,
        source=source,
        mapping_version=load_pack(mappings_dir).project.mapping_version,
        chunk_size=chunk_size,
        progress=progress,
        strategy=strategy,
    )


def dry_run_trial(
    data: TrialData, report: LoadReport, client: FhirClient, *, mappings_dir: Path | None = None
) -> DryRunReport:
    result = map_trial(data, report, fhir_version=server_fhir_version(client), mappings_dir=mappings_dir)
    return dry_run(result.resources, client)


def pull_study(
    client: FhirClient,
    journal: Journal,
    study: StudyDefinition,
    *,
    since: str | Literal["auto"] | None = "auto",
    window_days: int | None = None,
    mappings_dir: Path | None = None,
) -> PullResult:
    """Pull the study's labs; ``since="auto"`` continues from the journal's high-water mark and moves it."""
    server = client.base_url
    start = journal.high_water(server, study.nct_id) if since == "auto" else since
    result = pull_labs(client, study, LabCatalogue(load_pack(mappings_dir)), since=start, window_days=window_days)
    if result.high_water and result.high_water != start:
        journal.set_high_water(server, study.nct_id, result.high_water)
    return result
