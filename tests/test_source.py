"""TrialSource: one input for every operation, loaded, checked and screened once, with one report."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from support import example_subset

from fhir_lupus.errors import InputError
from fhir_lupus.model import _reading as reading
from fhir_lupus.model import load_trial
from fhir_lupus.source import TrialSource
from fhir_lupus.study import screen_trial, screening_findings


@pytest.fixture(scope="module")
def trial_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three subjects of the example, and a candidate who did not enrol and screened incomplete (a query)."""
    return example_subset(tmp_path_factory.mktemp("source"), 3, candidates=("SCR-006",))


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times each CSV file is read by the loader from here on."""
    counted: Counter[str] = Counter()
    real = reading.read_rows
    monkeypatch.setattr(reading, "read_rows", lambda path, model: counted.update([path.name]) or real(path, model))
    return counted


def test_whole_is_the_load_with_its_screening_in_the_one_report(trial_dir: Path) -> None:
    trial = TrialSource.directory(trial_dir, command="map")
    data = trial.whole()
    plain_data, plain = load_trial(trial_dir)
    screened = screen_trial(plain_data, None, plain)
    expected = [*plain.findings, *screening_findings(plain_data, screened, plain)]
    assert [str(f) for f in trial.report.findings] == [str(f) for f in expected]
    assert [f.kind for f in trial.screening_findings] == ["eligibility-incomplete"]
    assert [c.result.subject_id for c in trial.screened] == [c.result.subject_id for c in screened]
    assert trial.whole() is data and list(trial.chunks()) == [data]  # held: never read twice


def test_checked_chunks_are_replayed_without_reading_the_files_again(trial_dir: Path, reads: Counter[str]) -> None:
    with TrialSource.directory(trial_dir, max_rows=1) as trial:
        report = trial.check()
        first_pass = dict(reads)
        assert set(first_pass.values()) == {3}  # a subject a chunk: each file read once per chunk
        spool = trial._spool
        assert spool is not None  # three chunks, and the lock that keeps a sweep off (fhir_lupus/_scratch.py)
        assert sorted(p.name for p in spool.iterdir()) == [".lock", "0.pickle", "1.pickle", "2.pickle"]
        replayed = [len(data.subjects) for data in trial.chunks()]
        again = [len(data.subjects) for data in trial.chunks()]
        assert replayed == again == [1, 1, 1] and dict(reads) == first_pass
        assert trial.report is report and trial.check() is report
        with pytest.raises(RuntimeError, match="several chunks"):
            trial.whole()
    assert not spool.exists()  # the chunks kept on disk go with the source


def test_a_trial_read_chunk_by_chunk_once_is_not_read_twice(trial_dir: Path) -> None:
    trial = TrialSource.directory(trial_dir, max_rows=1)
    assert len(list(trial.chunks())) == 3
    rejects = len(trial.report.rejects)
    with pytest.raises(RuntimeError, match="check"):
        list(trial.chunks())
    assert len(trial.report.rejects) == rejects


def test_one_chunk_read_lazily_is_kept(trial_dir: Path, reads: Counter[str]) -> None:
    trial = TrialSource.directory(trial_dir)
    [data] = list(trial.chunks())
    assert trial.whole() is data and trial.check() is trial.report
    assert set(reads.values()) == {1}


def test_a_loaded_trial_is_not_screened_again(trial_dir: Path) -> None:
    data, report = load_trial(trial_dir)
    findings = list(report.findings)
    trial = TrialSource.loaded(data, report)
    assert trial.whole() is data and list(trial.chunks()) == [data] and trial.report is report
    assert report.findings == findings and not trial.screened


def test_a_command_refuses_a_directory_without_its_files_at_once(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"subjects\.csv"):
        TrialSource.directory(tmp_path, command="map")
