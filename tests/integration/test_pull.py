"""Pull against real servers: labs a hospital system wrote, statuses, incremental merges, a failed output."""

from __future__ import annotations

import csv
from collections.abc import Callable
from datetime import date, timedelta
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
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
HOSPITAL = "urn:oid:1.2.156.112604.1.2.1"  # the lab system's accession numbers
LOCAL = "urn:oid:1.2.156.112604.1.2.3"  # the lab system's own test codes


def hospital_lab(
    patient: str, accession: str, status: str, when: date, loinc: str | None, local: str, value: dict[str, Any]
) -> dict[str, Any]:
    """A lab result as a hospital LIS writes it: its identifiers and codes, US units, no Encounter."""
    codings = [{"system": LOCAL, "code": local, "display": local}]
    if loinc:
        codings.append({"system": LOINC, "code": loinc})
    return {
        "resourceType": "Observation",
        "identifier": [{"system": HOSPITAL, "value": accession}],
        "status": status,
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}
        ],
        "code": {"coding": codings, "text": local},
        "subject": {"reference": patient},
        "effectiveDateTime": f"{when.isoformat()}T09:30:00+08:00",
        **value,
    }


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_labs_the_hospital_wrote_statuses_and_later_corrections(
    client: FhirClient, isolated_settings: Settings, subset: Callable[..., Path], tmp_path: Path
) -> None:
    data, report = load_trial(subset(1), pack=isolated_settings.pack)
    baseline = next(v.record.visit_date for v in data.visits if v.record.visit_code == "BL")
    month3 = data.study.due_date(baseline, 3) + timedelta(days=1)
    output = tmp_path / "labs.csv"
    with Journal(tmp_path / "journal.sqlite") as journal:
        push_trial(TrialSource.loaded(data, report), client, journal, source="test", settings=isolated_settings)
        first = pull_study(client, journal, data.study, since=None, output=output, settings=isolated_settings)
        ours = len(data.labs) + len(data.treg)
        assert first.total_rows == ours == len(rows_of(output))

        patient = _patient_of(client, journal)
        made = {}
        for accession, status, loinc, local, value in [
            (
                "ACC-1",
                "final",
                "2160-0",
                "CREA",
                {
                    "valueQuantity": {"value": 1.2, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"},
                    "referenceRange": [{"high": {"value": 1.1, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"}}],
                },
            ),
            (
                "ACC-2",
                "final",
                "5130-0",
                "DSDNA",
                {
                    "valueQuantity": {
                        "value": 800,
                        "comparator": ">",
                        "unit": "IU/mL",
                        "system": UCUM,
                        "code": "[IU]/mL",
                    }
                },
            ),
            ("ACC-3", "entered-in-error", "4485-9", "C3", {"valueQuantity": {"value": 0.5, "unit": "g/L"}}),
            ("ACC-4", "cancelled", "4485-9", "C3", {"valueQuantity": {"value": 0.6, "unit": "g/L"}}),
            ("ACC-5", "preliminary", "4498-2", "C4", {"valueQuantity": {"value": 0.05, "unit": "g/L"}}),
            ("ACC-6", "final", None, "ESR", {"valueQuantity": {"value": 35, "unit": "mm/h"}}),
        ]:
            made[accession] = client.create(hospital_lab(patient, accession, status, month3, loinc, local, value))

        second = pull_study(client, journal, data.study, since="auto", output=output, settings=isolated_settings)
        new = {r.result_id: r for r in second.rows}
        assert set(new) == {f"{HOSPITAL}|ACC-1", f"{HOSPITAL}|ACC-2"}
        creatinine = new[f"{HOSPITAL}|ACC-1"]
        assert (creatinine.analyte, creatinine.value, creatinine.unit, creatinine.ref_high) == (
            "creatinine",
            "106.082",
            "umol/L",
            "97.2419",
        )
        assert (creatinine.visit_code, creatinine.window, creatinine.status) == ("M03", "in-window", "final")
        assert new[f"{HOSPITAL}|ACC-2"].value == ">800" and new[f"{HOSPITAL}|ACC-2"].unit == "[IU]/mL"
        aside = {u.result_id: u for u in second.unmapped}
        assert "withdrawn" in aside[f"{HOSPITAL}|ACC-3"].reason and "withdrawn" in aside[f"{HOSPITAL}|ACC-4"].reason
        assert aside[f"{HOSPITAL}|ACC-5"].status == "preliminary" and "not final" in aside[f"{HOSPITAL}|ACC-5"].reason
        assert aside[f"{HOSPITAL}|ACC-6"].reason == "no code of the lab catalogue"
        assert second.total_rows == ours + 2 == len(rows_of(output))  # the earlier rows are kept

        # the lab withdraws the creatinine and finalises the C4
        client.put(f"Observation/{made['ACC-1']['id']}", {**made["ACC-1"], "status": "entered-in-error"})
        client.put(f"Observation/{made['ACC-5']['id']}", {**made["ACC-5"], "status": "final"})
        third = pull_study(client, journal, data.study, since="auto", output=output, settings=isolated_settings)
        assert [r.result_id for r in third.removed] == [f"{HOSPITAL}|ACC-1"]
        assert [r.result_id for r in third.rows] == [f"{HOSPITAL}|ACC-5"]
        written = rows_of(output)
        assert len(written) == ours + 2 and f"{HOSPITAL}|ACC-1" not in {r["result_id"] for r in written}
        unmapped = rows_of(output.with_name("labs.unmapped.csv"))
        assert {r["result_id"] for r in unmapped} >= {f"{HOSPITAL}|ACC-1", f"{HOSPITAL}|ACC-3"}
        assert f"{HOSPITAL}|ACC-5" not in {r["result_id"] for r in unmapped}


def test_the_mark_moves_only_after_the_output_is_written(
    client: FhirClient, isolated_settings: Settings, subset: Callable[..., Path], tmp_path: Path
) -> None:
    data, report = load_trial(subset(1, first=3), pack=isolated_settings.pack)
    with Journal(tmp_path / "journal.sqlite") as journal:
        push_trial(TrialSource.loaded(data, report), client, journal, source="test", settings=isolated_settings)
        blocked = tmp_path / "blocked.csv"
        blocked.mkdir()
        with pytest.raises(OSError):
            pull_study(client, journal, data.study, since="auto", output=blocked, settings=isolated_settings)
        assert journal.high_water(client.base_url, data.study.nct_id) is None
        output = tmp_path / "labs.csv"
        done = pull_study(client, journal, data.study, since="auto", output=output, settings=isolated_settings)
        ours = len(data.labs) + len(data.treg)
        assert done.total_rows == ours == len(rows_of(output)) and done.high_water
        again = pull_study(client, journal, data.study, since="auto", output=output, settings=isolated_settings)
        # ge the mark (minus the overlap): everything is fetched again, nothing is new, nothing is lost
        assert again.rows == [] and again.unchanged >= 1 and again.total_rows == ours
        assert len(rows_of(output)) == ours


def _patient_of(client: FhirClient, journal: Journal) -> str:
    entries = [e for e in journal.entries(client.base_url).values() if e.resource_type == "Patient"]
    assert len(entries) == 1 and entries[0].server_id
    return f"Patient/{entries[0].server_id}"
