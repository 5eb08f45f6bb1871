"""Registry packages: build one from a trial (map, keep enrolled subjects, de-identify, validate, write) and
submit one through the push machinery (planned, journaled, resumable; a second submit writes nothing).

A package directory holds one NDJSON file per resource type (the layout a Bulk Data ``$import`` takes),
``validation.json`` (every resource validated, the problems listed) and ``manifest.json`` (counts, sha256 of
every file, FHIR version, mapping version, key id, when it was made). The link table (pseudonym <-> subject id)
is written beside it, never inside, with mode 600.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import itertools
import json
import os
import shutil
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fhir_lupus._resource import Resource
from fhir_lupus._scratch import DIR_MODE, scratch_dir, write_csv
from fhir_lupus.audit import append_event, default_audit_path
from fhir_lupus.bundle import dumps
from fhir_lupus.client import FhirClient, UnsupportedInteraction
from fhir_lupus.errors import ResourceInvalidError
from fhir_lupus.journal import Journal
from fhir_lupus.model import CHUNK_ROWS, LoadReport, TrialData, load_lifecycle_rules
from fhir_lupus.pipeline import iter_mapped, refuse_rejected, stream_trial
from fhir_lupus.push import Progress, PushOptions, PushReport, push_resources, server_fhir_version
from fhir_lupus.registry._deidentify import RULES_FILE, LinkRow, deidentify, keyed_id, load_rules
from fhir_lupus.registry._key import RegistryConfigError, RegistryKey
from fhir_lupus.terminology import default_mappings_dir, load_pack
from fhir_lupus.validation import FhirVersion, Validation, validate_resource

__all__ = [
    "MANIFEST",
    "VALIDATION",
    "Package",
    "PackageResult",
    "SubmitResult",
    "default_link_table",
    "package_directory",
    "package_trial",
    "read_package",
    "submit_package",
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


@dataclass
class Package:
    directory: Path
    manifest: dict[str, Any]
    resources: list[Resource]
    content_hash: str  # sha256 of manifest.json, which holds the sha256 of every file


@dataclass
class SubmitResult:
    package: Package
    report: PushReport
    audit: str  # the audit log the "registry-submit" event went to


def default_link_table(out_dir: Path) -> Path:
    """``DIR.link.csv`` beside the package directory ``DIR``."""
    return out_dir.parent / f"{out_dir.name}.link.csv"


def package_trial(
    data: TrialData,
    report: LoadReport,
    out_dir: Path,
    key: RegistryKey,
    *,
    link_table: Path | None = None,
    fhir_version: FhirVersion = "R4",
    mappings_dir: Path | None = None,
    made_at: datetime | None = None,
    validation: Validation | None = None,
    allow_rejects: bool = False,
) -> PackageResult:
    """Map the trial, keep the enrolled subjects' data (mappings/fhir/lifecycle.yaml), de-identify and write.

    ``validation``: "fast" or "strict" (fhir_lupus.validation), for the map and for the de-identified resources.
    When ``report`` holds a refused row, RejectedRows is raised and nothing is written, unless ``allow_rejects``.
    """
    statuses = load_lifecycle_rules(mappings_dir).enrolled
    enrolled = {row.record.subject_id for row in data.subjects if row.record.status in statuses}
    batches = refuse_rejected(
        iter_mapped(data, report, fhir_version=fhir_version, mappings_dir=mappings_dir, validation=validation),
        report,
        allow_rejects=allow_rejects,
    )
    return write_package_batches(
        (batch.resources for batch in batches),
        out_dir,
        key,
        study=data.study.nct_id,
        enrolled=enrolled,
        link_table=link_table,
        fhir_version=fhir_version,
        mappings_dir=mappings_dir,
        made_at=made_at,
        validation=validation,
    )


def package_directory(
    data_dir: Path,
    report: LoadReport,
    out_dir: Path,
    key: RegistryKey,
    *,
    link_table: Path | None = None,
    fhir_version: FhirVersion = "R4",
    mappings_dir: Path | None = None,
    made_at: datetime | None = None,
    validation: Validation | None = None,
    on_chunk: Callable[[TrialData], None] | None = None,
    max_rows: int = CHUNK_ROWS,
    allow_rejects: bool = False,
) -> PackageResult:
    """``package_trial`` for a data directory too large to hold: loaded, mapped and packaged a chunk at a time.

    The same package, byte for byte (``stream_trial`` yields the same resources; the files are sorted the
    same way). ``on_chunk`` sees each chunk's entities (the CLI adds the screening findings there); ``max_rows``
    bounds a chunk (``load_trial_chunks``). When a row is refused, RejectedRows is raised after the last batch
    and nothing is written, unless ``allow_rejects`` (values derived from refused rows are then preliminary).
    """
    statuses = load_lifecycle_rules(mappings_dir).enrolled
    enrolled: set[str] = set()
    study: list[str] = []

    def chunk_loaded(data: TrialData) -> None:  # before the chunk's subjects are mapped and de-identified
        enrolled.update(row.record.subject_id for row in data.subjects if row.record.status in statuses)
        study[:] = [data.study.nct_id]
        if on_chunk is not None:
            on_chunk(data)

    batches = refuse_rejected(
        stream_trial(
            data_dir,
            report,
            fhir_version=fhir_version,
            mappings_dir=mappings_dir,
            validation=validation,
            on_chunk=chunk_loaded,
            max_rows=max_rows,
        ),
        report,
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
        mappings_dir=mappings_dir,
        made_at=made_at,
        validation=validation,
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
    mappings_dir: Path | None = None,
    made_at: datetime | None = None,
    validation: Validation | None = None,
) -> PackageResult:
    """De-identify mapped resources, validate every one and write the package and the link table."""
    return write_package_batches(
        [resources],
        out_dir,
        key,
        study=study,
        enrolled=enrolled,
        link_table=link_table,
        fhir_version=fhir_version,
        mappings_dir=mappings_dir,
        made_at=made_at,
        validation=validation,
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
    mappings_dir: Path | None = None,
    made_at: datetime | None = None,
    validation: Validation | None = None,
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
    pack = load_pack(mappings_dir)
    rules = load_rules(mappings_dir)
    problems: list[tuple[str, str, dict[str, str]]] = []
    links: list[LinkRow] = []
    excluded = 0
    known: dict[str, str] = {}  # old -> new references of the first batch (the study level)
    staging = scratch_dir(out_dir.parent, out_dir.name)  # fhir_lupus/_scratch.py: never left behind
    try:
        runs = _Runs(staging / ".runs", run_size)
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
                    validate_resource(resource, fhir_version, validation=validation)
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
        (staging / VALIDATION).write_bytes(validation_text)
        rules_path = (mappings_dir or default_mappings_dir()) / RULES_FILE
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "study": study,
            "fhir_version": FHIR_RELEASES[fhir_version],
            "mapping_version": pack.project.mapping_version,
            "deidentification_rules_sha256": _sha256(rules_path.read_bytes()),
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
            "validation": {"file": VALIDATION, "sha256": _sha256(validation_text), "problems": len(problems)},
        }
        (staging / MANIFEST).write_bytes(dumps(manifest).encode("utf-8"))
        _replace_directory(out_dir, {}, staging=staging)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    _write_link_table(link_path, links)
    return PackageResult(out_dir, link_path, manifest, [problem for _t, _i, problem in problems], excluded)


class _Runs:
    """Sorted runs of ``id\tline`` per resource type on disk, merged into one sorted NDJSON file per type."""

    def __init__(self, directory: Path, size: int) -> None:
        self.directory = directory
        self.size = size
        self._pending: dict[str, list[tuple[str, str]]] = {}
        self._held = 0
        self._runs: dict[str, list[Path]] = {}

    def add(self, resource_type: str, resource_id: str, line: str) -> None:
        self._pending.setdefault(resource_type, []).append((resource_id, line))
        self._held += 1
        if self._held >= self.size:
            self._flush()

    def _flush(self) -> None:
        self.directory.mkdir(exist_ok=True)
        for resource_type, items in self._pending.items():
            items.sort()
            path = self.directory / f"{resource_type}.{len(self._runs.get(resource_type, []))}"
            with path.open("w", encoding="utf-8", newline="") as handle:
                handle.writelines(f"{resource_id}\t{line}\n" for resource_id, line in items)
            self._runs.setdefault(resource_type, []).append(path)
        self._pending.clear()
        self._held = 0

    def merge_into(self, directory: Path) -> dict[str, tuple[int, str]]:
        """Write ``<Type>.ndjson`` per type into ``directory``; returns type -> (count, sha256)."""
        self._flush()
        written: dict[str, tuple[int, str]] = {}
        for resource_type, paths in sorted(self._runs.items()):
            digest = hashlib.sha256()
            count = 0
            with contextlib.ExitStack() as stack:
                runs = [stack.enter_context(path.open("r", encoding="utf-8", newline="")) for path in paths]
                out = stack.enter_context((directory / f"{resource_type}.ndjson").open("wb"))
                for merged in heapq.merge(*runs, key=lambda text: text.split("\t", 1)[0]):
                    data = merged.split("\t", 1)[1].encode("utf-8")
                    out.write(data)
                    digest.update(data)
                    count += 1
            written[resource_type] = (count, digest.hexdigest())
        shutil.rmtree(self.directory, ignore_errors=True)
        return written


def read_package(directory: Path) -> Package:
    """The package's resources, after checking every file against the manifest (count and sha256)."""
    manifest_path = directory / MANIFEST
    try:
        raw = manifest_path.read_bytes()
        manifest = json.loads(raw)
    except OSError as exc:
        raise RegistryConfigError(f"{manifest_path}: cannot read the manifest: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise RegistryConfigError(f"{manifest_path}: not JSON: {exc}") from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise RegistryConfigError(f"{manifest_path}: not a {FORMAT} (format version {FORMAT_VERSION})")
    listed = {entry["file"] for entry in manifest["files"]}
    unlisted = sorted(p.name for p in directory.glob("*.ndjson") if p.name not in listed)
    if unlisted:
        raise RegistryConfigError(f"{directory}: files not in the manifest: {', '.join(unlisted)}")
    resources: list[Resource] = []
    for entry in manifest["files"]:
        path = directory / entry["file"]
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise RegistryConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
        if _sha256(content) != entry["sha256"]:
            raise RegistryConfigError(f"{path}: sha256 differs from the manifest: the package was changed")
        lines = [line for line in content.decode("utf-8").splitlines() if line.strip()]
        if len(lines) != entry["count"]:
            raise RegistryConfigError(f"{path}: {len(lines)} resources, the manifest says {entry['count']}")
        for number, line in enumerate(lines, start=1):
            resource = json.loads(line)
            if resource.get("resourceType") != entry["resource_type"]:
                raise RegistryConfigError(f"{path}:{number}: not a {entry['resource_type']}")
            resources.append(resource)
    return Package(directory, manifest, resources, _sha256(raw))


def submit_package(
    directory: Path,
    client: FhirClient,
    journal: Journal,
    *,
    chunk_size: int = 500,
    progress: Progress | None = None,
    mappings_dir: Path | None = None,
    audit_log: Path | None = None,
) -> SubmitResult:
    """Push a package's resources (``push_resources``: idempotent, resumable through the journal)."""
    package = read_package(directory)
    release = package.manifest["fhir_version"]
    version = server_fhir_version(client)
    if FHIR_RELEASES[version] != release:
        raise UnsupportedInteraction(f"the package is FHIR {release}, the server speaks {FHIR_RELEASES[version]}")
    try:
        report = push_resources(
            package.resources,
            client,
            journal,
            source=f"fhir-lupus registry package {package.manifest['study']} (key {package.manifest['key_id']})",
            mapping_version=package.manifest["mapping_version"],
            mappings_dir=mappings_dir,
            options=PushOptions(chunk_size=chunk_size, progress=progress),
        )
    except Exception as exc:  # the trail shows the attempt too; the journal knows what was confirmed
        _audit(package, client.base_url, {}, f"failed: {type(exc).__name__}", {}, journal, audit_log)
        raise
    counts = {
        "total": report.total,
        "created": report.created,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "problems": len(report.problems),
    }
    outcome = "complete" if report.complete else "incomplete"
    path = _audit(package, report.server, counts, outcome, {"push_id": report.push_id}, journal, audit_log)
    return SubmitResult(package, report, audit=path)


def _audit(
    package: Package,
    server: str,
    counts: Mapping[str, int],
    outcome: str,
    details: Mapping[str, str],
    journal: Journal,
    audit_log: Path | None,
) -> str:
    """A "registry-submit" entry in the hash-chained audit trail (beside the journal unless ``audit_log``).

    Its content hash is the SHA-256 of the package's manifest.json, which holds the SHA-256 of every file.
    """
    path = audit_log if audit_log is not None else default_audit_path(journal.path)
    entry = append_event(
        path,
        "registry-submit",
        server=server,
        counts=counts,
        content_hash=package.content_hash,
        details={"study": package.manifest["study"], "key_id": package.manifest["key_id"], **details},
        outcome=outcome,
        mapping_version=package.manifest["mapping_version"],
    )
    journal.set_audit_head(path, entry["seq"], entry["hash"])  # so `audit verify --journal` sees a cut-off log
    return str(path)


def _sha256(content: bytes) -> str:
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
            (staging / name).write_bytes(content)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.chmod(staging, DIR_MODE)  # a private scratch directory until here; the package as mkdir makes one
        os.replace(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _write_link_table(path: Path, links: list[LinkRow]) -> None:
    """pseudonym, subject_id, date_shift_days; mode 600 from the start (never readable by others)."""
    rows = [
        (link.pseudonym, link.subject_id, link.date_shift_days) for link in sorted(links, key=lambda r: r.subject_id)
    ]
    write_csv(path, [LINK_COLUMNS, *rows], mode=0o600)  # its temporary file is mode 600 from the start too
