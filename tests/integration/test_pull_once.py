"""Pull's one pass on real servers: ``category:not`` does what the fake server does, no lab comes twice.

The unit tests (tests/test_pull_passes.py) prove the search plan on the fake server; this proves that HAPI
and Medplum read ``category:not=...`` as FHIR says (results without that category, those with no category
at all included), which is what keeps results with a catalogue code but without the lab category.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
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
from fhir_lupus.terminology import load_pack

pytestmark = pytest.mark.integration
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
LOCAL = "urn:oid:1.2.156.112604.1.2.3"  # the lab system's own test codes
HOSPITAL = "urn:oid:1.2.156.112604.1.2.1"  # its accession numbers


def written_elsewhere(patient: str, accession: str, code: str, category: list[dict[str, Any]] | None) -> dict[str, Any]:
    codings = [{"system": LOCAL, "code": code}] + ([{"system": LOINC, "code": "4485-9"}] if code == "C3" else [])
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": HOSPITAL, "value": accession}],
        "status": "final",
        "code": {"coding": codings},
        "subject": {"reference": patient},
        "effectiveDateTime": "2008-06-02T09:30:00+08:00",
        "valueQuantity": {"value": 0.7, "unit": "g/L", "system": UCUM, "code": "g/L"},
    }
    if category is not None:
        observation["category"] = category
    return observation


def test_every_lab_once_and_catalogue_codes_without_the_lab_category_kept(
    client: FhirClient, isolated_settings: Settings, subset: Callable[..., Path], tmp_path: Path
) -> None:
    data, report = load_trial(subset(1, first=3), pack=isolated_settings.pack)
    with Journal(tmp_path / "journal.sqlite") as journal:
        push_trial(TrialSource.loaded(data, report), client, journal, source="test", settings=isolated_settings)
        patient = next(
            f"Patient/{e.server_id}" for e in journal.entries(client.base_url).values() if e.resource_type == "Patient"
        )
        lab = [{"coding": [{"system": CATEGORY, "code": "laboratory"}]}]
        for accession, code, category in [
            ("NO-CATEGORY", "C3", None),
            ("LOCAL-CATEGORY", "C3", [{"coding": [{"system": LOCAL, "code": "CHEM"}]}]),
            ("ESR", "ESR", lab),
            ("VITAL", "PULSE", [{"coding": [{"system": CATEGORY, "code": "vital-signs"}]}]),
        ]:
            client.create(written_elsewhere(patient, accession, code, category))
        pulled = pull_study(client, journal, data.study, since=None, settings=isolated_settings)
    assert pulled.refetched == 0 and pulled.fallbacks == []  # the server took category:not; nothing came twice
    rows = {r.result_id: r for r in pulled.rows}
    assert rows[f"{HOSPITAL}|NO-CATEGORY"].analyte == rows[f"{HOSPITAL}|LOCAL-CATEGORY"].analyte == "c3"
    aside = {u.result_id: u.reason for u in pulled.unmapped}
    assert aside[f"{HOSPITAL}|ESR"] == "no code of the lab catalogue" and f"{HOSPITAL}|VITAL" not in aside
    assert pulled.total_rows == len(data.labs) + len(data.treg) + 2


def test_the_catalogue_code_search_for_a_group_of_patients_keeps_each_subjects_floor(
    client: FhirClient,
    isolated_mappings: Path,
    isolated_settings: Settings,
    subset: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three subjects: the first searched alone, the other two together (``patient=Patient/a,Patient/b``,
    which HAPI and Medplum both take with ``category:not``); the group asks the earlier of their floors, and
    each subject's own floor (90 days before its BL visit) is applied to what comes back."""
    data, report = load_trial(subset(3), pack=isolated_settings.pack)
    pack = load_pack(isolated_mappings)
    subject_system = pack.identifier_system("subject", study=data.study.nct_id)
    visits = [v.record for v in data.visits]
    floors = {v.subject_id: v.visit_date - timedelta(days=90) for v in visits if v.visit_code == "BL"}
    assert len(set(floors.values())) == 3
    sent: list[str] = []
    send = FhirClient._send_raw

    def spy(self: FhirClient, method: str, path: str, **kwargs: Any) -> Any:
        params = kwargs.get("params") or {}
        if "category:not" in params:
            sent.append(str(params[next(k for k in ("patient", "subject") if k in params)]))
        return send(self, method, path, **kwargs)

    with Journal(tmp_path / "journal.sqlite") as journal:
        push_trial(TrialSource.loaded(data, report), client, journal, source="test", settings=isolated_settings)
        for subject, floor in floors.items():
            found = client.search("ResearchSubject", {"identifier": f"{subject_system}|{subject}"})
            patient = next(iter(found))["individual"]["reference"]
            for accession, day in ((f"ON-{subject}", floor), (f"BEFORE-{subject}", floor - timedelta(days=1))):
                client.create({**written_elsewhere(patient, accession, "C3", None), "effectiveDateTime": str(day)})
        monkeypatch.setattr(FhirClient, "_send_raw", spy)
        pulled = pull_study(client, journal, data.study, since=None, settings=isolated_settings)
    assert sorted(len(patients.split(",")) for patients in sent) == [1, 2]
    assert pulled.refetched == 0 and pulled.fallbacks == []
    planted = {r.result_id.rpartition("|")[2]: r.subject_id for r in pulled.rows if r.result_id.startswith(HOSPITAL)}
    assert planted == {f"ON-{subject}": subject for subject in floors}  # none from before its subject's floor
