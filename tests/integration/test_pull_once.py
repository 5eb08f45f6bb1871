"""Pull's one pass on real servers: ``category:not`` does what the fake server does, no lab comes twice.

The unit tests (tests/test_pull_passes.py) prove the search plan on the fake server; this proves that HAPI
and Medplum read ``category:not=...`` as FHIR says (results without that category, those with no category
at all included), which is what keeps results with a catalogue code but without the lab category.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fhir_lupus import load_trial
from fhir_lupus.client import FhirClient
from fhir_lupus.sync import Journal, pull_study, push_trial

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
    client: FhirClient, isolated_mappings: Path, subset: Callable[..., Path], tmp_path: Path
) -> None:
    data, report = load_trial(subset(1, first=3), mappings_dir=isolated_mappings)
    with Journal(tmp_path / "journal.sqlite") as journal:
        push_trial(data, report, client, journal, source="test", mappings_dir=isolated_mappings)
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
        pulled = pull_study(client, journal, data.study, since=None, mappings_dir=isolated_mappings)
    assert pulled.refetched == 0 and pulled.fallbacks == []  # the server took category:not; nothing came twice
    rows = {r.result_id: r for r in pulled.rows}
    assert rows[f"{HOSPITAL}|NO-CATEGORY"].analyte == rows[f"{HOSPITAL}|LOCAL-CATEGORY"].analyte == "c3"
    aside = {u.result_id: u.reason for u in pulled.unmapped}
    assert aside[f"{HOSPITAL}|ESR"] == "no code of the lab catalogue" and f"{HOSPITAL}|VITAL" not in aside
    assert pulled.total_rows == len(data.labs) + len(data.treg) + 2
