"""Pull lab Observations of a study's subjects back into trial lab rows: whoever wrote them, nothing lost.

``pull_labs`` builds the pull's one ``Subjects`` (``_subjects``: the study, who is enrolled, each one's day 0)
and hands it to a pass: the search pass (``_search_pass``) or, for ``--bulk``, the bulk pass (``_bulk_pass``).
What the pass yields is staged in the store (``_store``) a batch at a time; then, in one transaction of the
store, the stage is merged into the rows pulled before, the output is written from the store and only then the
high-water mark moves (the latest ``meta.lastUpdated`` fetched, or the server's clock when the pull began if
later: ``client.ServerClock``). Incremental pulls ask ``_lastUpdated=ge`` the mark minus an overlap (``mark_minus``), so
a write committed late, or at the same instant as the mark, is fetched again and de-duplicated by id and
version rather than missed; what was deleted since is found by ``_deletions`` and removed in the same
transaction (``_store.Prune``). A pull for a few ``patients`` (``fhir-lupus watch``) touches only their rows and
leaves the mark where it was, so that the next pull of everyone still asks what the others changed since.
``_study.pull_study`` chooses the mark and appends the audit entry.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from pathlib import Path

from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.model import StudyDefinition
from fhir_lupus.pull._bulk import BulkOptions, BulkSummary
from fhir_lupus.pull._bulk_pass import BulkPass
from fhir_lupus.pull._deletions import history_deletions, listed_ids
from fhir_lupus.pull._reverse import PulledLab, UnmappedResult
from fhir_lupus.pull._search_pass import DEFAULT_WORKERS, fetch_labs
from fhir_lupus.pull._state import PassState, moment
from fhir_lupus.pull._store import Prune, PullStore, Removal
from fhir_lupus.pull._subjects import Subjects
from fhir_lupus.terminology import LabCatalogue

__all__ = ["PullResult", "mark_minus", "pull_labs"]

STAGE_BATCH = 500


@dataclass
class PullResult:
    # new, or newer versions, in this pull (a Spool: read like a list, mostly on disk when large)
    rows: Sequence[PulledLab] = field(default_factory=list)
    unmapped: Sequence[UnmappedResult] = field(default_factory=list)  # set aside in this pull, with the reason
    removed: list[Removal] = field(default_factory=list)  # rows pulled earlier that are rows no more
    subjects: int = 0
    # ResearchSubjects not enrolled (mappings/fhir/lifecycle.yaml `enrolled`), by status: never pulled
    skipped_subjects: dict[str, int] = field(default_factory=dict)
    since: str | None = None  # what the search asked (_lastUpdated ge), None for everything
    high_water: str | None = None
    fetched: int = 0
    refetched: int = 0  # Observations a search brought again in this pull (0 unless a server ignores :not)
    unchanged: int = 0  # fetched again at a version already pulled
    total_rows: int = 0  # in the store (and the output) after this pull
    total_unmapped: int = 0
    fallbacks: list[str] = field(default_factory=list)
    outputs: tuple[Path, ...] = ()
    bulk: BulkSummary | None = None  # pull --bulk: the export job, its files and waits
    ignored_patients: int = 0  # Patient ids asked for (``patients``) that are no enrolled subject

    @property
    def outside_windows(self) -> int:
        return sum(1 for row in self.rows if row.window != "in-window")


def pull_labs(
    client: FhirClient,
    journal: Journal,
    study: StudyDefinition,
    catalogue: LabCatalogue,
    *,
    since: str | None = None,
    replace_all: bool = False,
    window_days: int | None = None,
    lookback_days: int | None = None,
    output: Path | None = None,
    mark_from: str | None = None,
    workers: int = DEFAULT_WORKERS,
    bulk: BulkOptions | None = None,
    patients: Collection[str] | None = None,
) -> PullResult:
    """Fetch, merge into the store in the journal's file, write ``output`` (and its ``.unmapped`` file), move the mark.

    ``since`` is what the search asks for (``_lastUpdated=ge``, or the export's ``_since``); ``mark_from`` is the
    mark before this pull (it only moves forward); ``replace_all`` makes the store mirror exactly what was
    fetched (a full pull). ``bulk``: fetch through a Bulk Data export (``_bulk_pass``) instead of searches.
    ``patients``: the Patient ids to pull for (None: every enrolled subject); then ``replace_all`` and the
    removals touch only their rows, and the mark does not move.
    """
    server = client.base_url
    subjects = Subjects(study, catalogue, window_days=window_days, lookback_days=lookback_days, patients=patients)
    state = PassState()
    run: BulkPass | None = None
    with PullStore(journal.path, server, study.nct_id) as store, client.server_clock() as clock:
        store.clear_stage()
        if bulk is not None:
            run = BulkPass(client, journal, subjects, bulk, since=since, state=state)
            fetched = _stage(store, run.records())
        else:
            fetched = _stage(store, fetch_labs(client, subjects, since=since, state=state, workers=workers))
        prune = _prune(
            client,
            subjects,
            since=since,
            replace_all=replace_all,
            restricted=patients is not None,
            state=state,
            deleted=run.deleted if run is not None else None,
        )
        if clock.earliest is not None:  # the server's time before any search ran: the mark moves on when quiet
            state.mark(clock.earliest.astimezone(UTC).isoformat())
        marks = [m for m in (state.high_water, mark_from) if m]
        high_water = max(marks, key=moment) if marks and patients is None else mark_from
        with store.transaction():
            merged = store.merge(replace_all=False, prune=prune)
            outputs = store.write(output) if output else ()
            if high_water and high_water != mark_from:
                store.set_high_water(high_water)
            if patients is not None and state.high_water:  # theirs only: see _study.pull_study
                store.set_patient_marks(patients, state.high_water)
    if run is not None:  # the rows are safe in the store: the server may drop the export's files
        run.finish()
    return PullResult(
        rows=merged.new_rows,
        unmapped=merged.new_unmapped,
        removed=merged.removed,
        subjects=len(subjects),
        skipped_subjects=dict(sorted(subjects.skipped.items())),
        since=since,
        high_water=high_water,
        fetched=fetched,
        refetched=state.refetched,
        unchanged=merged.unchanged,
        total_rows=merged.total_rows,
        total_unmapped=merged.total_unmapped,
        fallbacks=state.fallbacks,
        outputs=tuple(outputs),
        bulk=run.summary if run is not None else None,
        ignored_patients=subjects.ignored,
    )


def _prune(
    client: FhirClient,
    subjects: Subjects,
    *,
    since: str | None,
    replace_all: bool,
    restricted: bool,
    state: PassState,
    deleted: set[str] | None,
) -> Prune | None:
    """What the merge removes: for a full pull all it did not fetch; for an incremental one what the server
    deleted (``deleted``: the export's ``deleted`` part, else the history), or, when the server cannot say, what
    a listing of the subjects' ids lacks; only the searched subjects' rows when ``restricted`` or listed."""
    searched = subjects.subject_ids()
    if replace_all or state.unfiltered:  # all the subjects have was fetched: the stage is the listing
        return Prune(listed=frozenset(), subjects=searched if restricted or not replace_all else None)
    if since is None:
        return None
    if deleted is None:
        caps = client.capabilities(fresh=False)
        deleted = history_deletions(client, caps, since, state, subjects=len(searched))
        if deleted is None:
            return Prune(listed=listed_ids(client, caps, list(subjects.rows)), subjects=searched)
    return Prune(deleted=frozenset(deleted), subjects=searched if restricted else None)


def _stage(store: PullStore, records: Iterable[PulledLab | UnmappedResult]) -> int:
    """Stage ``records`` in batches of STAGE_BATCH (a transaction each); how many there were."""
    batch: list[PulledLab | UnmappedResult] = []
    fetched = 0
    for record in records:
        batch.append(record)
        fetched += 1
        if len(batch) >= STAGE_BATCH:
            store.stage(batch)
            batch.clear()
    store.stage(batch)
    return fetched


def mark_minus(mark: str, seconds: int) -> str:
    """The search start for an incremental pull: the mark moved back by the overlap (UTC)."""
    return (moment(mark) - timedelta(seconds=seconds)).astimezone(UTC).isoformat(timespec="milliseconds")
