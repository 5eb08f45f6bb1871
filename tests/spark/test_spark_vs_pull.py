"""The Spark table equals the search-based pull's, byte for byte, on what a real HAPI FHIR server returns.

Runs when FHIR_LUPUS_HAPI_URL names a running HAPI (``FHIR_LUPUS_HAPI_URL=... make test-spark``): two subjects
of the example are pushed under identifier systems of this run, with results a hospital system wrote beside
them (US units, its own codes and accession numbers, a preliminary result); ``pull`` writes its table; the same
resources, fetched by search and written as NDJSON with the server's own JSON (``meta.lastUpdated`` and
``versionId`` as HAPI writes them), go through ``spark_labs``; the two CSV files must be the same bytes.
"""

from __future__ import annotations

import csv
import os
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from support import example_subset, isolated_mappings_copy

from fhir_lupus import load_trial
from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.pull import pull_study
from fhir_lupus.pull._reverse import PulledLab, UnmappedResult
from fhir_lupus.push import push_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.spark import spark_labs
from fhir_lupus.terminology import LabCatalogue, load_pack

HAPI = os.environ.get("FHIR_LUPUS_HAPI_URL")
pytestmark = pytest.mark.skipif(not HAPI, reason="FHIR_LUPUS_HAPI_URL names no running HAPI FHIR server")
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
HOSPITAL = "urn:oid:1.2.156.112604.1.2.1"  # the lab system's accession numbers
LOCAL = "urn:oid:1.2.156.112604.1.2.3"  # its own test codes


def hospital_result(patient: str, accession: str, status: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "identifier": [{"system": HOSPITAL, "value": accession}],
        "status": status,
        "category": [{"coding": [{"system": CATEGORY, "code": "laboratory"}]}],
        "code": {"coding": [{"system": LOCAL, "code": "CREA"}, {"system": LOINC, "code": "2160-0"}]},
        "subject": {"reference": patient},
        "effectiveDateTime": "2007-06-20T09:30:00+08:00",
        **value,
    }


def test_spark_writes_the_table_pull_writes(spark: Any, tmp_path: Path) -> None:
    assert HAPI is not None
    mappings = isolated_mappings_copy(tmp_path / "mappings", f"t/{uuid.uuid4().hex[:12]}")
    data, report = load_trial(example_subset(tmp_path / "data", 2), pack=load_pack(mappings))
    pack = load_pack(mappings)
    with FhirClient(HAPI, timeout=120) as client, Journal(tmp_path / "journal.sqlite") as journal:
        push_trial(
            TrialSource.loaded(data, report), client, journal, source="test", settings=Settings.from_mappings(mappings)
        )
        studies = list(
            client.search(
                "ResearchStudy",
                {"identifier": f"{pack.identifier_system('study', study=data.study.nct_id)}|{data.study.nct_id}"},
            )
        )
        subjects = list(client.search("ResearchSubject", {"study": f"ResearchStudy/{studies[0]['id']}"}))
        patients = sorted({s["individual"]["reference"] for s in subjects})
        mg_dl = {"valueQuantity": {"value": 1.0, "unit": "mg/dL", "system": UCUM, "code": "mg/dL", "comparator": "<"}}
        client.create(hospital_result(patients[0], "ACC-1", "final", mg_dl))
        client.create(hospital_result(patients[0], "ACC-2", "preliminary", mg_dl))
        umol = {"valueQuantity": {"value": 88, "unit": "µmol/L", "system": UCUM, "code": "umol/L"}}
        client.create(hospital_result(patients[0], "ACC-3", "final", umol))  # a unit that does not fit 2160-0
        two = {"valueQuantity": {"value": 2, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"}}
        client.create(hospital_result(patients[0], "ACC-4", "final", two))
        pulled = pull_study(
            client,
            journal,
            data.study,
            since=None,
            output=tmp_path / "pull" / "labs.csv",
            settings=Settings.from_mappings(mappings),
        )
        assert pulled.outputs is not None
        export = tmp_path / "ndjson"
        export.mkdir()
        found: dict[str, list[dict[str, Any]]] = {"ResearchStudy": studies, "ResearchSubject": subjects}
        for kind in ("Observation", "Encounter", "Procedure"):
            found[kind] = [r for patient in patients for r in client.search(kind, {"patient": patient})]
        for kind, resources in found.items():
            (export / f"{kind}.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources))

    result = spark_labs(export, data.study, LabCatalogue(pack), tmp_path / "spark" / "labs.csv", spark=spark)
    pull_rows, pull_unmapped = pulled.outputs
    assert result.output.read_bytes() == pull_rows.read_bytes()
    assert result.unmapped_output.read_bytes() == pull_unmapped.read_bytes()
    assert result.rows == pulled.total_rows and result.unmapped == pulled.total_unmapped
    with result.output.open(encoding="utf-8", newline="") as handle:
        rows = [PulledLab(**row) for row in csv.DictReader(handle)]
    with result.unmapped_output.open(encoding="utf-8", newline="") as handle:
        unmapped = [UnmappedResult(**row) for row in csv.DictReader(handle)]
    reported = {r.result_id: r.reported_value for r in rows}
    assert reported[f"{HOSPITAL}|ACC-1"] == "<1.0" and reported[f"{HOSPITAL}|ACC-4"] == "2"
    aside = {u.result_id: (u.reason, u.value) for u in unmapped}
    assert aside[f"{HOSPITAL}|ACC-3"] == ("unit umol/L fits no catalogue code for 2160-0", "88 umol/L")
    assert all(r.last_updated and r.version_id for r in rows)  # the server's meta, as it wrote it

    parquet = spark_labs(export, data.study, LabCatalogue(pack), tmp_path / "spark" / "labs", spark=spark)
    written = [
        PulledLab(**r.asDict()) for r in spark.read.parquet(str(parquet.output)).drop("subject_bucket").collect()
    ]
    assert Counter(written) == Counter(rows) and len(written) == pulled.total_rows  # the Parquet rows: pull's too
