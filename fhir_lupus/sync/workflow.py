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
from fhir_lupus.sync.pull import PullResult, mark_minus, pull_labs
from fhir_lupus.sync.push import Progress, PushReport, push_resources
from fhir_lupus.terminology import LabCatalogue, load_pack
from fhir_lupus.validation import FhirVersion

__all__ = ["DEFAULT_OVERLAP_SECONDS", "dry_run_trial", "pull_study", "push_trial", "server_fhir_version"]

# An incremental pull asks again for what changed in the last five minutes before the mark: a server may
# commit a write after a later one became visible (HAPI stamps lastUpdated when a transaction starts).
DEFAULT_OVERLAP_SECONDS = 300


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
    only_types: frozenset[str] | None = None,
    skip_types: frozenset[str] = frozenset(),
) -> PushReport:
    """Map the trial for the server's FHIR version and push it (``push_resources``)."""
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
        only_types=only_types,
        skip_types=skip_types,
        mappings_dir=mappings_dir,
    )


def dry_run_trial(
    data: TrialData,
    report: LoadReport,
    client: FhirClient,
    *,
    journal: Journal | None = None,
    mappings_dir: Path | None = None,
    only_types: frozenset[str] | None = None,
    skip_types: frozenset[str] = frozenset(),
) -> DryRunReport:
    """What ``push_trial`` would do, from the server's current state; writes nothing."""
    result = map_trial(data, report, fhir_version=server_fhir_version(client), mappings_dir=mappings_dir)
    return dry_run(
        result.resources,
        client,
        journal=journal,
        only_types=only_types,
        skip_types=skip_types,
        mappings_dir=mappings_dir,
    )


def pull_study(
    client: FhirClient,
    journal: Journal,
    study: StudyDefinition,
    *,
    since: str | Literal["auto"] | None = "auto",
    window_days: int | None = None,
    lookback_days: int | None = None,
    output: Path | None = None,
    overlap_seconds: int = DEFAULT_OVERLAP_SECONDS,
    mappings_dir: Path | None = None,
) -> PullResult:
    """Pull the study's labs into the journal's store and ``output``; the mark moves only after both.

    ``since``: ``"auto"`` continues from the journal's high-water mark (minus ``overlap_seconds``, so a late
    commit is not missed; what is fetched twice is de-duplicated) and keeps every row pulled before; None
    pulls everything and makes the output mirror the server; an ISO date-time pulls what changed since then.
    """
    mark = journal.high_water(client.base_url, study.nct_id)
    if since == "auto":
        search_since = mark_minus(mark, overlap_seconds) if mark else None
        replace_all = mark is None
    else:
        search_since, replace_all = since, since is None
    return pull_labs(
        client,
        journal,
        study,
        LabCatalogue(load_pack(mappings_dir)),
        since=search_since,
        replace_all=replace_all,
        window_days=window_days,
        lookback_days=lookback_days,
        output=output,
        mark_from=mark,
        mappings_dir=mappings_dir,
    )
