"""Writers that take the map step one subject at a time (``pipeline.iter_mapped``) and never hold the trial.

Each batch is serialised as it arrives into spool files, one per (resource type, stage) for NDJSON and one per
(type, reference depth, stage) for a Bundle, in a private temporary directory beside the output
(fhir_lupus/_scratch.py: mode 700, removed however the run ends); when the last batch is
written, the spools are joined in that key order. That order is the one the whole-list writers always had
(``map_trial``'s stage order, and ``transaction_bundle``'s type-then-depth order), so the output has the same
bytes as before whenever each CSV lists its rows subject by subject in subjects.csv order (the example, and any
export sorted by subject); otherwise the same resources come subject by subject within a stage. Memory holds
one batch and the file handles; disk holds the output twice until the spools are joined. Nothing is left at
the output path when mapping fails half-way: the spools are removed and the old output stays as it was.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import orjson

from fhir_lupus._scratch import discard, open_private, publish, scratch_dir
from fhir_lupus.bundle import (
    DEPENDENCY_ORDER,
    MatchingRules,
    ReferenceTarget,
    dumps,
    entry,
    load_matching_rules,
    local_ref,
    reference_depths,
    search_parameter,
)
from fhir_lupus.errors import ResourceInvalidError
from fhir_lupus.pipeline import MappedBatch

__all__ = ["write_bundle", "write_ndjson"]


class _Spool:
    """Append-only files keyed by a sortable tuple, opened once each, in a hidden directory next to the output."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._files: dict[tuple[Any, ...], IO[str]] = {}
        self._paths: dict[tuple[Any, ...], Path] = {}

    def write(self, key: tuple[Any, ...], text: str) -> None:
        handle = self._files.get(key)
        if handle is None:
            path = self.directory / f"{len(self._paths)}.part"
            handle = self._files[key] = open_private(path, encoding="utf-8", newline="")
            self._paths[key] = path
        handle.write(text)

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()

    def parts(self) -> list[tuple[tuple[Any, ...], Path]]:
        """The spool files in key order (close first)."""
        return sorted(self._paths.items())


@contextmanager
def _spooled(beside: Path) -> Iterator[_Spool]:
    directory = scratch_dir(beside, "spool")  # fhir_lupus/_scratch.py: never left behind, even by a kill
    spool = _Spool(directory)
    try:
        yield spool
    finally:
        spool.close()
        discard(directory)


def write_ndjson(batches: Iterable[MappedBatch], directory: Path) -> Counter[str]:
    """One ``<Type>.ndjson`` per resource type in ``directory``, one resource a line; returns the counts.

    A type's file holds its resources in stage order (a lab before a SLEDAI-2K score before a Treg value),
    subject by subject within a stage. Files of types not in the trial are left alone, as before.
    """
    counts: Counter[str] = Counter()
    with _spooled(directory) as spool:
        for batch in batches:
            for item in batch.items:
                resource_type = item.resource["resourceType"]
                spool.write((resource_type, item.stage), dumps(item.resource, pretty=False) + "\n")
                counts[resource_type] += 1
        spool.close()
        by_type: dict[str, list[Path]] = {}
        for (resource_type, _stage), path in spool.parts():
            by_type.setdefault(resource_type, []).append(path)
        for resource_type, paths in by_type.items():
            first, *rest = paths
            with first.open("ab") as joined:
                for path in rest:
                    with path.open("rb") as part:
                        shutil.copyfileobj(part, joined)
            publish(first, directory / f"{resource_type}.ndjson")
    return counts


def write_bundle(
    batches: Iterable[MappedBatch],
    path: Path,
    *,
    bundle_type: str = "transaction",
    rules: MatchingRules | None = None,
) -> Counter[str]:
    """A transaction Bundle of conditional entries, as ``transaction_bundle`` makes it, written batch by batch.

    Entries are in dependency order: type, then reference depth, then stage. Every reference must resolve to
    the study-level resources or to the subject's own batch (ResourceInvalidError otherwise; ids are UUIDv5 of
    business keys the loader keeps unique, so one batch cannot repeat another's). Returns the counts per type.
    """
    rules = rules or load_matching_rules()
    counts: Counter[str] = Counter()
    study_depths: dict[str, int] = {}
    study_urls: dict[str, ReferenceTarget] = {}
    with _spooled(path.parent) as spool:
        for batch in batches:
            resources = batch.resources
            depths = reference_depths(resources, study_depths)
            urls: dict[str, ReferenceTarget] = {}
            for resource in resources:
                ref = local_ref(resource)
                if ref in urls or ref in study_urls:
                    raise ResourceInvalidError(f"{ref} appears twice in the bundle")
                urls[ref] = f"urn:uuid:{resource['id']}"
            targets = {**study_urls, **urls}
            for item in batch.items:
                resource = item.resource
                resource_type = resource["resourceType"]
                written = entry(
                    resource,
                    write="conditional",
                    targets=targets,
                    parameter=search_parameter(resource_type, rules),
                    create_only=resource_type in rules.create_only,
                )
                key = (DEPENDENCY_ORDER.index(resource_type), depths[local_ref(resource)], item.stage)
                spool.write(key, ",\n" + _indented(written))
                counts[resource_type] += 1
            if batch.subject_id is None:  # the study level: what every later batch may refer to
                study_depths.update(depths)
                study_urls.update(urls)
        spool.close()
        staging = spool.directory / "bundle.json"
        with open_private(staging, encoding="utf-8", newline="") as out:
            head = dumps({"resourceType": "Bundle", "type": bundle_type, "entry": []})
            parts = spool.parts()
            if not parts:
                out.write(head)
            else:
                out.write(head.replace('"entry": []\n}\n', '"entry": [\n'))
                separator_left = True  # each entry starts with ",\n"; the first one must not
                for _key, part_path in parts:
                    with part_path.open("r", encoding="utf-8", newline="") as part:
                        if separator_left:
                            part.read(2)
                            separator_left = False
                        shutil.copyfileobj(part, out)
                out.write("\n  ]\n}\n")
        publish(staging, path)
    return counts


def _indented(document: Any) -> str:
    """``document`` as ``dumps`` prints it two levels down (an item of a top-level list): 4 spaces a line."""
    text = orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()  # as bundle.dumps
    return "    " + text.replace("\n", "\n    ")
