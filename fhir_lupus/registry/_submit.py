"""Submitting a registry package: every file checked against its manifest, then pushed through the push machinery
(planned, journaled, resumable: a second submit writes nothing), and the attempt in the audit trail.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_lupus._resource import Resource
from fhir_lupus.audit import append_event, default_audit_path
from fhir_lupus.bundle import identifiers
from fhir_lupus.client import FhirClient, UnsupportedInteraction
from fhir_lupus.journal import Journal
from fhir_lupus.push import Progress, PushOptions, PushReport, push_resources, server_fhir_version
from fhir_lupus.registry._key import RegistryConfigError
from fhir_lupus.registry._package import FHIR_RELEASES, FORMAT, FORMAT_VERSION, MANIFEST, sha256_of
from fhir_lupus.settings import Settings
from fhir_lupus.terminology import refuse_placeholders

__all__ = ["Package", "SubmitResult", "read_package", "refuse_placeholder_package", "submit_package"]


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
        if sha256_of(content) != entry["sha256"]:
            raise RegistryConfigError(f"{path}: sha256 differs from the manifest: the package was changed")
        lines = [line for line in content.decode("utf-8").splitlines() if line.strip()]
        if len(lines) != entry["count"]:
            raise RegistryConfigError(f"{path}: {len(lines)} resources, the manifest says {entry['count']}")
        for number, line in enumerate(lines, start=1):
            resource = json.loads(line)
            if resource.get("resourceType") != entry["resource_type"]:
                raise RegistryConfigError(f"{path}:{number}: not a {entry['resource_type']}")
            resources.append(resource)
    return Package(directory, manifest, resources, sha256_of(raw))


def refuse_placeholder_package(package: Package, server: str) -> None:
    """SiteProfileError when ``server`` is not on loopback and the package's identifiers are under example
    placeholder systems (it was made with the example site profile); no network I/O."""
    systems = {
        str(identifier["system"]): resource["resourceType"]
        for resource in package.resources
        for identifier in identifiers(resource)
        if identifier.get("system")
    }
    named = {f"{kind}.identifier.system": system for system, kind in systems.items()}
    where = "the package (made with the example site profile)"
    refuse_placeholders(server, named, action=f"registry submit of {package.directory}", where=where)


def submit_package(
    directory: Path | Package,
    client: FhirClient,
    journal: Journal,
    *,
    chunk_size: int = 500,
    progress: Progress | None = None,
    settings: Settings | None = None,
    audit_log: Path | None = None,
) -> SubmitResult:
    """Push a package's resources (``push_resources``: idempotent, resumable through the journal); ``settings``:
    the mapping pack whose matching rules find them on the server (default: ``Settings.default()``).

    ``directory``: the package's directory, or the package ``read_package`` read from it.

    A server not on loopback is refused, before any request, while the package's identifiers are under example
    placeholder systems (``refuse_placeholder_package``)."""
    package = directory if isinstance(directory, Package) else read_package(directory)
    refuse_placeholder_package(package, client.base_url)
    release = package.manifest["fhir_version"]
    try:  # the first request too: an attempt that fails on it is in the trail
        version = server_fhir_version(client)
        if FHIR_RELEASES[version] != release:
            raise UnsupportedInteraction(f"the package is FHIR {release}, the server speaks {FHIR_RELEASES[version]}")
        report = push_resources(
            package.resources,
            client,
            journal,
            source=f"fhir-lupus registry package {package.manifest['study']} (key {package.manifest['key_id']})",
            mapping_version=package.manifest["mapping_version"],
            settings=settings,
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
