"""Map with validation in worker processes (issue 25): the same bytes, order and refusals as in process.

Every comparison is between ``workers=1`` (the in-process path, the reference) and ``workers=2`` on the same
input: the outputs must be byte-identical, and a resource that does not validate must be refused with the same
file, line and reason, taking with it the same references.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import example_subset
from typer.testing import CliRunner

from fhir_lupus import pipeline
from fhir_lupus._workers import ValidationPool, available_cpus
from fhir_lupus.cli import app
from fhir_lupus.errors import ResourceInvalidError
from fhir_lupus.mappers._context import Resource
from fhir_lupus.model import LoadReport, load_trial
from fhir_lupus.pipeline import MappedBatch, iter_mapped, map_trial, stream_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.streaming import write_bundle, write_ndjson
from fhir_lupus.terminology import MappingPack
from fhir_lupus.validation import validate_resource

runner = CliRunner()


def written(batches: list[MappedBatch], folder: Path) -> dict[str, bytes]:
    """The bundle and the NDJSON files ``batches`` make, by name."""
    folder.mkdir()
    write_bundle(batches, folder / "bundle.json")
    write_ndjson(batches, folder / "ndjson")
    return {path.name: path.read_bytes() for path in [folder / "bundle.json", *sorted((folder / "ndjson").iterdir())]}


def mapped(data_dir: Path, workers: int, fhir_version: Any = "R4") -> tuple[list[MappedBatch], LoadReport]:
    trial = TrialSource.directory(data_dir)
    return list(stream_trial(trial, fhir_version=fhir_version, workers=workers)), trial.report


@pytest.fixture(scope="module")
def example3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three subjects of the example trial, every row of theirs (every resource type)."""
    return example_subset(tmp_path_factory.mktemp("example3"), 3)


def test_the_example_subset_maps_to_the_same_bytes_with_two_workers(example3: Path, tmp_path: Path) -> None:
    alone, alone_report = mapped(example3, 1)
    pooled, pooled_report = mapped(example3, 2)
    assert [batch.subject_id for batch in pooled] == [batch.subject_id for batch in alone]
    assert sum(len(batch.items) for batch in alone) > 1000
    assert written(pooled, tmp_path / "pooled") == written(alone, tmp_path / "alone")
    assert pooled_report == alone_report


@pytest.mark.parametrize("fhir_version", ["R4", "R5"])
def test_the_small_dataset_maps_to_the_same_bytes_with_two_workers(
    fhir_version: str, dataset: Callable[..., Path], tmp_path: Path
) -> None:
    data_dir = dataset()
    alone, alone_report = mapped(data_dir, 1, fhir_version)
    pooled, pooled_report = mapped(data_dir, 2, fhir_version)
    assert written(pooled, tmp_path / "pooled") == written(alone, tmp_path / "alone")
    assert pooled_report == alone_report


def test_map_trial_gives_the_same_list_with_workers(dataset: Callable[..., Path]) -> None:
    data_dir = dataset()
    assert map_trial(TrialSource.directory(data_dir), workers=2) == map_trial(TrialSource.directory(data_dir))


def spoil_the_infusion(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """MSC-001's MSC infusion maps to a Procedure its model refuses; returns the ids of the spoiled Procedures."""
    real, spoiled = pipeline.map_procedure, []

    def invalid(procedure: Any, subject: Any, ctx: Any) -> Resource:
        resource = real(procedure, subject, ctx)
        if subject.subject_id == "MSC-001" and procedure.kind == "msc_infusion":
            resource = {**resource, "performedPeriod": {"start": "not a date"}}
            spoiled.append(resource["id"])
        return resource

    monkeypatch.setattr(pipeline, "map_procedure", invalid)
    return spoiled


def test_a_resource_refused_in_a_worker_is_refused_as_in_process(
    monkeypatch: pytest.MonkeyPatch, dataset: Callable[..., Path], tmp_path: Path
) -> None:
    spoiled = spoil_the_infusion(monkeypatch)
    data_dir = dataset()
    alone, alone_report = mapped(data_dir, 1)
    pooled, pooled_report = mapped(data_dir, 2)
    assert spoiled  # the spoiled Procedure was mapped (in both runs)
    assert pooled_report.rejects == alone_report.rejects
    (reject,) = pooled_report.rejects
    assert (reject.file, reject.line) == ("procedures.csv", 3) and reject.column is None
    assert "does not map to valid FHIR" in reject.reason and "performedPeriod" in reject.reason
    assert written(pooled, tmp_path / "pooled") == written(alone, tmp_path / "alone")
    # what referred to the refused infusion was mapped without that reference, as in process
    text = b"".join(written(pooled, tmp_path / "again").values())
    assert spoiled[0].encode() not in text


def test_resources_the_caller_trusts_are_not_sent_to_the_workers(dataset: Callable[..., Path]) -> None:
    data, report = load_trial(dataset())
    seen: list[str] = []
    submit = ValidationPool.submit

    def counting(pool: ValidationPool, resources: list[Resource]) -> Any:
        seen.extend(resource["resourceType"] for resource in resources)
        return submit(pool, resources)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ValidationPool, "submit", counting)
        trusted = list(iter_mapped(data, report, workers=2, trusted=lambda r: r["resourceType"] == "Observation"))
    assert seen and "Observation" not in seen  # (subjects the parent validated itself are not submitted at all)
    assert any(r["resourceType"] == "Observation" for batch in trusted[1:] for r in batch.resources)


