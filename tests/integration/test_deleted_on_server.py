"""A lab deleted on the server after a pull is removed by the next incremental pull, on HAPI and on Medplum.

HAPI offers the type-level history (``Observation/_history``), which the pull reads; Medplum's engine as we run
it has none (its CapabilityStatement lists no ``history-type``), so there the pull reconciles the subject's ids
(a listing) and says so in a note. The unit tests (tests/test_pull_deletions.py) cover paging, a deletion
undone by a new write, the refusals and a pull for a few patients.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fhir_lupus import load_trial
from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.pull import pull_study
from fhir_lupus.push import push_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource

pytestmark = pytest.mark.integration
LAB_CATEGORY = {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}


def hospital_creatinine(patient: str, day: str) -> dict[str, Any]:
    """A creatinine result as the hospital's lab system writes it (no Provenance of ours points at it, so the
    server lets it be deleted, as a withdrawn result would be)."""
    return {
        "resourceType": "Observation",
        "identifier": [{"system": "urn:oid:1.2.156.112604.1.2.1", "value": f"DEL-{uuid.uuid4().hex[:8]}"}],
        "status": "final",
        "category": [{"coding": [LAB_CATEGORY]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]},
        "subject": {"reference": patient},
        "effectiveDateTime": f"{day}T09:30:00+08:00",
        "valueQuantity": {"value": 1.2, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"},
    }


def test_a_lab_deleted_on_the_server_is_removed_by_the_next_incremental_pull(
    client: FhirClient, isolated_settings: Settings, subset: Callable[..., Path], tmp_path: Path
) -> None:
    data, report = load_trial(subset(1), pack=isolated_settings.pack)
    output = tmp_path / "labs.csv"
    with Journal(tmp_path / "journal.sqlite") as journal:
        push_trial(TrialSource.loaded(data, report), client, journal, source="test", settings=isolated_settings)
        patient = next(e for e in journal.entries(client.base_url).values() if e.resource_type == "Patient")
        baseline = next(v.record.visit_date for v in data.visits if v.record.visit_code == "BL")
        lab = client.create(hospital_creatinine(f"Patient/{patient.server_id}", baseline.isoformat()))
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
