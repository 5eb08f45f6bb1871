"""A lab deleted on the server after a pull is removed by the next incremental pull, on HAPI and on Medplum.

HAPI offers the type-level history (``Observation/_history``), which the pull reads; Medplum's engine as we run
it has none (its CapabilityStatement lists no ``history-type``), so there the pull reconciles the subject's ids
(a listing) and says so in a note. The unit tests (tests/test_pull_deletions.py) cover paging, a deletion
undone by a new write, the refusals and a pull for a few patients.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
from support import hospital_lab

from fhir_lupus import load_trial
from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.pull import pull_study
from fhir_lupus.push import push_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource

pytestmark = pytest.mark.integration


def test_a_lab_deleted_on_the_server_is_removed_by_the_next_incremental_pull(
    client: FhirClient, isolated_settings: Settings, subset: Callable[..., Path], tmp_path: Path
) -> None:
    data, report = load_trial(subset(1), pack=isolated_settings.pack)
    output = tmp_path / "labs.csv"
    with Journal(tmp_path / "journal.sqlite") as journal:
        push_trial(TrialSource.loaded(data, report), client, journal, source="test", settings=isolated_settings)
        patient = next(e for e in journal.entries(client.base_url).values() if e.resource_type == "Patient")
        baseline = next(v.record.visit_date for v in data.visits if v.record.visit_code == "BL")
        written = hospital_lab(f"Patient/{patient.server_id}", "creatinine", 1.2, "mg/dL", baseline, label="DEL")
        lab = client.create(written)
        first = pull_study(client, journal, data.study, since=None, output=output, settings=isolated_settings)
        gone = next(row for row in first.rows if row.observation_id == lab["id"])
        client.delete("Observation", gone.observation_id)
        again = pull_study(client, journal, data.study, output=output, settings=isolated_settings)  # --since auto

    assert [(r.observation_id, r.subject_id) for r in again.removed] == [(gone.observation_id, gone.subject_id)]
    assert again.total_rows == first.total_rows - 1
    with output.open(encoding="utf-8", newline="") as handle:
        assert gone.observation_id not in {row["observation_id"] for row in csv.DictReader(handle)}
    if client.capabilities().offers("Observation", "history-type"):  # HAPI: the history says it was deleted
        assert again.removed[0].reason == "deleted on the server"
        assert not any("Observation/_history" in note for note in again.fallbacks)
    else:  # Medplum: no type-level history, so the subject's Observation ids were listed and reconciled
        assert again.removed[0].reason == "no longer on the server"
        assert any("Observation/_history is not offered by the server" in note for note in again.fallbacks)
