"""Pull in one pass per subject (fake server, respx): every lab fetched once, nothing today's pull finds lost.

Before this, pull searched each patient's labs twice, by catalogue code list and by the laboratory category,
and de-duplicated; so every lab was fetched twice. Now the category search and a ``code=...&category:not=...``
search are disjoint. What they must find together is exactly what the two old searches found: every
Observation of the patient with a catalogue code (whatever its category, or none) or the laboratory
category (whatever its code). These tests count what the fake server sent back, per Observation id.
"""

from __future__ import annotations

import csv
import gc
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakefhir import BASE, FakeFhir

from fhir_lupus import load_trial
from fhir_lupus.client import Capabilities, FhirClient, RetryPolicy
from fhir_lupus.model import TrialData
from fhir_lupus.sync import Journal, PullResult, UnmappedResult, pull_study, pullstore, push_trial
from fhir_lupus.sync.reverse import code_index, load_pull_rules
from fhir_lupus.sync.search import Search, matches
from fhir_lupus.terminology import LabCatalogue, load_pack

LOINC = "http://loinc.org"
LOCAL = "urn:oid:1.2.156.112604.1.2.3"  # a hospital lab system's own test codes
HOSPITAL = "urn:oid:1.2.156.112604.1.2.1"  # its accession numbers


def client() -> FhirClient:
    return FhirClient(BASE, retry=RetryPolicy(attempts=1))


def category_token() -> str:
    rules, pack = load_pull_rules(), load_pack()
    return f"{pack.system_uri(rules.lab_category.system)}|{rules.lab_category.code}"


