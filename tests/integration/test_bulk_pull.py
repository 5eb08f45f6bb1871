"""``pull --bulk`` on HAPI FHIR (its Bulk Data $export as shipped): the same lab table as the search-based pull.

Four subjects of the example trial are pushed once for the module (about 1,700 Observations; the whole trial
took HAPI 45 s to take in and a minute per export, for nothing four subjects do not show), with labs a hospital
system wrote beside them; each test pulls them by search and through an export at one level (patient, group,
system) and compares the two tables byte for byte. HAPI 8.8
answers every poll with ``Retry-After: 120`` whatever the job's progress; the pulls here honour it up to one
second (``--poll-max-wait 1``), which is what that option is for.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from support import example_subset, isolated_mappings_copy
from typer.testing import CliRunner

from fhir_lupus import load_trial
from fhir_lupus.cli import app
from fhir_lupus.client import ExportStatus, FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.model import TrialData
from fhir_lupus.pull import BulkOptions, PullResult, pull_study
from fhir_lupus.push import push_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("server_url", ["hapi"], indirect=True)]
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
HOSPITAL = "urn:oid:1.2.156.112604.1.2.1"  # the lab system's accession numbers
LOCAL = "urn:oid:1.2.156.112604.1.2.3"  # its own test codes
SUBJECTS = 4


@dataclass(frozen=True)
class Pushed:
    data: TrialData
    mappings: Path
    patients: list[str]
    pushed_at: str

    @property
    def settings(self) -> Settings:
        return Settings.from_mappings(self.mappings)


def hospital_results(patient: str, when: date) -> list[dict[str, Any]]:
    """What a hospital LIS wrote for the patient: US units, its codes and identifiers, statuses of its own."""
    lab = [{"coding": [{"system": CATEGORY, "code": "laboratory"}]}]

    def result(accession: str, status: str, codings: list[dict[str, str]], category: Any, value: Any) -> dict[str, Any]:
        observation = {
            "resourceType": "Observation",
            "identifier": [{"system": HOSPITAL, "value": accession}],
            "status": status,
            "code": {"coding": codings},
            "subject": {"reference": patient},
            "effectiveDateTime": f"{when.isoformat()}T09:30:00+08:00",
            **value,
        }
        if category:
            observation["category"] = category
        return observation

    creatinine = [{"system": LOCAL, "code": "CREA"}, {"system": LOINC, "code": "2160-0"}]
    mg_dl = {"valueQuantity": {"value": 1.2, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"}}
    return [
        result("ACC-1", "final", creatinine, lab, mg_dl),
        result(
            "ACC-2",
            "final",
            [{"system": LOINC, "code": "4485-9"}],
            None,
            {"valueQuantity": {"value": 0.7, "unit": "g/L", "system": UCUM, "code": "g/L"}},
        ),
        result(
            "ACC-3", "final", [{"system": LOCAL, "code": "ESR"}], lab, {"valueQuantity": {"value": 20, "unit": "mm/h"}}
        ),
        result("ACC-4", "preliminary", creatinine, lab, mg_dl),
    ]


def baseline(data: TrialData, subject: str) -> date:
    """The subject's BL visit day: hospital results of that day fall in the BL window."""
    return next(
        v.record.visit_date for v in data.visits if v.record.subject_id == subject and v.record.visit_code == "BL"
    )


@pytest.fixture(scope="module")
def pushed(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushed]:
    """Four subjects of the example trial pushed under identifier systems of this module, plus hospital labs."""
    root = tmp_path_factory.mktemp("bulk")
    mappings = isolated_mappings_copy(root / "mappings", f"t/{uuid.uuid4().hex[:12]}")
    settings = Settings.from_mappings(mappings)
    data, report = load_trial(example_subset(root / "example", SUBJECTS), pack=settings.pack)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    with FhirClient(server_url, timeout=120) as client, Journal(root / "push.sqlite") as journal:
        push_trial(TrialSource.loaded(data, report), client, journal, source="test", settings=settings)
        subject_system = settings.pack.identifier_system("subject", study=data.study.nct_id)
        patients = [
            next(client.search("ResearchSubject", {"identifier": f"{subject_system}|{subject}"}))["individual"][
                "reference"
            ]
            for subject in sorted({s.record.subject_id for s in data.subjects})
        ]
        for observation in hospital_results(patients[0], baseline(data, "MSC-001")):
            client.create(observation)
    yield Pushed(data, mappings, patients, started)


def search_pull(client: FhirClient, pushed: Pushed, out: Path, **kwargs: Any) -> PullResult:
    with Journal(out.with_suffix(".sqlite")) as journal:
        return pull_study(client, journal, pushed.data.study, output=out, settings=pushed.settings, **kwargs)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def same_tables(one: Path, other: Path) -> None:
    assert one.read_text(encoding="utf-8") == other.read_text(encoding="utf-8")
    unmapped = one.with_suffix(".unmapped.csv"), other.with_suffix(".unmapped.csv")
    assert unmapped[0].read_text(encoding="utf-8") == unmapped[1].read_text(encoding="utf-8")


