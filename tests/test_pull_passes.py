"""Pull in one pass per subject (fake server, respx): every lab fetched once, nothing today's pull finds lost.

Before this, pull searched each patient's labs twice, by catalogue code list and by the laboratory category,
and de-duplicated; so every lab was fetched twice. Now the category search and a ``code=...&category:not=...``
search are disjoint. What they must find together is exactly what the two old searches found: every
Observation of the patient with a catalogue code (whatever its category, or none) or the laboratory
category (whatever its code). These tests count what the fake server sent back, per Observation id.

The catalogue-code search is asked once for a group of subjects (``patient=Patient/a,Patient/b,...``: 1, then
8, then up to 40 at once); the tests at the end prove that the groups give what one search per subject gave,
each subject's own date floor included, and how a refused, too long or failing group search is handled.
"""

from __future__ import annotations

import csv
import gc
import threading
from collections import Counter
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from fakefhir import BASE, FakeFhir, Refusal

from fhir_lupus import load_trial
from fhir_lupus.client import Capabilities, FhirClient, RetryPolicy, TransientHttpError
from fhir_lupus.journal import Journal
from fhir_lupus.model import TrialData
from fhir_lupus.pull import PullResult, UnmappedResult, pull_study
from fhir_lupus.pull import _planner as planner
from fhir_lupus.pull import _runner as runner
from fhir_lupus.pull import _search_pass as search_pass
from fhir_lupus.pull import _spool as spool_module
from fhir_lupus.pull import _store as pullstore
from fhir_lupus.pull._reverse import code_index
from fhir_lupus.pull._search import Search, matches
from fhir_lupus.pull._selection import lab_category, reaches
from fhir_lupus.push import push_trial
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import LabCatalogue, load_pack

LOINC = "http://loinc.org"
LOCAL = "urn:oid:1.2.156.112604.1.2.3"  # a hospital lab system's own test codes
HOSPITAL = "urn:oid:1.2.156.112604.1.2.1"  # its accession numbers


def client() -> FhirClient:
    return FhirClient(BASE, retry=RetryPolicy(attempts=1))


def category_token() -> str:
    return lab_category(load_pack())


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
        push_trial(TrialSource.loaded(data, report), fhir, journal, source="test")
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
    monkeypatch.setattr(spool_module, "SPOOL_IN_MEMORY", 3)  # most of the new rows wait on disk
    with client() as fhir, Journal(tmp_path / "two.sqlite") as journal:
        batched = pull_study(fhir, journal, trial.study, since=None, output=tmp_path / "two.csv")
    assert batched.rows == whole.rows and batched.unmapped == whole.unmapped and len(whole.rows) == 14
    assert (tmp_path / "one.csv").read_text() == (tmp_path / "two.csv").read_text()


def test_a_spool_reads_like_a_list_and_removes_its_file() -> None:
    records = [
        UnmappedResult("MSC-001", f"o{i}", "urn:x|1", "1", "2008-01-01", "no code of the lab catalogue")
        for i in range(5)
    ]
    spool = spool_module.Spool(UnmappedResult, in_memory=2)
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


# -- the catalogue-code search for groups of subjects (issue 12, item 4) ------------------------------------------


def cohort(clones: int) -> Callable[[dict[str, list[dict[str, str]]]], None]:
    """Edit for ``dataset``: ``clones`` more subjects like MSC-002 (one BL visit, one lab), each day 0 ten days
    after the one before (so every subject has a date floor of its own)."""

    def edit(rows: dict[str, list[dict[str, str]]]) -> None:
        model = next(s for s in rows["subjects.csv"] if s["subject_id"] == "MSC-002")
        lab = next(r for r in rows["labs.csv"] if r["subject_id"] == "MSC-002")
        for k in range(3, 3 + clones):
            subject, day0 = f"MSC-{k:03d}", date(2008, 3, 1) + timedelta(days=10 * k)
            enrolled = (day0 - timedelta(days=2)).isoformat()
            rows["subjects.csv"].append(
                dict(model, subject_id=subject, pseudonym=f"P-{k:08x}", enrolled_on=enrolled, status="follow-up")
            )
            rows["subjects.csv"][-1].update(off_study_on="", off_study_reason="")
            rows["visits.csv"].append(dict(subject_id=subject, visit_code="BL", visit_date=day0.isoformat()))
            rows["labs.csv"].append(
                dict(lab, result_id=f"L-{k}", subject_id=subject, collected_at=f"{day0}T08:00:00+08:00")
            )

    return edit


