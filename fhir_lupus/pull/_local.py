"""The lab table from resources at hand (a bulk export's NDJSON, ``fhir-lupus map --format ndjson``): pull's rules.

The search pass asks a server for each subject's labs; here the resources are already fetched, so the same
questions are answered over them by the pull's one ``Subjects`` (``_subjects``): which ResearchStudy is the study,
who is enrolled, each subject's day 0 (from the Procedures and Encounters at hand), which Observations are the
trial's lab results, and each result's row (status, codes, units, visit window). A result of a Patient who is
no enrolled subject is not the trial's and is only counted.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from fhir_lupus.errors import NdjsonError
from fhir_lupus.model import StudyDefinition
from fhir_lupus.pull._reverse import PulledLab, UnmappedResult
from fhir_lupus.pull._subjects import Subjects
from fhir_lupus.terminology import LabCatalogue

__all__ = ["CONTEXT_TYPES", "NdjsonError", "labs_from_ndjson", "read_ndjson", "split_ndjson"]

CONTEXT_TYPES = ("ResearchStudy", "ResearchSubject", "Encounter", "Procedure")  # who is a subject, and day 0


def labs_from_ndjson(
    paths: Iterable[Path],
    study: StudyDefinition,
    catalogue: LabCatalogue,
    *,
    window_days: int | None = None,
    lookback_days: int | None = None,
) -> tuple[Subjects, Iterator[PulledLab | UnmappedResult]]:
    """The study's subjects and a lazy stream of their lab rows from NDJSON files (any names, any order).

    The small resource types (``CONTEXT_TYPES``) are read first and kept; the Observations are then streamed,
    so a file of millions of results is never held whole. A file whose first resource is an Observation is
    taken for a file of Observations (as a bulk export and ``map --format ndjson`` write them) and read once.
    """
    context, with_observations = split_ndjson(sorted(paths))
    subjects = Subjects(study, catalogue, window_days=window_days, lookback_days=lookback_days)
    day_zero = subjects.take(context)

    def observations() -> Iterator[dict[str, Any]]:
        for path in with_observations:
            yield from read_ndjson(path)

    return subjects, subjects.labs(observations(), day_zero)


def split_ndjson(paths: Iterable[Path]) -> tuple[dict[str, list[dict[str, Any]]], list[Path]]:
    """The resources of ``CONTEXT_TYPES`` in ``paths`` (read here, kept), and the files holding Observations.

    A file whose first resource is an Observation is taken for a file of Observations and left for the caller
    to stream; any other file is read whole here, and listed too when it also holds Observations.
    """
    context: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTEXT_TYPES}
    with_observations: list[Path] = []
    for path in paths:
        resources = read_ndjson(path)
        first = next(resources, None)
        if first is None:
            continue
        if first["resourceType"] == "Observation":
            resources.close()  # the file is read again, line by line, by the caller
            with_observations.append(path)
            continue
        mixed = False
        for resource in itertools.chain([first], resources):
            kind = resource["resourceType"]
            if kind in context:
                context[kind].append(resource)
            mixed = mixed or kind == "Observation"
        if mixed:
            with_observations.append(path)
    return context, with_observations


def read_ndjson(path: Path, *, source: str | None = None) -> Generator[dict[str, Any], None, None]:
    """The resources of an NDJSON file, one a line (blank lines skipped); NdjsonError names the file and line."""
    where = source or str(path)
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                resource = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise NdjsonError(f"{where}, line {number}: not JSON ({exc})") from None
            if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
                raise NdjsonError(f"{where}, line {number}: not a FHIR resource (no resourceType)")
            yield resource