class SlowPool:
    """A stand-in for ValidationPool whose answers are never ready when first asked, so the parent always has
    time to map and validate the following subjects itself; it validates when the answer is wanted."""

    depth = 1

    def __init__(self) -> None:
        self.subjects: list[str] = []

    def submit(self, resources: list[Resource]) -> Any:
        self.subjects.extend(r["id"] for r in resources if r["resourceType"] == "ResearchSubject")
        return _Later(resources)


class _Later:
    def __init__(self, resources: list[Resource]) -> None:
        self.resources, self.asked = resources, 0

    def done(self) -> bool:
        self.asked += 1
        return self.asked > 1

    def result(self) -> bool:
        try:
            for resource in self.resources:
                validate_resource(resource)
        except ResourceInvalidError:
            return False
        return True


def test_subjects_the_parent_validates_while_it_waits_are_refused_as_in_process(
    monkeypatch: pytest.MonkeyPatch, example3: Path, tmp_path: Path
) -> None:
    """Whether a subject went to a worker or was validated by the parent while it waited, the batches and the
    refusals are those of the in-process run, in the same order."""
    real, spoiled = pipeline.map_procedure, []

    def invalid(procedure: Any, subject: Any, ctx: Any) -> Resource:  # every subject's infusion is refused
        resource = real(procedure, subject, ctx)
        if procedure.kind == "msc_infusion":
            resource = {**resource, "performedPeriod": {"start": "not a date"}}
            spoiled.append(subject.subject_id)
        return resource

    monkeypatch.setattr(pipeline, "map_procedure", invalid)
    data, alone_report = load_trial(example3)
    alone = list(iter_mapped(data, alone_report, workers=1))
    pool, pooled_report = SlowPool(), LoadReport()
    pooled = list(pipeline._iter_mapped(data, pooled_report, "R4", Settings.default(), None, pool))  # type: ignore[arg-type]
    subjects = [batch.subject_id for batch in alone[1:]]
    assert len(set(spoiled)) == len(subjects) == 3  # every subject had something refused
    sent = {r["id"] for batch in pooled for r in batch.resources if r["resourceType"] == "ResearchSubject"}
    assert 0 < len(set(pool.subjects) & sent) < len(subjects)  # some went to the pool, some were done here
    assert pooled_report.rejects == alone_report.rejects
    assert sum(reject.file == "procedures.csv" for reject in alone_report.rejects) >= 3
    assert written(pooled, tmp_path / "pooled") == written(alone, tmp_path / "alone")


def test_the_pack_reaches_a_worker_in_a_picklable_form(pack: MappingPack) -> None:
    """A spawned worker (every platform but Linux) unpickles the pack: it must validate as the original does."""
    copy = pickle.loads(pickle.dumps(Settings(pack=pack, validation="strict")))
    assert copy.pack == pack and copy.validation == "strict"
    bad = {"resourceType": "Observation", "id": "x", "status": "final", "code": {"text": "t"}, "valueString": "v"}
    bad["dataAbsentReason"] = {"text": "not asked"}  # obs-6: a value, or a reason it is absent, not both
    for each in (pack, copy.pack):
        with pytest.raises(ResourceInvalidError, match="obs-6"):
            validate_resource(bad, pack=each)


def test_workers_must_be_at_least_one(dataset: Callable[..., Path]) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        next(stream_trial(TrialSource.directory(dataset()), workers=0))
    assert available_cpus() >= 1


def test_the_cli_option_gives_the_same_bundle(dataset: Callable[..., Path], tmp_path: Path) -> None:
    data_dir, outputs = dataset(), []
    for workers in (["--workers", "1"], ["--workers", "2"], []):  # [] : one per CPU
        out = tmp_path / f"bundle{len(outputs)}.json"
        result = runner.invoke(app, ["map", str(data_dir), "-o", str(out), *workers])
        assert result.exit_code == 0, result.output
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    refused = runner.invoke(app, ["map", str(data_dir), "-o", str(tmp_path / "x.json"), "--workers", "0"])
    assert refused.exit_code == 2 and not (tmp_path / "x.json").exists()


def test_the_map_command_leaves_the_collector_as_it_found_it(dataset: Callable[..., Path], tmp_path: Path) -> None:
    """The command freezes what it holds for the collector while it runs (fewer full collections), not after."""
    assert gc.get_freeze_count() == 0
    result = runner.invoke(app, ["map", str(dataset()), "-o", str(tmp_path / "bundle.json")])
    assert result.exit_code == 0, result.output
    assert gc.get_freeze_count() == 0


WORKERS_OF_A_KILLED_PARENT = """
import os, sys, time
from fhir_lupus._workers import ValidationPool
from fhir_lupus.terminology import load_pack
pool = ValidationPool(2, load_pack(), "R4", "fast")
assert pool.submit([]).result() and pool.submit([{"resourceType": "Basic"}]).result() is False
print(" ".join(str(pid) for pid in pool._executor._processes), flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_workers_end_when_their_parent_is_killed() -> None:
    """A parent killed outright cannot shut its pool down: the workers notice and end (no orphan holds data)."""
    path = os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    parent = subprocess.Popen([sys.executable, "-c", WORKERS_OF_A_KILLED_PARENT], stdout=subprocess.PIPE, env=env)
    assert parent.stdout is not None
    workers = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(workers) == 2 and all(alive(pid) for pid in workers)
    parent.send_signal(signal.SIGKILL)
    parent.wait(30)
    deadline = time.monotonic() + 30  # a worker looks every second; a loaded machine may take longer
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers)


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not ended (a zombie, ended and not yet reaped by init, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