def patients_of(fake: FakeFhir) -> dict[str, str]:
    """Subject id -> its Patient reference, read from the ResearchSubjects on the fake server."""
    return {
        next(i["value"] for i in rs["identifier"] if i["value"].startswith("MSC-")): rs["individual"]["reference"]
        for rs in fake.all("ResearchSubject")
    }


def negated_searches(fake: FakeFhir) -> list[dict[str, str]]:
    return [
        dict(parse_qsl(p.partition("?")[2]))
        for m, p in fake.requests
        if m == "GET" and p.startswith("Observation?") and "category:not=" in p and "_offset=" not in p
    ]


@pytest.fixture
def twelve(fake: FakeFhir, dataset: Callable[..., Path], tmp_path: Path) -> TrialData:
    data, report = load_trial(dataset(cohort(10)))
    assert report.rejects == [] and len(data.subjects) == 12
    with client() as fhir, Journal(tmp_path / "push.sqlite") as journal:
        push_trial(TrialSource.loaded(data, report), fhir, journal, source="test")
    return data


def plant_without_category(fake: FakeFhir, patient: str, accession: str, when: str) -> None:
    c3 = {"coding": [{"system": LOCAL, "code": "C3"}, {"system": LOINC, "code": "4485-9"}]}
    fake.add(hospital_lab(patient, accession, c3, effectiveDateTime=when))


def per_subject(monkeypatch: pytest.MonkeyPatch) -> None:
    """Today's plan before the groups: one catalogue-code search per subject."""
    monkeypatch.setattr(planner, "GROUP_MAX", 1)


