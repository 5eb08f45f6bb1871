"""Subject lifecycle against real servers (HAPI FHIR JPA, Medplum): ResearchSubjects with their status history
are written once and found unchanged by a second push, and pull leaves out a person who was never enrolled."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fhir_lupus import load_trial
from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.pipeline import map_trial
from fhir_lupus.pull import pull_study
from fhir_lupus.push import push_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import load_pack

pytestmark = pytest.mark.integration


def test_status_history_pushes_idempotently_and_pull_skips_the_never_enrolled(
    client: FhirClient,
    isolated_mappings: Path,
    isolated_settings: Settings,
    subset: Callable[..., Path],
    tmp_path: Path,
) -> None:
    data, report = load_trial(subset(2, first=5), pack=isolated_settings.pack)  # MSC-006 withdrew, MSC-007 did not
    assert report.rejects == [] and sorted(data.status_history) == ["MSC-006", "MSC-007"]
    expected = len(map_trial(TrialSource.loaded(data, report), settings=isolated_settings).resources)
    pack = load_pack(isolated_mappings)
    history_url = pack.extension_url("status_history")
    subject_system = pack.identifier_system("subject", study=data.study.nct_id)

    with Journal(tmp_path / "journal.sqlite") as journal:
        first = push_trial(TrialSource.loaded(data, report), client, journal, source="test", settings=isolated_settings)
        assert first.complete and first.created == expected, first.summary()
        second = push_trial(
            TrialSource.loaded(data, report), client, journal, source="test", settings=isolated_settings
        )
        assert second.written == 0 and second.unchanged == expected and second.provenance is None

        stored = {
            subject_id: list(client.search("ResearchSubject", {"identifier": f"{subject_system}|{subject_id}"}))
            for subject_id in data.status_history
        }
        for subject_id, found in stored.items():
            assert len(found) == 1, subject_id
            history = [e for e in found[0].get("extension", []) if e["url"] == history_url]
            codes = [next(p["valueCode"] for p in e["extension"] if p["url"] == "status") for e in history]
            assert codes == [change.status for change in data.status_history[subject_id]]
            assert found[0]["status"] == codes[-1]
        assert stored["MSC-006"][0]["status"] == "withdrawn" and stored["MSC-006"][0]["period"]["end"]

        # a screened person who failed screening, written by another system under the same study
        patient = client.create(
            {"resourceType": "Patient", "identifier": [{"system": f"{subject_system}/screened", "value": "SCR-1"}]}
        )
        client.create(
            {
                "resourceType": "ResearchSubject",
                "identifier": [{"system": f"{subject_system}/screened", "value": "SCR-1"}],
                "status": "ineligible",
                "study": stored["MSC-006"][0]["study"],
                "individual": {"reference": f"Patient/{patient['id']}"},
            }
        )
        pulled = pull_study(client, journal, data.study, since=None, settings=isolated_settings)
        assert pulled.subjects == 2 and pulled.skipped_subjects == {"ineligible": 1}
        assert {row.subject_id for row in pulled.rows} == {"MSC-006", "MSC-007"}
