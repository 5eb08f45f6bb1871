"""Push mapped resources to a FHIR server: only what changed, in chunks, resumable, auditable.

The plan compares each resource's content hash with the journal; unchanged resources are not sent.
Changed ones go out in dependency order, in chunks, using the write strategy the server's
CapabilityStatement allows (transaction, else batch, else one conditional write each). References to
resources sent earlier resolve to their server ids from the journal. A 412 (several server resources match
one identifier) is reported per resource with the matching ids and that resource, and everything that
refers to it, is held back, never resolved silently. One Provenance resource records each push that wrote.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fhir_lupus.bundle import (
    DEPENDENCY_ORDER,
    business_key,
    conditional_query,
    references,
    rewrite_references,
    search_parameter,
    transaction_bundle,
)
from fhir_lupus.client import FhirClient, PreconditionFailed, WriteStrategy, location_id, location_version
from fhir_lupus.errors import FhirLupusError
from fhir_lupus.mappers._context import Resource
from fhir_lupus.sync.journal import Journal, JournalEntry

__all__ = ["Conflict", "PushReport", "content_hash", "push_resources"]

Progress = Callable[[int, int], None]


def content_hash(resource: Resource) -> str:
    """SHA-256 of the resource's canonical JSON: equal hashes mean nothing to send."""
    return hashlib.sha256(json.dumps(resource, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _local_ref(resource: Resource) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


@dataclass(frozen=True)
class Conflict:
    resource_type: str
    business_key: str
    reason: str
    server_ids: tuple[str, ...] = ()

    def __str__(self) -> str:
        ids = f" (server ids: {', '.join(self.server_ids)})" if self.server_ids else ""
        return f"{self.resource_type} {self.business_key}: {self.reason}{ids}"


@dataclass
class PushReport:
    push_id: str
    server: str
    strategy: WriteStrategy | None = None
    total: int = 0
    unchanged: int = 0
    created: int = 0
    updated: int = 0
    chunks: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    provenance: str | None = None

    @property
    def written(self) -> int:
        return self.created + self.updated

    def summary(self) -> str:
        return (
            f"{self.total} resources: {self.created} created, {self.updated} updated, {self.unchanged} unchanged, "
            f"{len(self.conflicts)} held back by conflicts ({self.chunks} chunk(s), {self.strategy or 'nothing sent'})"
        )


def push_resources(
    resources: Iterable[Resource],
    client: FhirClient,
    journal: Journal,
    *,
    source: str,
    mapping_version: str,
    chunk_size: int = 500,
    progress: Progress | None = None,
    strategy: WriteStrategy | None = None,
) -> PushReport:
    """Send what changed since the journal's last record for this server; see the module docstring.

    ``strategy`` overrides the one the CapabilityStatement implies (for a server whose statement is wrong).
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    server = client.base_url
    ordered = sorted(resources, key=lambda r: DEPENDENCY_ORDER.index(r["resourceType"]))
    report = PushReport(push_id=str(uuid.uuid4()), server=server, total=len(ordered))
    known = journal.entries(server)
    pending: list[Resource] = []
    for resource in ordered:
        entry = known.get((resource["resourceType"], business_key(resource)))
        if entry and entry.server_id and entry.content_hash == content_hash(resource):
            report.unchanged += 1
        else:
            pending.append(resource)
    if progress:
        progress(0, len(pending))
    if not pending:
        return report
    report.strategy = strategy or client.capabilities().write_strategy({r["resourceType"] for r in pending})
    journal.start_push(report.push_id, server, source)
    server_refs = {
        f"{r['resourceType']}/{r['id']}": f"{r['resourceType']}/{known[k].server_id}"
        for r in ordered
        if (k := (r["resourceType"], business_key(r))) in known and known[k].server_id
    }
    held_back: set[str] = set()
    status = "failed"
    try:
        done = 0
        for start in range(0, len(pending), chunk_size):
            chunk = [r for r in pending[start : start + chunk_size] if not _blocked(r, held_back)]
            for resource in pending[start : start + chunk_size]:
                if resource not in chunk:
                    report.conflicts.append(
                        Conflict(resource["resourceType"], business_key(resource), "refers to a resource held back")
                    )
            if chunk:
                written = _send_chunk(chunk, client, report, server_refs, held_back)
                journal.record(server, report.push_id, [entry for _, entry in written])
                for resource, entry in written:
                    if entry.server_id:
                        server_refs[_local_ref(resource)] = f"{resource['resourceType']}/{entry.server_id}"
                report.chunks += 1
            done += len(pending[start : start + chunk_size])
            if progress:
                progress(done, len(pending))
        if report.written:
            report.provenance = _provenance(client, report, server_refs, source, mapping_version, pending)
        status = "completed" if not report.conflicts else "completed-with-conflicts"
    finally:
        journal.finish_push(report.push_id, status, report.summary())
    return report


def _blocked(resource: Resource, held_back: set[str]) -> bool:
    return bool(held_back & references(resource))


def _send_chunk(
    chunk: list[Resource],
    client: FhirClient,
    report: PushReport,
    server_refs: dict[str, str],
    held_back: set[str],
) -> list[tuple[Resource, JournalEntry]]:
    """Write one chunk; on 412, find the resources with several matches, hold them back, send the rest."""
    try:
        return _write(chunk, client, report, server_refs)
    except PreconditionFailed:
        conflicted = _find_conflicts(chunk, client, report)
        held_back.update(conflicted)
        remaining = [r for r in chunk if _local_ref(r) not in held_back and not _blocked(r, held_back)]
        for resource in chunk:
            if resource not in remaining and _local_ref(resource) not in conflicted:
                report.conflicts.append(
                    Conflict(resource["resourceType"], business_key(resource), "refers to a resource held back")
                )
                held_back.add(_local_ref(resource))
        return _write(remaining, client, report, server_refs) if remaining else []


def _find_conflicts(chunk: list[Resource], client: FhirClient, report: PushReport) -> set[str]:
    conflicted = set()
    for resource in chunk:
        matches = [
            m["id"]
            for m in client.search(
                resource["resourceType"], {search_parameter(resource["resourceType"]): business_key(resource)}
            )
        ]
        if len(matches) > 1:
            conflicted.add(_local_ref(resource))
            report.conflicts.append(
                Conflict(
                    resource["resourceType"],
                    business_key(resource),
                    "several server resources match",
                    tuple(matches),
                )
            )
    if not conflicted:
        raise FhirLupusError("the server answered 412 but no resource of the chunk has several matches")
    return conflicted


def _write(
    chunk: list[Resource], client: FhirClient, report: PushReport, server_refs: dict[str, str]
) -> list[tuple[Resource, JournalEntry]]:
    """Send one chunk with the server's write strategy; the journal entries of what the server confirmed."""
    if report.strategy == "transaction":
        ordered = sorted(chunk, key=lambda r: DEPENDENCY_ORDER.index(r["resourceType"]))  # the bundle's order
        response = client.transaction(transaction_bundle(ordered, external=server_refs), idempotent=True)
        answers = [entry.get("response", {}) for entry in response.get("entry", [])]
        if len(answers) != len(ordered):
            raise FhirLupusError(f"transaction response has {len(answers)} entries for {len(ordered)} sent")
        return [(r, _outcome(r, answer, report)) for r, answer in zip(ordered, answers, strict=True)]
    entries = []
    for level in _levels(chunk):  # batch and one-by-one: references must already have server ids
        if report.strategy == "batch":
            bundle = transaction_bundle(level, external=server_refs, bundle_type="batch")
            response = client.transaction(bundle, idempotent=True)
            answers = [e.get("response", {}) for e in response.get("entry", [])]
            for resource, answer in zip(level, answers, strict=True):
                if not str(answer.get("status", "")).startswith("2"):
                    raise _entry_error(resource, answer)
        else:
            answers = [_write_one(resource, client, server_refs) for resource in level]
        for resource, answer in zip(level, answers, strict=True):
            entry = _outcome(resource, answer, report)
            entries.append((resource, entry))
            if entry.server_id:
                server_refs[_local_ref(resource)] = f"{resource['resourceType']}/{entry.server_id}"
    return entries


def _write_one(resource: Resource, client: FhirClient, server_refs: dict[str, str]) -> dict[str, Any]:
    body = rewrite_references({k: v for k, v in resource.items() if k != "id"}, server_refs)
    query = conditional_query(resource)
    if resource["resourceType"] == "Patient":
        response = client.conditional_create(body, query)
    else:
        response = client.conditional_update(body, query)
    return {
        "status": str(response.status_code),
        "location": response.headers.get("Location") or response.headers.get("Content-Location", ""),
    }


def _entry_error(resource: Resource, answer: dict[str, Any]) -> FhirLupusError:
    status = str(answer.get("status", ""))
    if status.startswith("412"):
        return PreconditionFailed(f"{resource['resourceType']} {business_key(resource)}: several matches", status=412)
    outcome = answer.get("outcome") or {}
    text = "; ".join(i.get("diagnostics", "") for i in outcome.get("issue", []))
    return FhirLupusError(f"{resource['resourceType']} {business_key(resource)} refused: {status} {text}".strip())


def _levels(chunk: list[Resource]) -> list[list[Resource]]:
    """Group a chunk so that every resource comes after those it references (Observation -> Observation too)."""
    local = {_local_ref(r) for r in chunk}
    depth: dict[str, int] = {}
    by_ref = {_local_ref(r): r for r in chunk}

    def level(ref: str, trail: frozenset[str] = frozenset()) -> int:
        if ref not in depth:
            if ref in trail:
                raise FhirLupusError(f"reference cycle through {ref}")
            parents = [p for p in references(by_ref[ref]) if p in local]
            depth[ref] = 1 + max((level(p, trail | {ref}) for p in parents), default=-1)
        return depth[ref]

    groups: dict[int, list[Resource]] = {}
    for resource in chunk:
        groups.setdefault(level(_local_ref(resource)), []).append(resource)
    return [groups[k] for k in sorted(groups)]


def _outcome(resource: Resource, answer: dict[str, Any], report: PushReport) -> JournalEntry:
    status = str(answer.get("status", ""))
    location = str(answer.get("location", ""))
    server_id = location_id(location, resource["resourceType"])
    version = location_version(location)
    if status.startswith("201"):
        report.created += 1
        outcome = "created"
    else:
        report.updated += 1
        outcome = "updated"
    return JournalEntry(
        resource["resourceType"], business_key(resource), content_hash(resource), server_id, version, outcome
    )


def _provenance(
    client: FhirClient,
    report: PushReport,
    server_refs: dict[str, str],
    source: str,
    mapping_version: str,
    sent: list[Resource],
) -> str | None:
    targets = [{"reference": server_refs[_local_ref(r)]} for r in sent if _local_ref(r) in server_refs]
    if not targets:
        return None
    provenance = {
        "resourceType": "Provenance",
        "target": targets,
        "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
        "activity": {"text": f"fhir_lupus push {report.push_id}"},
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "code": "assembler",
                        }
                    ]
                },
                "who": {"display": f"fhir_lupus (mapping version {mapping_version})"},
            }
        ],
        "entity": [{"role": "source", "what": {"display": source}}],
    }
    created = client.create(provenance)
    return f"Provenance/{created['id']}" if created.get("id") else None