@pytest.mark.parametrize("workers", [1, 3])
def test_the_catalogue_code_search_asks_for_groups_and_hands_each_result_to_its_subject(
    workers: int, fake: FakeFhir, twelve: TrialData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    patients = patients_of(fake)
    for subject in ("MSC-001", "MSC-005", "MSC-012"):  # the first group (alone), the second, the last
        plant_without_category(fake, patients[subject], f"NC-{subject}", "2008-06-02T09:30:00+08:00")
    fake.requests.clear()
    counts = sent_back(fake, monkeypatch)
    with client() as fhir, Journal(tmp_path / "grouped.sqlite") as journal:
        grouped = pull_study(fhir, journal, twelve.study, since=None, output=tmp_path / "grouped.csv", workers=workers)
    assert max(counts.values()) == 1 and grouped.refetched == 0  # nothing sent twice
    # 1, then 8, then the 3 left: three catalogue-code searches for twelve subjects, each naming its patients
    asked = negated_searches(fake)
    assert [len(q["patient"].split(",")) for q in asked] == [1, 8, 3]
    assert sorted(p for q in asked for p in q["patient"].split(",")) == sorted(patients.values())
    by_accession = {r.result_id.rpartition("|")[2]: r for r in grouped.rows}
    assert {a: by_accession[a].subject_id for a in by_accession if a.startswith("NC-")} == {
        "NC-MSC-001": "MSC-001",
        "NC-MSC-005": "MSC-005",
        "NC-MSC-012": "MSC-012",
    }
    # the same rows, the same files, as one search per subject
    per_subject(monkeypatch)
    fake.requests.clear()
    with client() as fhir, Journal(tmp_path / "single.sqlite") as journal:
        single = pull_study(fhir, journal, twelve.study, since=None, output=tmp_path / "single.csv")
    assert len(negated_searches(fake)) == 12
    assert single.rows == grouped.rows and single.unmapped == grouped.unmapped and single.fetched == grouped.fetched
    assert (tmp_path / "single.csv").read_text() == (tmp_path / "grouped.csv").read_text()


def test_each_subject_keeps_its_own_date_floor_and_since_in_a_group_search(
    fake: FakeFhir, twelve: TrialData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    patients = patients_of(fake)
    # MSC-005's day 0 is 2008-04-20, its floor 90 days before: 2008-01-21; its group asks from MSC-002's
    # floor (2007-11-05), so the first result comes back from the server and must be left out here
    plant_without_category(fake, patients["MSC-005"], "BEFORE-FLOOR", "2008-01-20T23:00:00+00:00")
    plant_without_category(fake, patients["MSC-005"], "ON-FLOOR", "2008-01-21")
    plant_without_category(fake, patients["MSC-002"], "EARLY-BUT-IN-REACH", "2007-12-01T09:30:00+08:00")
    results = {}
    for plan in ("grouped", "single"):
        if plan == "single":
            per_subject(monkeypatch)
        fake.requests.clear()
        with client() as fhir, Journal(tmp_path / f"{plan}.sqlite") as journal:
            results[plan] = pull_study(fhir, journal, twelve.study, since=None)
            floors = {q["patient"].count(",") + 1: q.get("date") for q in negated_searches(fake)}
            # incremental: a lab written now is all that --since brings, to its subject, in a group search too
            plant_without_category(fake, patients["MSC-009"], f"LATE-{plan}", "2008-06-02T09:30:00+08:00")
            fake.requests.clear()
            again = pull_study(fhir, journal, twelve.study, since="auto", overlap_seconds=0)
        assert [(r.result_id.rpartition("|")[2], r.subject_id) for r in again.rows] == [(f"LATE-{plan}", "MSC-009")]
        # the category searches ask the server for --since; the group searches apply it here (HAPI is slow
        # with _lastUpdated beside category:not), and the server sent back what it had without the category
        searches = [p for _, p in fake.requests if p.startswith("Observation?") and "category" in p]
        assert all(("_lastUpdated=ge" in p) == ("category=" in p) for p in searches)
        if plan == "grouped":
            assert floors[8] == "ge2007-11-05"  # the group's earliest floor
    grouped, single = results["grouped"], results["single"]
    accessions = {r.result_id.rpartition("|")[2] for r in grouped.rows}
    assert {"ON-FLOOR", "EARLY-BUT-IN-REACH"} <= accessions and "BEFORE-FLOOR" not in accessions
    assert grouped.rows == [r for r in single.rows if "LATE-" not in r.result_id]  # the late lab of the first run


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("2008-01-21T00:00:00Z", True),
        ("2008-01-20T23:59:59.999Z", False),
        ("2008-01-21T07:00:00+08:00", False),  # 2008-01-20T23:00Z
        ("2008-01-21", True),
        ("2008-01-20", False),
        ("2008-01", True),  # January 2008 lasts past the floor
        ("2007-12", False),
        ("2008", True),
        ("not a date", True),  # unreadable: kept
    ],
)
def test_a_subjects_own_floor_reads_dates_as_a_date_search_does(when: str, expected: bool) -> None:
    floor = date(2008, 1, 21)
    assert reaches({"effectiveDateTime": when}, floor) is expected
    assert reaches({"effectivePeriod": {"start": "2007-01-01", "end": when}}, floor) is expected
    assert reaches({"effectivePeriod": {"start": "2007-01-01"}}, floor)  # still going on
    assert not reaches({}, floor)  # no date at all: a date search never matches


