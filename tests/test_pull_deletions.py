"""Deletions in an incremental pull (issue 24): the history, its fallbacks, and a pull for a few patients.

Against the fake server (tests/fakefhir.py, respx): with ``history`` it offers ``Observation/_history`` as HAPI
does; without it, as Medplum, the pull lists ids. The integration tests (tests/integration/test_deleted_on_server.py)
delete a pulled lab on real HAPI and Medplum servers.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakefhir import BASE, FakeFhir, Refusal

from fhir_lupus import load_trial
from fhir_lupus.client import FhirClient, RetryPolicy
from fhir_lupus.journal import Journal
from fhir_lupus.model import TrialData
from fhir_lupus.pull import DEFAULT_OVERLAP_SECONDS, PullResult, PullStore, pull_study
from fhir_lupus.pull._deletions import deleted_ids
from fhir_lupus.pull._runner import mark_minus
from fhir_lupus.pull._state import moment
from fhir_lupus.push import push_trial
from fhir_lupus.source import TrialSource


def client() -> FhirClient:
    return FhirClient(BASE, retry=RetryPolicy(attempts=1))


@pytest.fixture
def pushed(fake: FakeFhir, dataset: Callable[..., Path], tmp_path: Path) -> TrialData:
    """The small trial (2 subjects, 12 lab rows) pushed, and pulled once in full into ``tmp_path/j.sqlite``."""
    data, report = load_trial(dataset())
    with client() as fhir, Journal(tmp_path / "j.sqlite") as journal:
        push_trial(TrialSource.loaded(data, report), fhir, journal, source="test")
        full = pull_study(fhir, journal, data.study, since=None, output=tmp_path / "labs.csv")
    assert full.total_rows == 12 and full.removed == []
    return data


def pull(data: TrialData, tmp_path: Path, **kwargs: Any) -> PullResult:
    with client() as fhir, Journal(tmp_path / "j.sqlite") as journal:
        return pull_study(fhir, journal, data.study, output=tmp_path / "labs.csv", **kwargs)


def lab_of(fake: FakeFhir, subject: str, nth: int = 0) -> dict[str, Any]:
    """The ``nth`` lab result on the server (the laboratory category) of the subject with that subject id."""
    patient = {rs["individual"]["reference"] for rs in fake.all("ResearchSubject") if _subject_id(rs) == subject}
    labs = [o for o in fake.all("Observation") if o["subject"]["reference"] in patient and "laboratory" in str(o)]
    return sorted(labs, key=lambda o: o["id"])[nth]


def _subject_id(research_subject: dict[str, Any]) -> str:
    return next(i["value"] for i in research_subject["identifier"] if i["value"].startswith("MSC-"))


def table_ids(tmp_path: Path) -> set[str]:
    with (tmp_path / "labs.csv").open(encoding="utf-8") as handle:
        return {row["observation_id"] for row in csv.DictReader(handle)}


def delete(fake: FakeFhir, observation: dict[str, Any]) -> None:
    with client() as fhir:
        fhir.delete("Observation", observation["id"])


def test_an_id_whose_latest_entry_is_a_deletion_is_deleted() -> None:
    def entry(rid: str, method: str, version: int | None, *, resource: bool = True, kind: str = "Observation") -> dict:
        url = f"{kind}/{rid}" + (f"/_history/{version}" if version is not None else "")
        found: dict[str, Any] = {"request": {"method": method, "url": url}}
        if resource and method != "DELETE":
            found["resource"] = {"resourceType": kind, "id": rid}
        return found

    # by version, whatever the order: deleted then created again is not deleted; created then deleted is
    assert deleted_ids([entry("a", "POST", 1), entry("a", "DELETE", 2), entry("a", "PUT", 3)]) == set()
    assert deleted_ids([entry("b", "PUT", 3), entry("b", "DELETE", 2)]) == set()
    assert deleted_ids([entry("c", "POST", 1), entry("c", "DELETE", 2)]) == {"c"}
    # without versions the first entry is the latest (a history lists the newest first)
    assert deleted_ids([entry("d", "DELETE", None), entry("d", "POST", None)]) == {"d"}
    assert deleted_ids([entry("e", "PUT", None), entry("e", "DELETE", None)]) == set()
    # a 410 answer, or an entry without a resource, is a deletion; another type is not ours
    gone = {"fullUrl": f"{BASE}/Observation/f", "response": {"status": "410 Gone"}}
    assert deleted_ids([gone, entry("g", "GET", None, resource=False), entry("h", "DELETE", 2, kind="Patient")]) == {
        "f",
        "g",
    }


def test_an_incremental_pull_removes_what_the_history_says_was_deleted(
    fake: FakeFhir, pushed: TrialData, tmp_path: Path
) -> None:
    fake.history, fake.history_page = True, 2
    first, second, again = lab_of(fake, "MSC-001"), lab_of(fake, "MSC-002"), lab_of(fake, "MSC-001", 1)
    delete(fake, first)
    delete(fake, second)
    delete(fake, again)
    with client() as fhir:  # deleted, then written again under the same id: not deleted
        fhir.put(f"Observation/{again['id']}", {k: v for k, v in again.items() if k != "meta"})
    fake.requests.clear()
    result = pull(pushed, tmp_path)
    assert sorted((r.observation_id, r.reason) for r in result.removed) == sorted(
        [(first["id"], "deleted on the server"), (second["id"], "deleted on the server")]
    )
    assert {r.subject_id for r in result.removed} == {"MSC-001", "MSC-002"}
    assert [r.observation_id for r in result.rows] == [again["id"]] and result.total_rows == 10
    assert table_ids(tmp_path).isdisjoint({first["id"], second["id"]}) and again["id"] in table_ids(tmp_path)
    history = [path for method, path in fake.requests if path.startswith("Observation/_history")]
    assert len(history) > 1 and all("_since=" in path for path in history)  # paged through its next links
    assert result.fallbacks == [] and not any("_elements" in path for _, path in fake.requests)
    assert pull(pushed, tmp_path).removed == []  # said once: the next pull finds nothing left to remove


def test_without_history_the_ids_of_the_subjects_searched_are_listed(
    fake: FakeFhir, pushed: TrialData, tmp_path: Path
) -> None:
    gone = lab_of(fake, "MSC-002")
    delete(fake, gone)
    fake.requests.clear()
    result = pull(pushed, tmp_path)
    assert [(r.observation_id, r.subject_id, r.reason) for r in result.removed] == [
        (gone["id"], "MSC-002", "no longer on the server")
    ]
    assert result.total_rows == 11 and gone["id"] not in table_ids(tmp_path)
    assert any("Observation/_history is not offered by the server" in note for note in result.fallbacks)
    listings = [path for _, path in fake.requests if "_elements=id" in path]
    assert len(listings) == 2 and not any("_history" in path for _, path in fake.requests)


def test_a_refused_history_falls_back_to_the_listing(
    fake: FakeFhir, pushed: TrialData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(resource_type: str, query: str) -> dict[str, Any]:
        raise Refusal(405, "history is not allowed here")

    fake.history = True
    monkeypatch.setattr(fake, "_history", refuse)
    gone = lab_of(fake, "MSC-001")
    delete(fake, gone)
    result = pull(pushed, tmp_path)
    assert [r.observation_id for r in result.removed] == [gone["id"]]
    assert any("Observation/_history is refused by the server (405)" in note for note in result.fallbacks)


def test_the_listing_never_touches_a_subject_not_searched(fake: FakeFhir, pushed: TrialData, tmp_path: Path) -> None:
    # MSC-002 is no longer enrolled: not searched, so its rows stay even though one was deleted on the server
    leaver = next(rs for rs in fake.all("ResearchSubject") if _subject_id(rs) == "MSC-002")
    leaver["status"] = "ineligible"
    kept, gone = lab_of(fake, "MSC-002"), lab_of(fake, "MSC-001")
    delete(fake, kept)
    delete(fake, gone)
    result = pull(pushed, tmp_path)
    assert [r.observation_id for r in result.removed] == [gone["id"]]
    assert kept["id"] in table_ids(tmp_path) and result.subjects == 1


def test_a_refused_last_updated_searches_whole_and_reconciles(
    fake: FakeFhir, pushed: TrialData, tmp_path: Path
) -> None:
    fake.history = True  # offered, but the search by _lastUpdated is refused: the whole search is the listing
    fake.refuse_last_updated = True
    gone = lab_of(fake, "MSC-001")
    delete(fake, gone)
    fake.requests.clear()
    result = pull(pushed, tmp_path, workers=2)
    assert [(r.observation_id, r.reason) for r in result.removed] == [(gone["id"], "no longer on the server")]
    assert result.total_rows == 11 and result.rows == [] and result.unchanged == 11
    assert any(note.startswith("Observation?_lastUpdated is refused by the server") for note in result.fallbacks)
    searches = [path for _, path in fake.requests if path.startswith("Observation?")]
    refused = [path for path in searches if "_lastUpdated" in path]
    assert refused and len(refused) <= 2 and len(searches) > len(refused)  # once each worker, then without it


def test_a_pull_for_some_patients_touches_only_them_and_keeps_the_mark(
    fake: FakeFhir, pushed: TrialData, tmp_path: Path
) -> None:
    fake.history = True
    one, two = lab_of(fake, "MSC-001"), lab_of(fake, "MSC-002")
    patient_one = one["subject"]["reference"].split("/")[1]
    with client() as fhir, Journal(tmp_path / "j.sqlite") as journal:
        mark = journal.high_water(fhir.base_url, pushed.study.nct_id)
    with client() as fhir:  # each subject: a result changed or written, and one deleted
        fhir.put(f"Observation/{one['id']}", {**one, "status": "amended"})
    new = fake.add({**two, "identifier": [{"system": "urn:oid:1.2.3", "value": "ACC-9"}]})
    delete(fake, lab_of(fake, "MSC-001", 1))
    delete(fake, two)

    some = pull(pushed, tmp_path, patients=[patient_one, "no-such-patient"])
    assert some.subjects == 1 and some.ignored_patients == 1
    assert [r.observation_id for r in some.rows] == [one["id"]] and [r.subject_id for r in some.removed] == ["MSC-001"]
    assert two["id"] in table_ids(tmp_path) and some.total_rows == 11
    with client() as fhir, Journal(tmp_path / "j.sqlite") as journal:
        assert journal.high_water(fhir.base_url, pushed.study.nct_id) == mark == some.high_water
    # the next pull of everyone still finds what the other subject changed and lost since the mark
    everyone = pull(pushed, tmp_path)
    assert [r.observation_id for r in everyone.rows] == [new["id"]]
    assert [(r.observation_id, r.subject_id) for r in everyone.removed] == [(two["id"], "MSC-002")]
    assert everyone.total_rows == 11 and everyone.high_water != mark


def test_a_pull_for_some_patients_starts_from_their_own_mark_never_skipping_a_change(
    fake: FakeFhir, pushed: TrialData, tmp_path: Path
) -> None:
    fake.history = True
    one, two = lab_of(fake, "MSC-001"), lab_of(fake, "MSC-002")
    patient_one, patient_two = (o["subject"]["reference"].split("/")[1] for o in (one, two))
    fake._clock += 50_000  # 50 ms on: the search start is written in milliseconds
    with client() as fhir:
        fhir.put(f"Observation/{one['id']}", {**one, "status": "amended"})
    first = pull(pushed, tmp_path, patients=[patient_one])  # from the study's mark, as before
    with client() as fhir, Journal(tmp_path / "j.sqlite") as journal:
        study_mark = journal.high_water(fhir.base_url, pushed.study.nct_id)
        with PullStore(journal.path, fhir.base_url, pushed.study.nct_id) as store:
            own = store.patient_marks([patient_one, patient_two])
    assert [r.observation_id for r in first.rows] == [one["id"]]
    assert set(own) == {patient_one} and moment(own[patient_one]) > moment(study_mark)  # what it saw
    # the next pull for that patient starts from its own mark (later), and still finds its next change
    changed = fake.store["Observation"][one["id"]]
    with client() as fhir:
        fhir.put(f"Observation/{one['id']}", {**changed, "status": "corrected"})
    second = pull(pushed, tmp_path, patients=[patient_one])
    assert second.since == mark_minus(own[patient_one], DEFAULT_OVERLAP_SECONDS) != first.since
    assert [r.observation_id for r in second.rows] == [one["id"]]
    # with a patient that has no mark of its own in the group, the group starts from the study's mark
    both = pull(pushed, tmp_path, patients=[patient_one, patient_two])
    assert both.since == first.since
    with client() as fhir, Journal(tmp_path / "j.sqlite") as journal:
        assert journal.high_water(fhir.base_url, pushed.study.nct_id) == study_mark  # only everyone moves it


def test_a_first_pull_for_some_patients_replaces_only_their_rows(
    fake: FakeFhir, pushed: TrialData, tmp_path: Path
) -> None:
    # a full pull (as the first one is), but only of this patient: the rows of the other stay in the store
    one, two = lab_of(fake, "MSC-001"), lab_of(fake, "MSC-002")
    patient_one = one["subject"]["reference"].split("/")[1]
    delete(fake, one)
    delete(fake, two)
    with client() as fhir, Journal(tmp_path / "j.sqlite") as journal:
        result = pull_study(fhir, journal, pushed.study, since=None, patients=[patient_one])
    assert [r.observation_id for r in result.removed] == [one["id"]] and result.total_rows == 11


def test_the_cli_says_each_row_removed_and_how_deletions_were_found(
    fake: FakeFhir, pushed: TrialData, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from fhir_lupus.cli import app

    gone = lab_of(fake, "MSC-002")
    delete(fake, gone)
    command = ["pull", "--server", BASE, "-o", str(tmp_path / "labs.csv"), "--journal", str(tmp_path / "j.sqlite")]
    result = CliRunner().invoke(app, [*command, "--since", "auto"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert f"removed row L11 of MSC-002 (Observation/{gone['id']}): no longer on the server" in output
    assert "note Observation/_history is not offered by the server" in output


def test_the_report_says_how_many_patient_ids_were_ignored(capsys: pytest.CaptureFixture[str]) -> None:
    from fhir_lupus.cli._sync_report import render_pull

    render_pull(PullResult(subjects=1, ignored_patients=2))
    assert "ignored 2 Patient id(s) asked for that are no enrolled subject" in capsys.readouterr().err
    render_pull(PullResult(subjects=1))
    assert "ignored" not in capsys.readouterr().err
