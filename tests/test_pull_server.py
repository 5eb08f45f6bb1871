"""Pull against the fake server (respx): search parameters the server lacks are filtered here, same rows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fakefhir import BASE, FakeFhir

from fhir_lupus import load_trial
from fhir_lupus.client import FhirClient, RetryPolicy, UnsupportedInteraction
from fhir_lupus.journal import Journal
from fhir_lupus.pull import pull_study
from fhir_lupus.push import push_trial
from fhir_lupus.source import TrialSource


def client() -> FhirClient:
    return FhirClient(BASE, retry=RetryPolicy(attempts=1))  # a new client reads the statement again


def test_a_server_without_code_date_category_or_study_gives_the_same_rows(
    fake: FakeFhir, dataset: Callable[..., Path], tmp_path: Path
) -> None:
    data, report = load_trial(dataset())
    with client() as fhir, Journal(tmp_path / "full.sqlite") as journal:
        push_trial(TrialSource.loaded(data, report), fhir, journal, source="test")
        full = pull_study(fhir, journal, data.study, since=None)
    # every lab row and the Treg measurement (the trial's secondary outcome) come back as rows
    assert full.fallbacks == [] and full.total_rows == len(data.labs) + len(data.treg) == 12
    assert [(r.value, r.unit, r.visit_code) for r in full.rows if r.analyte == "treg_percent"] == [("2.5", "%", "BL")]

    fake.search_params = {"Observation": ("identifier", "subject"), "ResearchSubject": ("identifier",)}
    fake.requests.clear()
    with client() as fhir, Journal(tmp_path / "lean.sqlite") as journal:
        lean = pull_study(fhir, journal, data.study, since=None)
    assert sorted((r.result_id, r.value, r.visit_code) for r in lean.rows) == sorted(
        (r.result_id, r.value, r.visit_code) for r in full.rows
    )
    assert len(lean.unmapped) == len(full.unmapped) and lean.subjects == 2
    assert {note.split(" is ")[0] for note in lean.fallbacks} == {
        "ResearchSubject?study",
        "Observation?code",
        "Observation?category",
        "Observation?date",
    }
    observation_queries = [path for method, path in fake.requests if path.startswith("Observation?")]
    assert observation_queries and all("subject=Patient/" in q and "code=" not in q for q in observation_queries)


def test_a_server_that_cannot_search_labs_by_patient_is_named(
    fake: FakeFhir, dataset: Callable[..., Path], tmp_path: Path
) -> None:
    data, report = load_trial(dataset())
    with client() as fhir, Journal(tmp_path / "j.sqlite") as journal:
        push_trial(TrialSource.loaded(data, report), fhir, journal, source="test")
    fake.search_params = {"Observation": ("identifier",)}
    with (
        client() as fhir,
        Journal(tmp_path / "j.sqlite") as journal,
        pytest.raises(UnsupportedInteraction, match="Observation by patient or subject"),
    ):
        pull_study(fhir, journal, data.study, since=None)


def test_screening_labs_before_day_0_are_in_reach_and_the_floor_is_configurable(
    fake: FakeFhir, dataset: Callable[..., Path], tmp_path: Path
) -> None:
    def screening(rows: dict[str, list[dict[str, str]]]) -> None:
        # 24-hour protein at screening, 60 days before the BL visit (2008-01-05)
        rows["labs.csv"].append(dict(rows["labs.csv"][5], result_id="S1", collected_at="2007-11-06T08:00:00+08:00"))

    data, report = load_trial(dataset(screening))
    assert report.rejects == []
    with client() as fhir, Journal(tmp_path / "j.sqlite") as journal:
        push_trial(TrialSource.loaded(data, report), fhir, journal, source="test")
        default = pull_study(fhir, journal, data.study, since=None)
        floors = [path for _, path in fake.requests if "date=ge" in path]
        short = pull_study(fhir, journal, data.study, since=None, lookback_days=30)
    row = next(r for r in default.rows if r.result_id == "S1")
    assert (row.window, row.visit_code) == ("outside-windows", "")  # kept, flagged, never dropped
    # 90 days (mappings/fhir/pull.yaml) before each subject's BL: 2008-01-05 and 2008-02-03
    assert {path.split("date=ge")[1][:10] for path in floors} == {"2007-10-07", "2007-11-05"}
    assert "S1" not in {r.result_id for r in short.rows} and short.total_rows == default.total_rows - 1
