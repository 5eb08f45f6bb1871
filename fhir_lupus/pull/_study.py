"""A study's pull: who to pull for, the pull itself, its audit entry and the journal's high-water mark."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
from collections.abc import Collection
from pathlib import Path
from typing import Literal

from fhir_lupus.audit import AuditLog, append_run, digest_of
from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.model import StudyDefinition
from fhir_lupus.pull._bulk import BulkOptions
from fhir_lupus.pull._runner import PullResult, mark_minus, pull_labs
from fhir_lupus.pull._search_pass import DEFAULT_WORKERS
from fhir_lupus.pull._state import moment
from fhir_lupus.pull._store import PullStore
from fhir_lupus.settings import Settings
from fhir_lupus.terminology import LabCatalogue

__all__ = ["DEFAULT_OVERLAP_SECONDS", "pull_study"]

# An incremental pull asks again for what changed in the last five minutes before the mark: a server may
# commit a write after a later one became visible (HAPI stamps lastUpdated when a transaction starts).
DEFAULT_OVERLAP_SECONDS = 300


def _row_hash(row: object) -> str:
    fields: object = row
    if dataclasses.is_dataclass(row) and not isinstance(row, type):
        # a pulled row is flat (strings only): its __dict__ is what asdict gives, without asdict's deep copy
        fields = dict(vars(row)) if hasattr(row, "__dict__") else dataclasses.asdict(row)
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str, ensure_ascii=False).encode()).hexdigest()


def _patients_mark(
    journal: Journal, server: str, study: str, patients: Collection[str] | None, mark: str | None
) -> str | None:
    """Where an incremental pull starts. For everyone: the study's mark. For a few ``patients`` (a notification of
    ``watch``): the earliest of their own marks, each the later of the study's and what a pull for that patient
    alone saw last; without it a pull for one patient after a quiet spell would ask again for all that changed
    since the last pull of everyone (a push of thousands of resources, say) and read its deletions, at every
    notification until the next poll. Each patient's own mark is what a pull covering that patient saw, so no
    change of theirs since is skipped; the study's mark still moves only with a pull of everyone."""
    if patients is None or mark is None or not patients:
        return mark
    with PullStore(journal.path, server, study) as store:
        own = store.patient_marks(patients)
    return min((max(mark, own.get(p, mark), key=moment) for p in patients), key=moment)


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
    settings: Settings | None = None,
    audit_log: AuditLog = None,
    workers: int = DEFAULT_WORKERS,
    bulk: BulkOptions | None = None,
    patients: Collection[str] | None = None,
) -> PullResult:
    """Pull the study's labs into the journal's store and ``output``; the mark moves only after both.

    ``since``: ``"auto"`` continues from the journal's high-water mark (minus ``overlap_seconds``, so a late
    commit is not missed; what is fetched twice is de-duplicated) and keeps every row pulled before; None
    pulls everything and makes the output mirror the server; an ISO date-time pulls what changed since then.
    Every pull, also a failed one, appends an entry to the audit log (``audit_log``, as for ``push_trial``):
    counts, and ``digest_of`` the hashes of the rows new in this pull. ``workers``: subjects fetched at once.
    ``settings``: the mapping pack rows are made with (default: ``Settings.default()``). ``patients``: the
    server's Patient ids (no ``Patient/``) to pull for, None for every enrolled subject; only their rows are
    touched and the mark stays (the others' changes since are still asked by the next pull of everyone); ids of
    no enrolled subject are ignored and counted (``PullResult.ignored_patients``). An incremental pull also
    removes what was deleted on the server since the search start (``_deletions``).
    """
    pack = (settings or Settings.default()).pack
    mark = journal.high_water(client.base_url, study.nct_id)
    if since == "auto":
        start = _patients_mark(journal, client.base_url, study.nct_id, patients, mark)
        search_since = mark_minus(start, overlap_seconds) if start else None
        replace_all = mark is None
    else:
        search_since, replace_all = since, since is None
    audit = functools.partial(
        append_run, audit_log, journal, "pull", server=client.base_url, mapping_version=pack.project.mapping_version
    )
    try:
        client.reach(fresh=False)  # the first request: a wrong URL fails at once (the cached statement will do)
        pulled = pull_labs(
            client,
            journal,
            study,
            LabCatalogue(pack),
            since=search_since,
            replace_all=replace_all,
            window_days=window_days,
            lookback_days=lookback_days,
            output=output,
            mark_from=mark,
            workers=workers,
            bulk=bulk,
            patients=patients,
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
    if patients is not None:
        details["patients"] = f"{len(patients)} asked, {pulled.ignored_patients} ignored"
    if pulled.bulk is not None:
        export = pulled.bulk
        details["bulk_export"] = f"{export.level} level, {export.files} file(s), resumed: {export.resumed}"
    # chained, not unpacked: a large pull's new rows wait on disk (_spool.Spool) and are read once here
    digest = digest_of(_row_hash(row) for row in itertools.chain(pulled.rows, pulled.unmapped))
    audit(counts=counts, digest=digest, outcome="complete", details=details)
    return pulled
