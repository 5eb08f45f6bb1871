"""Streaming map (issue 12): ``iter_mapped`` yields what the whole-list map gave, subject by subject, and the
streaming writers write the bytes the whole-list writers wrote (tests/_reference_map.py is that old map)."""

from __future__ import annotations

import csv
import dataclasses
import json
import random
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _reference_map
import pytest
from _reference_map import reference_map
from support import example_subset

from fhir_lupus import pipeline
from fhir_lupus.bundle import dumps, references, transaction_bundle
from fhir_lupus.errors import MappingError
from fhir_lupus.mappers._context import Resource
from fhir_lupus.model._loader import load_trial
from fhir_lupus.model._records import LoadReport
from fhir_lupus.pipeline import STAGES, MappedBatch, iter_mapped, map_trial, stream_trial
from fhir_lupus.registry import RegistryKey, package_trial, write_package, write_package_batches
from fhir_lupus.source import TrialSource
from fhir_lupus.streaming import write_bundle, write_ndjson
from fhir_lupus.validation import validate_resource

STUDY_TYPES = {
    "CodeSystem",
    "Organization",
    "Location",
    "Group",
    "ActivityDefinition",
    "PlanDefinition",
    "ResearchStudy",
}


def _key(resource: Resource) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def _old_ndjson(resources: list[Resource]) -> dict[str, str]:
    """What ``fhir-lupus map --format ndjson`` wrote before streaming: one joined text per type."""
    by_type: dict[str, list[str]] = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(dumps(resource, pretty=False))
    return {f"{t}.ndjson": "\n".join(lines) + "\n" for t, lines in by_type.items()}


