"""The bulk pass of a pull (``pull --bulk``): the study's lab results through a Bulk Data ``$export``.

The trial's index is small and is still searched (the ResearchStudy by its NCT identifier, its ResearchSubjects:
a page per thousand subjects). What is large goes through one export job (``_bulk.BulkRun``):
- the Observations of the enrolled subjects' Patients, and, for a full pull, the MSC infusion Procedures and the
  BL Encounters that give each subject's day 0 (``_typeFilter`` by their code and identifier system). The lab
  results among the Observations are selected here, as the search pass selects them (the lab category or a
  catalogue code); ``lab_filters`` asks the server to filter them too, which HAPI on H2 does 70 times slower;
- at the **patient** level by default (``Patient/$export`` with one ``patient`` parameter per enrolled Patient, a
  POST), so that nothing of the hospital's other patients is exported; at the **group** level for a Group the
  server already has (``actual: true``, e.g. a hospital's cohort of the trial: ``--group ID``); at the **system**
  level for a registry server that holds nothing else.
- An incremental pull asks ``_since``; the export then brings only what changed, so day 0 of a subject with new
  results is searched as the search pass does, and what was deleted is read from the manifest's ``deleted``
  part (``deleted``; ``_deletions.deleted_ids``).
Every result then goes through the pull's one ``Subjects`` (selection, reverse mapping, status rules and visit
assignment), as on the search pass and the NDJSON path, so the two give the same lab table.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fhir_lupus.client import ExportFile, ExportRequest, FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.pull._bulk import BulkOptions, BulkRun, BulkSummary
from fhir_lupus.pull._deletions import deleted_ids
from fhir_lupus.pull._local import read_ndjson
from fhir_lupus.pull._reverse import PulledLab, UnmappedResult
from fhir_lupus.pull._state import PassState
from fhir_lupus.pull._subjects import AtHand, DayZeroRecords, OnServer, Subjects
from fhir_lupus.terminology import warm_up_units

__all__ = ["BulkPass", "export_request"]


class BulkPass:
    """One ``pull --bulk``: the enrolled subjects (found by search at once), the export of their labs, the rows."""

    def __init__(
        self,
        client: FhirClient,
        journal: Journal,
        subjects: Subjects,
        options: BulkOptions,
        *,
        since: str | None,
        state: PassState,
    ) -> None:
        """The study and its subjects are searched here; nothing is exported until ``records``."""
        warm_up_units()
        caps = client.capabilities(fresh=False)
        caps.require_search("ResearchSubject")
        study_ref = subjects.find_study(client, caps, state)
        subjects.keep(subjects.research_subjects(client, caps, study_ref, state), study_id=study_ref.partition("/")[2])
        request = export_request(subjects, options, patients=tuple(sorted(subjects.rows)), since=since)
        self.run = BulkRun(client, journal, subjects.study, request, options, notes=state.fallbacks)
        self.subjects = subjects
        self.state = state
        # an incremental export brings only what changed: day 0 stays a search, as on the search pass
        self._by_search = OnServer(subjects, client, caps, state) if since is not None else None
        # the Observation ids the manifest's ``deleted`` part names (and this export did not bring again); None
        # when the manifest has no such part: the pull then asks the history, as the search pass does
        self.deleted: set[str] | None = None

    @property
    def summary(self) -> BulkSummary:
        return self.run.summary

    def records(self) -> Iterator[PulledLab | UnmappedResult]:
        """Run the export to its end, download its files, and yield each lab result of the study's subjects."""
        if not self.subjects.rows:  # nobody enrolled: nothing to export
            return
        files = self.run.files()
        day_zero: DayZeroRecords = self._by_search or AtHand(
            self.subjects, _resources(files, "Procedure"), _resources(files, "Encounter")
        )
        brought: set[str] = set()
        for record in self.subjects.labs(_resources(files, "Observation"), day_zero):
            brought.add(record.observation_id)
            yield record
        if self.run.deleted_files is not None:
            bundles = (r for path, f in self.run.deleted_files for r in read_ndjson(path, source=f.url))
            self.deleted = deleted_ids(entry for bundle in bundles for entry in bundle.get("entry", [])) - brought
        self.run.summary.others = self.subjects.others
        if self.subjects.high_water:
            self.state.mark(self.subjects.high_water)

    def finish(self) -> None:
        """After the rows are merged: the job deleted on the server and in the journal, its files dropped."""
        self.run.finish()


def _resources(files: list[tuple[Path, ExportFile]], resource_type: str) -> Iterator[dict[str, Any]]:
    return (r for path, f in files if f.type == resource_type for r in read_ndjson(path, source=f.url))


def export_request(
    subjects: Subjects, options: BulkOptions, *, patients: tuple[str, ...], since: str | None
) -> ExportRequest:
    """The kick-off for the study's labs (and, for a full pull, what gives day 0) at the options' level."""
    codes = ",".join(sorted(subjects.by_code))
    types = ["Observation"]
    filters = (
        [f"Observation?category={subjects.selection.category}", f"Observation?code={codes}"]
        if options.lab_filters
        else []
    )
    if since is None:  # day 0 comes from the export; an incremental one would bring only what changed
        if (infusion := subjects.infusion) is not None:
            types.append("Procedure")
            filters.append(f"Procedure?code={infusion['system']}|{infusion['code']}")
        types.append("Encounter")
        filters.append(f"Encounter?identifier={subjects.visit_system}|")
    path = {"patient": "Patient/$export", "group": f"Group/{options.group_id}/$export", "system": "$export"}
    return ExportRequest(
        path=path[options.level],
        types=tuple(types),
        type_filters=tuple(filters) if options.type_filters else (),
        since=since,
        patients=patients if options.level == "patient" else (),
    )
