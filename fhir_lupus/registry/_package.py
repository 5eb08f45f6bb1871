"""Registry packages: build one from a trial (map, keep enrolled subjects, de-identify, validate, write); ``_submit``
sends one.

A package directory holds one NDJSON file per resource type (the layout a Bulk Data ``$import`` takes),
``validation.json`` (every resource validated, the problems listed) and ``manifest.json`` (counts, sha256 of
every file, FHIR version, mapping version, key id, when it was made). The link table (pseudonym <-> subject id)
is written beside it, never inside, with mode 600.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fhir_lupus._resource import Resource
from fhir_lupus._scratch import discard, open_private, publish, scratch_dir, write_csv
from fhir_lupus.bundle import dumps
from fhir_lupus.errors import ResourceInvalidError
from fhir_lupus.model import TrialData, load_lifecycle_rules
from fhir_lupus.pipeline import refuse_rejected, stream_trial
from fhir_lupus.registry._deidentify import LinkRow, deidentify, keyed_id
from fhir_lupus.registry._key import RegistryConfigError, RegistryKey
from fhir_lupus.registry._rules import RULES_FILE, load_rules
from fhir_lupus.registry._runs import SortedRuns
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.validation import FhirVersion, validate_resource

__all__ = [
    "FHIR_RELEASES",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "VALIDATION",
    "PackageResult",
    "default_link_table",
    "package_trial",
    "sha256_of",
    "write_package",
    "write_package_batches",
]

MANIFEST = "manifest.json"
VALIDATION = "validation.json"
FORMAT = "fhir-lupus registry package"
FORMAT_VERSION = 1
FHIR_RELEASES: dict[FhirVersion, str] = {"R4": "4.0.1", "R5": "5.0.0"}
LINK_COLUMNS = ("pseudonym", "subject_id", "date_shift_days")
RUN_SIZE = 50_000  # resources a sorted run holds before it goes to disk (about 100 MB of lines at most)


@dataclass
class PackageResult:
    directory: Path
    link_table: Path
    manifest: dict[str, Any]
    problems: list[dict[str, str]]
    excluded: int

    @property
    def counts(self) -> dict[str, int]:
        return {entry["resource_type"]: entry["count"] for entry in self.manifest["files"]}


def default_link_table(out_dir: Path) -> Path:
    """``DIR.link.csv`` beside the package directory ``DIR``."""
    return out_dir.parent / f"{out_dir.name}.link.csv"


def package_trial(
    trial: TrialSource,
    out_dir: Path,
    key: RegistryKey,
    *,
    link_table: Path | None = None,
    fhir_version: FhirVersion = "R4",
    settings: Settings | None = None,
    made_at: datetime | None = None,
    allow_rejects: bool = False,
) -> PackageResult:
    """Map the trial, keep the enrolled subjects' data (mappings/fhir/lifecycle.yaml), de-identify and write.

    Loaded, mapped and packaged a chunk of subjects at a time (``stream_trial``), in flat memory: the same package,
    byte for byte, whatever the chunks (the files are sorted the same way). ``settings``: the mapping pack and the
    validation path ("fast" or "strict", fhir_lupus.validation), for the map and for the de-identified resources
    (default: ``Settings.default()``). When the trial's report holds a
    refused row, RejectedRows is raised after the last batch and nothing is written, unless ``allow_rejects``
    (values derived from refused rows are then preliminary).
    """
    settings = settings or Settings.default()
    statuses = load_lifecycle_rules(settings.pack).enrolled
    enrolled: set[str] = set()
    study: list[str] = []

    def chunk_loaded(data: TrialData) -> None:  # before the chunk's subjects are mapped and de-identified
        enrolled.update(row.record.subject_id for row in data.subjects if row.record.status in statuses)
        study[:] = [data.study.nct_id]

    batches = refuse_rejected(
        stream_trial(trial, fhir_version=fhir_version, settings=settings, on_chunk=chunk_loaded),
        trial.report,
        allow_rejects=allow_rejects,
    )
    first = next(batches)  # the study level: loads the first chunk, so the study id is known
    return write_package_batches(
        itertools.chain([first.resources], (batch.resources for batch in batches)),
        out_dir,
        key,
        study=study[0],
        enrolled=enrolled,
        link_table=link_table,
        fhir_version=fhir_version,
        settings=settings,
        made_at=made_at,
    )


def write_package(
    resources: list[Resource],
    out_dir: Path,
    key: RegistryKey,
    *,
    study: str,
    enrolled: Collection[str] | None,
    link_table: Path | None = None,
    fhir_version: FhirVersion = "R4",
    settings: Settings | None = None,
    made_at: datetime | None = None,
) -> PackageResult:
    """De-identify mapped resources, validate every one and write the package and the link table; ``settings``:
    the mapping pack and the validation path (default: ``Settings.default()``)."""
    return write_package_batches(
        [resources],
        out_dir,
        key,
        study=study,
        enrolled=enrolled,
        link_table=link_table,
        fhir_version=fhir_version,
        settings=settings,
        made_at=made_at,
    )


def write_package_batches(
    batches: Iterable[list[Resource]],
    out_dir: Path,
    key: RegistryKey,
    *,
    study: str,
    enrolled: Collection[str] | None,
    link_table: Path | None = None,
    fhir_version: FhirVersion = "R4",
    settings: Settings | None = None,
    made_at: datetime | None = None,
    run_size: int = RUN_SIZE,
) -> PackageResult:
    """``write_package`` for resources that come a batch at a time (the first: what the others refer to).

    Each batch is de-identified (every rule is per resource or per subject) and validated as it comes, and its
    lines go to sorted runs of at most ``run_size`` resources on disk; each type's file is then the merge of its
    runs, in new-id order, as ``write_package`` sorts them. Memory holds one batch and one run, not the package.
    ``enrolled`` is read as each batch comes, so it may grow while the batches are made.
    """
    link_path = link_table or default_link_table(out_dir)
    if link_path.resolve().is_relative_to(out_dir.resolve()):
        raise RegistryConfigError(f"{link_path}: the link table must not be inside the package directory {out_dir}")
    _check_replaceable(out_dir)
    settings = settings or Settings.default()
    pack, validation = settings.pack, settings.validation
    rules = load_rules(pack)
    problems: list[tuple[str, str, dict[str, str]]] = []
    links: list[LinkRow] = []
    excluded = 0
    known: dict[str, str] = {}  # old -> new references of the first batch (the study level)
    staging = scratch_dir(out_dir.parent, out_dir.name)  # fhir_lupus/_scratch.py: never left behind
    try:
        runs = SortedRuns(staging / ".runs", run_size)
        for number, resources in enumerate(batches):
            clean = deidentify(resources, key, pack=pack, study=study, rules=rules, enrolled=enrolled, known_ids=known)
            if number == 0:
                known = {
                    f"{r['resourceType']}/{r['id']}": f"{r['resourceType']}/{keyed_id(key, r['resourceType'], r['id'])}"
                    for r in resources
                }
            links += clean.links
            excluded += clean.excluded
            for resource in clean.resources:
                try:
                    validate_resource(resource, fhir_version, validation=validation, pack=pack)
                except ResourceInvalidError as exc:
                    label = f"{resource['resourceType']}/{resource['id']}"
                    problems.append(
                        (resource["resourceType"], resource["id"], {"resource": label, "problem": str(exc)})
                    )
                runs.add(resource["resourceType"], resource["id"], dumps(resource, pretty=False))
        written = runs.merge_into(staging)
        problems.sort(key=lambda problem: (problem[0], problem[1]))
        outcome = {
            "fhir_version": FHIR_RELEASES[fhir_version],
            "validated": sum(count for count, _digest in written.values()),
            "problems": [problem for _type, _id, problem in problems],
        }
        validation_text = dumps(outcome).encode("utf-8")
        _write_private(staging / VALIDATION, validation_text)
        rules_path = pack.root / RULES_FILE
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "study": study,
            "fhir_version": FHIR_RELEASES[fhir_version],
            "mapping_version": pack.project.mapping_version,
            "deidentification_rules_sha256": sha256_of(rules_path.read_bytes()),
            "key_id": key.key_id,
            "made_at": (made_at or datetime.now(UTC)).isoformat(timespec="seconds"),
            "subjects": len(links),
            "resources": outcome["validated"],
            "files": [
                {
                    "resource_type": resource_type,
                    "file": f"{resource_type}.ndjson",
                    "count": count,
                    "sha256": digest,
                }
                for resource_type, (count, digest) in sorted(written.items())
            ],
            "validation": {"file": VALIDATION, "sha256": sha256_of(validation_text), "problems": len(problems)},
        }
        _write_private(staging / MANIFEST, dumps(manifest).encode("utf-8"))
        _replace_directory(out_dir, {}, staging=staging)
    finally:
        discard(staging)
    _write_link_table(link_path, links)
    return PackageResult(out_dir, link_path, manifest, [problem for _t, _i, problem in problems], excluded)


def sha256_of(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _check_replaceable(out_dir: Path) -> None:
    """RegistryConfigError unless ``out_dir`` is absent, empty or a package (so replacing it loses nothing)."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise RegistryConfigError(f"{out_dir}: exists and is not a directory")
        foreign = [p.name for p in out_dir.iterdir() if p.name not in (MANIFEST, VALIDATION) and p.suffix != ".ndjson"]
        if foreign or (any(out_dir.iterdir()) and not (out_dir / MANIFEST).exists()):
            raise RegistryConfigError(f"{out_dir}: not empty and not a registry package; choose another -o")


def _replace_directory(out_dir: Path, files: Mapping[str, bytes], *, staging: Path | None = None) -> None:
    """Write the files to a new directory (or into ``staging``, already holding some) and put it in place of
    ``out_dir`` (only if that is a package)."""
    _check_replaceable(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if staging is None:
        staging = scratch_dir(out_dir.parent, out_dir.name)
    try:
        for name, content in files.items():
            _write_private(staging / name, content)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        publish(staging, out_dir)  # a private temporary directory until here; the package as mkdir makes one
    finally:
        discard(staging)


def _write_private(path: Path, content: bytes) -> None:
    with open_private(path, "wb") as out:
        out.write(content)


def _write_link_table(path: Path, links: list[LinkRow]) -> None:
    """pseudonym, subject_id, date_shift_days; mode 600 from the start (never readable by others)."""
    rows = [
        (link.pseudonym, link.subject_id, link.date_shift_days) for link in sorted(links, key=lambda r: r.subject_id)
    ]
    write_csv(path, [LINK_COLUMNS, *rows], mode=0o600)  # its temporary file is mode 600 from the start too