@pytest.fixture(scope="module")
def example3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three subjects of the example trial, every row of theirs (all resource types, a few seconds to map)."""
    return example_subset(tmp_path_factory.mktemp("example3"), 3)


@pytest.fixture(scope="module")
def streamed(example3: Path) -> tuple[list[MappedBatch], LoadReport, list[Resource], LoadReport]:
    data, report = load_trial(example3)
    batches = list(iter_mapped(data, report))
    old_data, old_report = load_trial(example3)
    return batches, report, reference_map(old_data, old_report), old_report


def test_batches_hold_what_the_whole_list_map_gave(
    streamed: tuple[list[MappedBatch], LoadReport, list[Resource], LoadReport],
) -> None:
    batches, report, old, old_report = streamed
    union = [resource for batch in batches for resource in batch.resources]
    assert len(union) == len(old) > 1000
    assert {_key(r): r for r in union} == {_key(r): r for r in old}  # resource by resource, order aside
    assert len({_key(r) for r in union}) == len(union)  # no resource in two batches
    assert report.rejects == old_report.rejects
    assert report.findings == old_report.findings
    assert report.read == old_report.read


def test_study_level_first_then_one_batch_per_subject(
    streamed: tuple[list[MappedBatch], LoadReport, list[Resource], LoadReport],
    example3: Path,
) -> None:
    batches, _report, _old, _ = streamed
    study, *subjects = batches
    assert study.subject_id is None
    assert {r["resourceType"] for r in study.resources} == STUDY_TYPES
    assert {item.stage for item in study.items} == {STAGES.index("study")}
    with (example3 / "subjects.csv").open(encoding="utf-8", newline="") as handle:
        assert [b.subject_id for b in subjects] == [row["subject_id"] for row in csv.DictReader(handle)]
    study_refs = {_key(r) for r in study.resources}
    for batch in subjects:
        own = {_key(r) for r in batch.resources}
        types = Counter(r["resourceType"] for r in batch.resources)
        assert types["Patient"] == types["ResearchSubject"] == 1
        assert not STUDY_TYPES & set(types)
        for resource in batch.resources:  # a batch refers only to itself and the study level
            assert references(resource) <= own | study_refs, _key(resource)
        stages = [item.stage for item in batch.items]
        assert stages == sorted(stages)


def test_map_trial_is_the_collected_stream_in_the_old_order(
    streamed: tuple[list[MappedBatch], LoadReport, list[Resource], LoadReport], example3: Path
) -> None:
    _batches, _report, old, _ = streamed
    data, report = load_trial(example3)
    assert map_trial(TrialSource.loaded(data, report)).resources == old


def test_r5_batches_match_the_whole_list_map(tmp_path: Path) -> None:
    directory = example_subset(tmp_path / "one", 1)
    data, report = load_trial(directory)
    union = [r for batch in iter_mapped(data, report, fhir_version="R5") for r in batch.resources]
    old_data, old_report = load_trial(directory)
    assert union == reference_map(old_data, old_report, fhir_version="R5")
    assert report.rejects == old_report.rejects


def test_subject_without_labs_gets_a_batch_without_lab_observations(dataset: Callable[..., Path]) -> None:
    def no_labs_for_second(rows: dict[str, list[dict[str, str]]]) -> None:
        rows["labs.csv"] = [row for row in rows["labs.csv"] if row["subject_id"] != "MSC-002"]

    data, report = load_trial(dataset(no_labs_for_second))
    _study, first, second = iter_mapped(data, report)
    assert (first.subject_id, second.subject_id) == ("MSC-001", "MSC-002")
    assert any(item.stage == STAGES.index("labs") for item in first.items)
    assert not any(item.stage == STAGES.index("labs") for item in second.items)
    assert {"Patient", "ResearchSubject", "Encounter"} <= {r["resourceType"] for r in second.resources}
    assert not report.rejects


def test_a_record_that_does_not_map_is_refused_once(
    dataset: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, report = load_trial(dataset())
    victim = data.labs[0].record.lab.result_id
    real = pipeline.map_lab_observation

    def failing(checked: Any, subject: Any, ctx: Any) -> Resource:
        if checked.lab.result_id == victim:
            raise MappingError("no such code")
        return real(checked, subject, ctx)

    monkeypatch.setattr(pipeline, "map_lab_observation", failing)
    resources = [r for batch in iter_mapped(data, report) for r in batch.resources]
    assert [(r.file, r.line) for r in report.rejects] == [("labs.csv", data.labs[0].line)]
    assert report.rejected["labs.csv"] == 1
    assert "no such code" in report.rejects[0].reason
    values = {i["value"] for r in resources if r["resourceType"] == "Observation" for i in r.get("identifier", [])}
    assert victim not in values
    assert data.labs[1].record.lab.result_id in values


def test_a_subject_that_does_not_map_takes_its_records_with_it(
    dataset: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, report = load_trial(dataset())
    old_data, old_report = load_trial(dataset())
    real = pipeline.map_patient

    def failing(subject: Any, ctx: Any) -> Resource:
        if subject.subject_id == "MSC-001":
            raise MappingError("bad patient")
        return real(subject, ctx)

    monkeypatch.setattr(pipeline, "map_patient", failing)
    batches = list(iter_mapped(data, report))
    assert [b.subject_id for b in batches] == [None, "MSC-002"]
    monkeypatch.setattr(_reference_map, "map_patient", failing)
    old = reference_map(old_data, old_report)
    assert sorted(map(_key, (r for b in batches for r in b.resources))) == sorted(map(_key, old))
    assert Counter(map(str, report.rejects)) == Counter(map(str, old_report.rejects))
    assert report.rejected == old_report.rejected  # each refused row counted once


def test_records_of_a_subject_not_in_the_trial_are_refused(dataset: Callable[..., Path]) -> None:
    data, report = load_trial(dataset())
    orphan = dataclasses.replace(data.visits[0], record=data.visits[0].record.model_copy(update={"subject_id": "X-9"}))
    hand_made = dataclasses.replace(data, visits=[*data.visits, orphan])
    resources = [r for batch in iter_mapped(hand_made, report) for r in batch.resources]
    assert [(r.line, r.reason) for r in report.rejects] == [(orphan.line, "subject X-9 could not be mapped")]
    assert len(resources) == len(map_trial(TrialSource.loaded(data)).resources)


def test_study_mapping_error_stops_before_any_subject(
    dataset: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, report = load_trial(dataset())

    def broken(ctx: Any) -> Resource:
        raise MappingError("no sponsor")

    monkeypatch.setattr(pipeline, "map_sponsor_organization", broken)
    with pytest.raises(MappingError, match="study definition NCT00698191 does not map: no sponsor"):
        next(iter_mapped(data, report))


# -- the writers ----------------------------------------------------------------------------------------------


def test_ndjson_has_the_bytes_of_the_whole_list_writer(
    streamed: tuple[list[MappedBatch], LoadReport, list[Resource], LoadReport], tmp_path: Path
) -> None:
    batches, _report, old, _ = streamed
    counts = write_ndjson(iter(batches), tmp_path / "out")
    written = {p.name: p.read_text(encoding="utf-8") for p in (tmp_path / "out").iterdir()}
    assert written == _old_ndjson(old)  # nothing else either: the spool directory is gone
    assert counts == Counter(r["resourceType"] for r in old)
    for text in written.values():
        for line in text.splitlines():
            validate_resource(json.loads(line))


def test_bundle_has_the_bytes_of_the_whole_list_writer(
    streamed: tuple[list[MappedBatch], LoadReport, list[Resource], LoadReport], tmp_path: Path
) -> None:
    batches, _report, old, _ = streamed
    path = tmp_path / "out" / "bundle.json"
    counts = write_bundle(iter(batches), path)
    text = path.read_text(encoding="utf-8")
    assert text == dumps(transaction_bundle(old))
    assert sorted(p.name for p in path.parent.iterdir()) == ["bundle.json"]
    bundle = json.loads(text)
    assert (bundle["resourceType"], bundle["type"]) == ("Bundle", "transaction")
    assert len(bundle["entry"]) == sum(counts.values()) == len(old)
    for item in bundle["entry"]:
        assert item["fullUrl"].startswith("urn:uuid:")
        assert item["request"]["method"] in ("PUT", "POST")
    assert counts == Counter(r["resourceType"] for r in old)


def test_small_bundle_validates_as_a_fhir_bundle(dataset: Callable[..., Path], tmp_path: Path) -> None:
    data, report = load_trial(dataset())
    write_bundle(iter_mapped(data, report), tmp_path / "b.json")
    validate_resource(json.loads((tmp_path / "b.json").read_text(encoding="utf-8")))


def test_bundle_without_entries_is_still_a_bundle(tmp_path: Path) -> None:
    write_bundle(iter(()), tmp_path / "empty.json")
    assert json.loads((tmp_path / "empty.json").read_text(encoding="utf-8")) == {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [],
    }


def test_unsorted_csv_gives_the_same_resources_subject_by_subject(dataset: Callable[..., Path], tmp_path: Path) -> None:
    """Rows not grouped by subject: the same lines per file, now in subject order (no whole-trial sort)."""

    def shuffle(rows: dict[str, list[dict[str, str]]]) -> None:
        random.Random(7).shuffle(rows["labs.csv"])
        rows["labs.csv"].sort(key=lambda row: row["subject_id"] != "MSC-002")  # the second subject's labs first

    directory = dataset(shuffle)
    data, report = load_trial(directory)
    write_ndjson(iter_mapped(data, report), tmp_path / "out")
    old_data, old_report = load_trial(directory)
    old = _old_ndjson(reference_map(old_data, old_report))
    for name, text in old.items():
        written = (tmp_path / "out" / name).read_text(encoding="utf-8")
        assert sorted(written.splitlines()) == sorted(text.splitlines())
    assert (tmp_path / "out" / "Observation.ndjson").read_text(encoding="utf-8") != old["Observation.ndjson"]


def test_failure_half_way_leaves_the_old_output(dataset: Callable[..., Path], tmp_path: Path) -> None:
    data, report = load_trial(dataset())
    out = tmp_path / "out"
    out.mkdir()
    (out / "Patient.ndjson").write_text("old\n", encoding="utf-8")

    def stream() -> Any:
        batches = iter_mapped(data, report)
        yield next(batches)
        yield next(batches)
        raise MappingError("stopped")

    with pytest.raises(MappingError):
        write_ndjson(stream(), out)
    assert [p.name for p in out.iterdir()] == ["Patient.ndjson"]
    assert (out / "Patient.ndjson").read_text(encoding="utf-8") == "old\n"
    with pytest.raises(MappingError):
        write_bundle(stream(), out / "b.json")
    assert [p.name for p in out.iterdir()] == ["Patient.ndjson"]


# -- loading a chunk of subjects at a time -------------------------------------------------------------------


def test_chunked_load_and_map_give_what_the_whole_load_gave(
    streamed: tuple[list[MappedBatch], LoadReport, list[Resource], LoadReport], example3: Path
) -> None:
    _batches, _report, old, old_report = streamed
    trial = TrialSource.directory(example3, max_rows=1)
    report = trial.report
    chunks: list[int] = []
    batches = list(stream_trial(trial, on_chunk=lambda data: chunks.append(len(data.subjects))))
    assert chunks == [1, 1, 1]  # max_rows below one subject's rows: a subject a chunk
    assert [b.subject_id for b in batches][:2] == [None, "MSC-001"]
    assert sum(b.subject_id is None for b in batches) == 1  # the study level once
    union = [r for b in batches for r in b.resources]
    assert {_key(r): r for r in union} == {_key(r): r for r in old} and len(union) == len(old)
    assert report.read == old_report.read
    assert Counter(map(str, report.rejects)) == Counter(map(str, old_report.rejects))
    assert Counter(map(str, report.findings)) == Counter(map(str, old_report.findings))


def test_one_chunk_when_the_trial_fits(example3: Path) -> None:
    sizes: list[int] = []
    list(stream_trial(TrialSource.directory(example3), on_chunk=lambda data: sizes.append(len(data.subjects))))
    assert sizes == [3]


def test_duplicate_key_across_chunks_is_refused_naming_the_first_line(dataset: Callable[..., Path]) -> None:
    def repeat_a_result_id(rows: dict[str, list[dict[str, str]]]) -> None:
        first = next(row for row in rows["labs.csv"] if row["subject_id"] == "MSC-001")
        second = next(row for row in rows["labs.csv"] if row["subject_id"] == "MSC-002")
        second["result_id"] = first["result_id"]

    directory = dataset(repeat_a_result_id)
    _data, whole = load_trial(directory)
    trial = TrialSource.directory(directory, max_rows=1)
    report = trial.report
    list(stream_trial(trial))
    assert [str(r) for r in whole.rejects] == [str(r) for r in report.rejects]
    assert len(report.rejects) == 1 and "duplicate" in report.rejects[0].reason


def test_rows_of_unknown_subjects_are_read_and_refused_once(dataset: Callable[..., Path]) -> None:
    def stranger(rows: dict[str, list[dict[str, str]]]) -> None:
        rows["visits.csv"].insert(1, {"subject_id": "MSC-404", "visit_code": "BL", "visit_date": "2008-01-05"})

    directory = dataset(stranger)
    _data, whole = load_trial(directory)
    trial = TrialSource.directory(directory, max_rows=1)
    report = trial.report
    list(stream_trial(trial))
    assert report.read == whole.read
    assert [str(r) for r in report.rejects] == [str(r) for r in whole.rejects]
    assert "unknown subject MSC-404" in report.rejects[0].reason


def test_cli_map_writes_what_the_whole_list_writers_wrote(dataset: Callable[..., Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fhir_lupus.cli import app

    directory = dataset()
    data, report = load_trial(directory)
    old = reference_map(data, report)
    runner = CliRunner()
    result = runner.invoke(app, ["map", str(directory), "-o", str(tmp_path / "nd"), "--format", "ndjson"])
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_text(encoding="utf-8") for p in (tmp_path / "nd").iterdir()} == _old_ndjson(old)
    result = runner.invoke(app, ["map", str(directory), "-o", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "b.json").read_text(encoding="utf-8") == dumps(transaction_bundle(old))


# -- registry packages, a subject at a time ------------------------------------------------------------------

KEY = RegistryKey(b"streaming-test-key-0123456789")
MADE_AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_package_in_batches_and_runs_has_the_bytes_of_the_whole_package(
    streamed: tuple[list[MappedBatch], LoadReport, list[Resource], LoadReport], tmp_path: Path
) -> None:
    batches, _report, old, _ = streamed
    common: dict[str, Any] = {"study": "NCT00698191", "enrolled": {"MSC-001", "MSC-003"}, "made_at": MADE_AT}
    whole = write_package(old, tmp_path / "whole", KEY, link_table=tmp_path / "whole.csv", **common)
    streamed_package = write_package_batches(
        (batch.resources for batch in batches),
        tmp_path / "batches",
        KEY,
        link_table=tmp_path / "batches.csv",
        run_size=97,  # many sorted runs per type, merged
        **common,
    )
    assert _files(tmp_path / "whole") == _files(tmp_path / "batches")
    assert (tmp_path / "whole.csv").read_bytes() == (tmp_path / "batches.csv").read_bytes()
    assert whole.manifest == streamed_package.manifest and whole.excluded == streamed_package.excluded > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging or runs left


def test_package_directory_has_the_bytes_of_package_trial(example3: Path, tmp_path: Path) -> None:
    data, report = load_trial(example3)
    package_trial(TrialSource.loaded(data, report), tmp_path / "a", KEY, link_table=tmp_path / "a.csv", made_at=MADE_AT)
    trial = TrialSource.directory(example3, max_rows=1)
    chunked = trial.report
    package_trial(trial, tmp_path / "b", KEY, link_table=tmp_path / "b.csv", made_at=MADE_AT)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert Counter(map(str, chunked.rejects)) == Counter(map(str, report.rejects)) and chunked.read == report.read