def sent_back(fake: FakeFhir, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times each Observation id left the fake server in a search answer."""
    counts: Counter[str] = Counter()
    searchset = fake._searchset

    def counting(resource_type: str, query: str) -> dict[str, Any]:
        page = searchset(resource_type, query)
        if resource_type == "Observation":
            counts.update(str(e["resource"]["id"]) for e in page["entry"])
        return page

    monkeypatch.setattr(fake, "_searchset", counting)
    return counts


def hospital_lab(patient: str, accession: str, code: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A final lab result as another system writes it: its own identifier, codings and unit, no Encounter."""
    return {
        "resourceType": "Observation",
        "identifier": [{"system": HOSPITAL, "value": accession}],
        "status": "final",
        "code": code,
        "subject": {"reference": patient},
        "effectiveDateTime": "2008-02-06T09:30:00+08:00",
        "valueQuantity": {"value": 0.8, "unit": "g/L", "system": "http://unitsofmeasure.org", "code": "g/L"},
        **extra,
    }


def plant_hospital_labs(fake: FakeFhir, category: str) -> dict[str, str]:
    """Labs of the first subject's patient the way other systems wrote them; accession -> what it is."""
    system, _, code = category.partition("|")
    lab_category = [{"coding": [{"system": system, "code": code}]}]
    patient = f"Patient/{fake.all('Patient')[0]['id']}"
    c3 = {"coding": [{"system": LOCAL, "code": "C3"}, {"system": LOINC, "code": "4485-9"}]}
    esr = {"coding": [{"system": LOCAL, "code": "ESR"}]}  # no catalogue code
    planted = {
        "NO-CATEGORY": hospital_lab(patient, "NO-CATEGORY", c3),  # catalogue code, no category at all
        "LOCAL-CATEGORY": hospital_lab(  # catalogue code, only a local category
            patient, "LOCAL-CATEGORY", c3, category=[{"coding": [{"system": LOCAL, "code": "CHEM"}]}]
        ),
        "ESR": hospital_lab(patient, "ESR", esr, category=lab_category),  # lab, outside the catalogue
        "VITAL": hospital_lab(  # neither: a vital sign, never a lab, never fetched by either old search
            patient,
            "VITAL",
            {"coding": [{"system": LOCAL, "code": "PULSE"}]},
            category=[{"coding": [{"system": system, "code": "vital-signs"}]}],
        ),
    }
    for observation in planted.values():
        fake.add(observation)
    return {accession: observation["code"]["coding"][-1]["code"] for accession, observation in planted.items()}


def old_union(fake: FakeFhir, catalogue: LabCatalogue, category: str) -> set[str]:
    """What the two old searches (code list; category) found together, for the enrolled subjects' patients."""
    codes = ",".join(sorted(code_index(catalogue)))
    return {
        str(o["id"]) for o in fake.all("Observation") if matches(o, "code", codes) or matches(o, "category", category)
    }


def pulled_ids(result: PullResult) -> set[str]:
    return {r.observation_id for r in result.rows} | {u.observation_id for u in result.unmapped}


@pytest.fixture
def trial(fake: FakeFhir, dataset: Callable[..., Path], tmp_path: Path) -> TrialData:
    data, report = load_trial(dataset())
    with client() as fhir, Journal(tmp_path / "push.sqlite") as journal:
        push_trial(data, report, fhir, journal, source="test")
    return data


def test_each_lab_is_fetched_once_and_nothing_the_two_old_searches_found_is_lost(
    fake: FakeFhir, trial: TrialData, catalogue: LabCatalogue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    category = category_token()
    planted = plant_hospital_labs(fake, category)
    fake.requests.clear()
    counts = sent_back(fake, monkeypatch)
    output = tmp_path / "labs.csv"
    with client() as fhir, Journal(tmp_path / "pull.sqlite") as journal:
        pulled = pull_study(fhir, journal, trial.study, since=None, output=output)
    assert counts and max(counts.values()) == 1 and pulled.refetched == 0  # no Observation sent twice
    assert pulled_ids(pulled) == old_union(fake, catalogue, category) == set(counts)
    by_accession = {r.result_id.rpartition("|")[2]: r for r in pulled.rows}
    # catalogue-coded results without the lab category are rows, as the old code search found them
    assert by_accession["NO-CATEGORY"].analyte == by_accession["LOCAL-CATEGORY"].analyte == "c3"
    # the lab outside the catalogue is reported, in the result and in labs.unmapped.csv
    with output.with_name("labs.unmapped.csv").open(encoding="utf-8", newline="") as handle:
        aside = {row["result_id"]: row for row in csv.DictReader(handle)}
    assert aside[f"{HOSPITAL}|ESR"]["reason"] == "no code of the lab catalogue"
    assert f"{HOSPITAL}|ESR" in {u.result_id for u in pulled.unmapped}
    # the vital sign was neither asked for nor sent
    vital = next(o["id"] for o in fake.all("Observation") if o["identifier"][0]["value"] == "VITAL")
    assert vital not in counts and planted["VITAL"] == "PULSE"
    # two disjoint searches per subject, nothing else
    searches = [p for m, p in fake.requests if m == "GET" and p.startswith("Observation?")]
    assert len(searches) == 2 * pulled.subjects
    assert sum("category:not=" in p for p in searches) == pulled.subjects


def test_next_links_are_followed_and_large_pages_asked_for(
    fake: FakeFhir, trial: TrialData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with client() as fhir, Journal(tmp_path / "whole.sqlite") as journal:
        whole = pull_study(fhir, journal, trial.study, since=None)
    fake.max_count = 2  # the server caps every page at 2: each subject's labs come in several pages
    fake.requests.clear()
    counts = sent_back(fake, monkeypatch)
    with client() as fhir, Journal(tmp_path / "paged.sqlite") as journal:
        paged = pull_study(fhir, journal, trial.study, since=None)
    assert sorted(map(repr, paged.rows)) == sorted(map(repr, whole.rows)) and paged.total_rows == 12
    assert max(counts.values()) == 1 and sum(counts.values()) == paged.fetched
    observation_gets = [p for m, p in fake.requests if p.startswith("Observation?")]
    assert sum("_offset=" in p for p in observation_gets) >= 4  # next links followed
    assert all("_count=1000" in p for p in observation_gets if "_offset=" not in p)


def test_a_server_that_refuses_category_not_gives_the_same_rows(
    fake: FakeFhir, trial: TrialData, tmp_path: Path
) -> None:
    plant_hospital_labs(fake, category_token())
    with client() as fhir, Journal(tmp_path / "a.sqlite") as journal:
        expected = pull_study(fhir, journal, trial.study, since=None)
    fake.refuse_not = True
    fake.requests.clear()
    with client() as fhir, Journal(tmp_path / "b.sqlite") as journal:
        refused = pull_study(fhir, journal, trial.study, since=None)
    assert pulled_ids(refused) == pulled_ids(expected) and refused.total_rows == expected.total_rows
    assert any("category:not is refused" in note for note in refused.fallbacks)
    assert refused.refetched > 0  # the old way: labs with a catalogue code fetched by both searches
    # the refusal is remembered for the pull: one refused request, not one per subject
    assert sum("category:not=" in p for _, p in fake.requests) == 1


def test_a_server_without_code_or_category_searches_once_per_subject(
    fake: FakeFhir, trial: TrialData, catalogue: LabCatalogue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    category = category_token()
    plant_hospital_labs(fake, category)
    fake.search_params = {"Observation": ("identifier", "patient", "subject", "date")}
    fake.requests.clear()
    counts = sent_back(fake, monkeypatch)
    with client() as fhir, Journal(tmp_path / "j.sqlite") as journal:
        pulled = pull_study(fhir, journal, trial.study, since=None)
    searches = [p for m, p in fake.requests if p.startswith("Observation?")]
    assert len(searches) == pulled.subjects == 2 and max(counts.values()) == 1
    assert pulled_ids(pulled) == old_union(fake, catalogue, category)  # the vital sign came, and was left out
    assert {n.split(" is ")[0] for n in pulled.fallbacks} >= {"Observation?code", "Observation?category"}


def test_subjects_fetched_concurrently_give_the_same_result(fake: FakeFhir, trial: TrialData, tmp_path: Path) -> None:
    plant_hospital_labs(fake, category_token())
    results = []
    for workers in (1, 3):
        with client() as fhir, Journal(tmp_path / f"w{workers}.sqlite") as journal:
            results.append(pull_study(fhir, journal, trial.study, since=None, workers=workers))
    serial, parallel = results
    assert parallel.rows == serial.rows and parallel.unmapped == serial.unmapped  # the same order, too
    assert (parallel.high_water, parallel.subjects, parallel.fetched) == (
        serial.high_water,
        serial.subjects,
        serial.fetched,
    )


def test_the_merge_reads_the_stage_in_batches_and_loses_nothing_at_their_edges(
    fake: FakeFhir, trial: TrialData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant_hospital_labs(fake, category_token())
    with client() as fhir, Journal(tmp_path / "one.sqlite") as journal:
        whole = pull_study(fhir, journal, trial.study, since=None, output=tmp_path / "one.csv")
    monkeypatch.setattr(pullstore, "MERGE_BATCH", 2)
    monkeypatch.setattr(pullstore, "SPOOL_IN_MEMORY", 3)  # most of the new rows wait on disk
    with client() as fhir, Journal(tmp_path / "two.sqlite") as journal:
        batched = pull_study(fhir, journal, trial.study, since=None, output=tmp_path / "two.csv")
    assert batched.rows == whole.rows and batched.unmapped == whole.unmapped and len(whole.rows) == 14
    assert (tmp_path / "one.csv").read_text() == (tmp_path / "two.csv").read_text()


def test_a_spool_reads_like_a_list_and_removes_its_file() -> None:
    records = [
        UnmappedResult("MSC-001", f"o{i}", "urn:x|1", "1", "2008-01-01", "no code of the lab catalogue")
        for i in range(5)
    ]
    spool = pullstore.Spool(UnmappedResult, in_memory=2)
    for record in records:
        spool.append(record)
    assert len(spool) == 5 and list(spool) == records and spool == records and spool != records[:4]
    assert (spool[0], spool[3], spool[-1], spool[1:3]) == (records[0], records[3], records[4], records[1:3])
    assert list(zip(spool, spool, strict=True))[4] == (records[4], records[4])  # two readers at once
    with pytest.raises(IndexError):
        spool[5]
    spilled = Path(str(spool._path))
    assert spilled.exists()
    del spool
    gc.collect()
    assert not spilled.exists()


def test_the_negated_token_reads_like_a_server() -> None:
    category = category_token()
    system, _, code = category.partition("|")
    lab = {"category": [{"coding": [{"system": system, "code": code}, {"system": LOCAL, "code": "CHEM"}]}]}
    other = {"category": [{"coding": [{"system": LOCAL, "code": "CHEM"}]}]}
    assert not matches(lab, "category:not", category) and matches(other, "category:not", category)
    assert matches({}, "category:not", category)  # no category at all: not laboratory
    plain = Capabilities.from_statement(
        {
            "rest": [
                {
                    "mode": "server",
                    "resource": [
                        {
                            "type": "Observation",
                            "interaction": [{"code": "search-type"}],
                            "searchParam": [{"name": "patient"}],
                        }
                    ],
                }
            ]
        }
    )
    search = Search("Observation").where(plain, **{"category:not": category})
    assert search.query() == {} and search.local == (("category:not", category),)
    assert search.fallbacks == ("Observation?category is filtered here: the server does not search by it",)
