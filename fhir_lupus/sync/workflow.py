"""Trial-level push, dry run and pull: the steps the CLI, the demo and the tests share."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Literal

from fhir_lupus.audit import append_event, default_audit_path
from fhir_lupus.bundle import business_key
from fhir_lupus.client import FhirClient, UnsupportedInteraction
from fhir_lupus.mappers._context import Resource
from fhir_lupus.model import LoadReport, TrialData, loader
from fhir_lupus.model.study import StudyDefinition
from fhir_lupus.pipeline import MappedBatch, iter_mapped, map_trial, stream_trial
from fhir_lupus.sync.bulk import BulkOptions
from fhir_lupus.sync.dryrun import DryRunReport, dry_run
from fhir_lupus.sync.journal import Journal
from fhir_lupus.sync.plan import content_hash
from fhir_lupus.sync.pull import DEFAULT_WORKERS, PullResult, mark_minus, pull_labs
from fhir_lupus.sync.push import PushOptions, PushReport, push_groups
from fhir_lupus.terminology import LabCatalogue, load_pack
from fhir_lupus.validation import FhirVersion

__all__ = [
    "DEFAULT_OVERLAP_SECONDS",
    "AuditLog",
    "digest_of",
    "dry_run_trial",
    "pull_study",
    "push_directory",
    "push_trial",
    "server_fhir_version",
]

# An incremental pull asks again for what changed in the last five minutes before the mark: a server may
# commit a write after a later one became visible (HAPI stamps lastUpdated when a transaction starts).
DEFAULT_OVERLAP_SECONDS = 300

# where push_trial and pull_study append their audit entry: None = next to the journal
# (fhir_lupus.audit.default_audit_path), a path = there, False = nowhere (tests that need no trail)
AuditLog = Path | None | Literal[False]


def digest_of(hashes: Iterable[str]) -> str:
    """SHA-256 over the sorted per-item hashes, one per line: the same content gives the same digest."""
    return hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()


def _audit(
    audit_log: AuditLog,
    journal: Journal,
    kind: str,
    *,
    server: str,
    counts: Mapping[str, int],
    digest: str,
    outcome: str,
    details: Mapping[str, str],
    mappings_dir: Path | None,
) -> None:
    if audit_log is False:
        return
    path = default_audit_path(journal.path) if audit_log is None else audit_log
    entry = append_event(
        path,
        kind,
        server=server,
        counts=counts,
        content_hash=digest,
        details=details,
        outcome=outcome,
        mapping_version=load_pack(mappings_dir).project.mapping_version,
    )
    journal.set_audit_head(path, entry["seq"], entry["hash"])


def _push_counts(report: PushReport) -> dict[str, int]:
    return {
        "total": report.total,
        "created": report.created,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "linked": report.linked,
        **{kind.replace("-", "_"): report.count(kind) for kind in ("conflict", "held-back", "refused", "skipped")},
    }


def _row_hash(row: object) -> str:
    fields: object = row
    if dataclasses.is_dataclass(row) and not isinstance(row, type):
        # a pulled row is flat (strings only): its __dict__ is what asdict gives, without asdict's deep copy
        fields = dict(vars(row)) if hasattr(row, "__dict__") else dataclasses.asdict(row)
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str, ensure_ascii=False).encode()).hexdigest()


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
    mappings_dir: Path | None = None,
    options: PushOptions | None = None,
    audit_log: AuditLog = None,
) -> PushReport:
    """Map the trial for the server's FHIR version subject by subject and push it as it maps (``push_groups``).

    A resource the journal holds with the same content as confirmed on this server is not validated again
    (``iter_mapped``'s ``trusted``): it was validated when it was sent, and nothing is sent for it now.
    Every push, complete, incomplete or failed, appends one entry to the audit log (``audit_log``): counts,
    outcome, and ``digest_of`` the content hashes of the mapped resources offered to the server (for a push
    that failed: of those offered before it stopped).
    """
    batches = iter_mapped(
        data,
        report,
        fhir_version=server_fhir_version(client),
        mappings_dir=mappings_dir,
        trusted=_confirmed_on(journal, client.base_url),
    )
    return _push_batches(batches, client, journal, source, mappings_dir, options, audit_log)


def push_directory(
    data_dir: Path,
    report: LoadReport,
    client: FhirClient,
    journal: Journal,
    *,
    source: str,
    mappings_dir: Path | None = None,
    options: PushOptions | None = None,
    audit_log: AuditLog = None,
    on_chunk: Callable[[TrialData], None] | None = None,
    max_rows: int | None = None,
) -> PushReport:
    """``push_trial`` for a data directory read a chunk of subjects at a time (``stream_trial``): flat memory
    whatever the trial's size. Rows the loader or the mappers refuse go to ``report`` as they come.
    ``max_rows``: rows per chunk (default ``loader.CHUNK_ROWS``, read when called)."""
    batches = stream_trial(
        data_dir,
        report,
        max_rows=max_rows or loader.CHUNK_ROWS,
        fhir_version=server_fhir_version(client),
        mappings_dir=mappings_dir,
        trusted=_confirmed_on(journal, client.base_url),
        on_chunk=on_chunk,
    )
    return _push_batches(batches, client, journal, source, mappings_dir, options, audit_log)


def _confirmed_on(journal: Journal, server: str) -> Callable[[Resource], bool]:
    """True for a resource whose exact content the journal holds as confirmed on ``server``."""

    def confirmed(resource: Resource) -> bool:
        kind = str(resource["resourceType"])
        return journal.confirmed_hash(server, kind, business_key(resource)) == content_hash(resource)

    return confirmed


def _push_batches(
    batches: Iterable[MappedBatch],
    client: FhirClient,
    journal: Journal,
    source: str,
    mappings_dir: Path | None,
    options: PushOptions | None,
    audit_log: AuditLog,
) -> PushReport:
    audit = functools.partial(_audit, audit_log, journal, "push", server=client.base_url, mappings_dir=mappings_dir)
    pushed = PushReport()
    try:
        push_groups(
            (batch.resources for batch in batches),
            client,
            journal,
            source=source,
            mapping_version=load_pack(mappings_dir).project.mapping_version,
            mappings_dir=mappings_dir,
            options=options,
            report=pushed,
        )
    except Exception as exc:
        digest = digest_of(pushed.content_hashes)
        audit(counts={"total": pushed.total}, digest=digest, outcome=f"failed: {type(exc).__name__}", details={})
        raise
    details = {"push_id": pushed.push_id, "strategy": str(pushed.strategy or "")}
    if pushed.provenance:
        details["provenance"] = pushed.provenance
    outcome = "complete" if pushed.complete else "incomplete"
    # the plans hashed every resource offered once already: the digest is made of those hashes
    audit(counts=_push_counts(pushed), digest=digest_of(pushed.content_hashes), outcome=outcome, details=details)
    return pushed


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
    audit_log: AuditLog = None,
    workers: int = DEFAULT_WORKERS,
    bulk: BulkOptions | None = None,
) -> PullResult:
    """Pull the study's labs into the journal's store and ``output``; the mark moves only after both.

    ``since``: ``"auto"`` continues from the journal's high-water mark (minus ``overlap_seconds``, so a late
    commit is not missed; what is fetched twice is de-duplicated) and keeps every row pulled before; None
    pulls everything and makes the output mirror the server; an ISO date-time pulls what changed since then.
    Every pull, also a failed one, appends an entry to the audit log (``audit_log``, as for ``push_trial``):
    counts, and ``digest_of`` the hashes of the rows new in this pull. ``workers``: subjects fetched at once.
    """
    mark = journal.high_water(client.base_url, study.nct_id)
    if since == "auto":
        search_since = mark_minus(mark, overlap_seconds) if mark else None
        replace_all = mark is None
    else:
        search_since, replace_all = since, since is None
    audit = functools.partial(_audit, audit_log, journal, "pull", server=client.base_url, mappings_dir=mappings_dir)
    try:
        pulled = pull_labs(
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
            workers=workers,
            bulk=bulk,
        )
    except Exception as exc:
        outcome = f"failed: {type(exc).__name__}"
        audit(counts={}, digest=digest_of(()), outcome=outcome, details={})
        raise
    counts = {
        "subjects": pulled.subjects,
        "fetched": pulled.fetched,
        "rows": len(pulled.rows),
        "unmapped": len(pulled.unmapped),
        "removed": len(pulled.removed),
        "unchanged": pulled.unchanged,
        "total_rows": pulled.total_rows,
    }
    details = {"study": study.nct_id, "since": search_since or "", "high_water": pulled.high_water or ""}
    if pulled.bulk is not None:
        export = pulled.bulk
        details["bulk_export"] = f"{export.level} level, {export.files} file(s), resumed: {export.resumed}"
    # chained, not unpacked: a large pull's new rows wait on disk (pullstore.Spool) and are read once here
    digest = digest_of(_row_hash(row) for row in itertools.chain(pulled.rows, pulled.unmapped))
    audit(counts=counts, digest=digest, outcome="complete", details=details)
    return pulled