def test_pull_bulk_gives_the_lab_table_of_the_search_pull_on_the_example_data(
    client: FhirClient, pushed: Pushed, server_url: str, tmp_path: Path
) -> None:
    searched = search_pull(client, pushed, tmp_path / "search.csv", since=None)
    journal = tmp_path / "bulk.sqlite"
    command = ["pull", "--server", server_url, "-o", str(tmp_path / "bulk.csv"), "--journal", str(journal)]
    command += ["--mappings", str(pushed.mappings), "--bulk", "--poll-max-wait", "1"]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    same_tables(tmp_path / "bulk.csv", tmp_path / "search.csv")
    ours = len(pushed.data.labs) + len(pushed.data.treg)
    assert searched.total_rows == ours + 2 == len(rows(tmp_path / "bulk.csv"))  # + ACC-1 (mg/dL) and ACC-2
    unmapped = {row["result_id"]: row["reason"] for row in rows(tmp_path / "bulk.unmapped.csv")}
    assert set(unmapped) == {f"{HOSPITAL}|ACC-3", f"{HOSPITAL}|ACC-4"}
    assert "bulk export (patient level, kicked off)" in result.output
    creatinine = next(row for row in rows(tmp_path / "bulk.csv") if row["result_id"] == f"{HOSPITAL}|ACC-1")
    assert (creatinine["unit"], creatinine["reported_value"], creatinine["reported_unit"]) == ("umol/L", "1.2", "mg/dL")
    assert float(creatinine["value"]) == pytest.approx(1.2 * 88.4, rel=1e-3)  # creatinine: 113.12 g/mol

    # a correction and a new result from the hospital: the next pulls ask only what changed (_since), and agree
    with Journal(journal) as book:
        mark = book.high_water(client.base_url, pushed.data.study.nct_id)
    assert mark is not None
    acc1 = next(client.search("Observation", {"identifier": f"{HOSPITAL}|ACC-1", "patient": pushed.patients[0]}))
    client.put(
        f"Observation/{acc1['id']}",
        {**acc1, "status": "amended", "valueQuantity": {**acc1["valueQuantity"], "value": 1.3}},
    )
    new = hospital_results(pushed.patients[1], baseline(pushed.data, "MSC-002"))[0]
    client.create({**new, "identifier": [{"system": HOSPITAL, "value": "ACC-5"}]})
    search_pull(client, pushed, tmp_path / "search.csv")
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    assert "since: the beginning" not in result.output
    same_tables(tmp_path / "bulk.csv", tmp_path / "search.csv")
    corrected = {row["result_id"]: row for row in rows(tmp_path / "bulk.csv")}
    assert float(corrected[f"{HOSPITAL}|ACC-1"]["value"]) == pytest.approx(1.3 * 88.4, rel=1e-3)
    assert corrected[f"{HOSPITAL}|ACC-1"]["status"] == "amended" and f"{HOSPITAL}|ACC-5" in corrected


def test_group_level_export_of_an_actual_group_and_a_resumed_job(
    client: FhirClient, pushed: Pushed, tmp_path: Path
) -> None:
    search_pull(client, pushed, tmp_path / "search.csv", since=None)
    # the trial's cohort as a hospital keeps it: an actual Group of the enrolled Patients (ours is definitional)
    group = client.create(
        {
            "resourceType": "Group",
            "type": "person",
            "actual": True,
            "name": "NCT00698191 enrolled",
            "member": [{"entity": {"reference": ref}} for ref in pushed.patients],
        }
    )

    def interrupt(status: ExportStatus) -> None:
        raise KeyboardInterrupt

    by_group = BulkOptions(level="group", group_id=group["id"], max_poll_wait=1.0, on_poll=interrupt)
    with Journal(tmp_path / "bulk.sqlite") as journal:
        with pytest.raises(KeyboardInterrupt):  # stopped while HAPI builds the export
            pull_study(client, journal, pushed.data.study, since=None, settings=pushed.settings, bulk=by_group)
        job = journal.bulk_export(client.base_url, pushed.data.study.nct_id)
        assert job is not None and "$export-poll-status" in job.status_url
        resumed = pull_study(
            client,
            journal,
            pushed.data.study,
            since=None,
            output=tmp_path / "bulk.csv",
            settings=pushed.settings,
            bulk=BulkOptions(level="group", group_id=group["id"], max_poll_wait=1.0),
        )
        assert journal.bulk_export(client.base_url, pushed.data.study.nct_id) is None
    assert resumed.bulk is not None and resumed.bulk.resumed and resumed.bulk.status_url == job.status_url
    same_tables(tmp_path / "bulk.csv", tmp_path / "search.csv")


def test_system_level_export_since_a_moment_takes_only_the_studys_subjects(
    client: FhirClient, pushed: Pushed, tmp_path: Path
) -> None:
    searched = search_pull(client, pushed, tmp_path / "search.csv", since=pushed.pushed_at)
    with Journal(tmp_path / "bulk.sqlite") as journal:
        bulk = BulkOptions(level="system", max_poll_wait=1.0)
        pulled = pull_study(
            client,
            journal,
            pushed.data.study,
            since=pushed.pushed_at,
            output=tmp_path / "bulk.csv",
            settings=pushed.settings,
            bulk=bulk,
        )
    same_tables(tmp_path / "bulk.csv", tmp_path / "search.csv")
    assert pulled.total_rows == searched.total_rows >= len(pushed.data.labs) + len(pushed.data.treg)  # + hospital
    assert pulled.bulk is not None and pulled.bulk.level == "system"