def test_a_group_too_long_for_the_server_is_split_and_the_url_kept_short(
    fake: FakeFhir, twelve: TrialData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    searchset = fake._searchset
    limit = 1730  # the catalogue codes and four patients of the fake server (ids of 2 or 3 characters)

    def short_only(resource_type: str, query: str) -> dict[str, Any]:
        if len(query) > limit:
            raise Refusal(414, "URI Too Long")
        return searchset(resource_type, query)

    monkeypatch.setattr(fake, "_searchset", short_only)
    with client() as fhir, Journal(tmp_path / "a.sqlite") as journal:
        refused = pull_study(fhir, journal, twelve.study, since=None)
    sizes = [len(q["patient"].split(",")) for q in negated_searches(fake)]
    assert sizes == [1, 8, 4, 4, 3]  # 8 refused (414), asked as two halves; the groups stay at 4 from then on
    assert refused.total_rows == len(twelve.labs) + len(twelve.treg) and refused.fallbacks == []
    # a URL that would pass MAX_URL is not sent: the group is cut before, and nothing is refused
    fake.requests.clear()
    monkeypatch.setattr(planner, "MAX_URL", len(f"{BASE}/Observation?") + limit)
    with client() as fhir, Journal(tmp_path / "b.sqlite") as journal:
        cut = pull_study(fhir, journal, twelve.study, since=None)
    sizes = [len(q["patient"].split(",")) for q in negated_searches(fake)]
    assert sum(sizes) == 12 and cut.rows == refused.rows
    assert all(len(p.partition("?")[2]) <= limit for _, p in fake.requests)


def test_a_server_that_refuses_a_list_of_patients_is_asked_one_by_one(
    fake: FakeFhir, twelve: TrialData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant_without_category(fake, patients_of(fake)["MSC-007"], "NC-7", "2008-06-02T09:30:00+08:00")
    searchset = fake._searchset

    def one_patient(resource_type: str, query: str) -> dict[str, Any]:
        if "," in dict(parse_qsl(query)).get("patient", ""):
            raise Refusal(400, "Only one patient at a time")
        return searchset(resource_type, query)

    monkeypatch.setattr(fake, "_searchset", one_patient)
    with client() as fhir, Journal(tmp_path / "j.sqlite") as journal:
        pulled = pull_study(fhir, journal, twelve.study, since=None)
    sizes = [len(q["patient"].split(",")) for q in negated_searches(fake)]
    assert sizes == [1, 8] + [1] * 11  # refused once, then one subject at a time
    assert pulled.fallbacks == [] and pulled.refetched == 0
    assert "NC-7" in {r.result_id.rpartition("|")[2] for r in pulled.rows}


def test_many_results_without_the_category_stop_the_groups(
    fake: FakeFhir, twelve: TrialData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a hospital that never writes the category: HAPI answers a list of patients 20 times slower a result
    patients = patients_of(fake)
    for subject, patient in patients.items():
        for n in range(3):
            plant_without_category(fake, patient, f"{subject}-{n}", "2008-06-02T09:30:00+08:00")
    fake.requests.clear()
    counts = sent_back(fake, monkeypatch)
    with client() as fhir, Journal(tmp_path / "j.sqlite") as journal:
        pulled = pull_study(fhir, journal, twelve.study, since=None)
    assert [len(q["patient"].split(",")) for q in negated_searches(fake)] == [1] * 12
    assert max(counts.values()) == 1 and len([r for r in pulled.rows if r.result_id.count("-") == 2]) == 36


@pytest.mark.parametrize("workers", [1, 3])
def test_a_failed_group_search_fails_the_pull_as_a_subjects_search_did(
    workers: int, fake: FakeFhir, twelve: TrialData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    searchset = fake._searchset

    def failing(resource_type: str, query: str) -> dict[str, Any]:
        if "Patient%2Fs1%2C" in query:  # the group search of the second subject and the next seven
            raise Refusal(503, "overloaded")
        return searchset(resource_type, query)

    monkeypatch.setattr(fake, "_searchset", failing)
    output = tmp_path / "labs.csv"
    with client() as fhir, Journal(tmp_path / "j.sqlite") as journal:
        with pytest.raises(TransientHttpError, match="overloaded"):
            pull_study(fhir, journal, twelve.study, since=None, output=output, workers=workers)
        assert journal.high_water(fhir.base_url, twelve.study.nct_id) is None  # the mark did not move
    assert not output.exists()
    assert not [t for t in threading.enumerate() if t.name == "pull-read-ahead"]  # the request thread ended


def test_an_error_while_staging_stops_the_request_thread(
    fake: FakeFhir, twelve: TrialData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: pullstore.PullStore, records: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pullstore.PullStore, "stage", broken)
    monkeypatch.setattr(search_pass, "READ_AHEAD_CHUNK", 1)
    monkeypatch.setattr(runner, "STAGE_BATCH", 1)
    fake.requests.clear()
    with client() as fhir, Journal(tmp_path / "j.sqlite") as journal, pytest.raises(OSError, match="disk full"):
        pull_study(fhir, journal, twelve.study, since=None, workers=1)  # one request thread, reading ahead
    assert not [t for t in threading.enumerate() if t.name == "pull-read-ahead"]
    # it stopped a few records ahead, not at the end of the pull
    assert sum(p.startswith("Observation?") for _, p in fake.requests) < 12
