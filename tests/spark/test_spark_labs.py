"""The Spark path gives the lab table of the single-machine path (``sync.local.labs_from_ndjson``), row for row.

Both read the same NDJSON; the Spark path flattens Observations with Pathling's SQL-on-FHIR view and classifies
the facts on the executors. Equal lists of rows and equal CSV bytes, on the whole example trial and on results
written to be awkward: number literals that Spark's decimals would reshape, a treatment range before the normal
one, codings without a system, pending and withdrawn statuses, a Patient who is no subject, a duplicate line,
a file mixing Patients and Observations.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fhir_lupus.model import StudyDefinition
from fhir_lupus.pull._local import labs_from_ndjson, read_ndjson
from fhir_lupus.pull._reverse import PulledLab, UnmappedResult, normal_range
from fhir_lupus.pull._store import table_order, write_rows
from fhir_lupus.spark import SparkLabs, spark_labs
from fhir_lupus.terminology import LabCatalogue


def both(
    folder: Path, study: StudyDefinition, catalogue: LabCatalogue, spark: Any, output: Path
) -> tuple[SparkLabs, list[Any], Any]:
    subjects, records = labs_from_ndjson(sorted(folder.glob("*.ndjson")), study, catalogue)
    local = table_order(list(records))
    with rows_never_reach_the_driver():
        result = spark_labs(folder, study, catalogue, output, spark=spark)
    return result, local, subjects


@contextmanager
def rows_never_reach_the_driver() -> Iterator[None]:
    """Inside, no DataFrame action brings rows to this process, and what an RDD action brings is counts only
    (``zipWithIndex``'s lines per partition, ``countByValue``'s tallies): a collect of rows fails the test."""
    from pyspark import RDD
    from pyspark.sql import DataFrame

    collected: list[Any] = []
    real = RDD.collect

    def watched(self: Any) -> list[Any]:
        values = real(self)
        collected.extend(values)
        return values

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("rows were brought to the driver")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RDD, "collect", watched)
        for name in ("toLocalIterator", "take", "first"):
            patch.setattr(RDD, name, refused)
        for name in ("collect", "toPandas", "toLocalIterator", "take", "tail", "head", "first", "toArrow"):
            patch.setattr(DataFrame, name, refused)
        yield
    assert collected, "the run used no RDD action at all (the watch would see nothing)"
    for value in collected:
        counts = value.values() if isinstance(value, dict) else [value]
        assert all(isinstance(n, int) for n in counts), f"{type(value).__name__} reached the driver"
        assert not isinstance(value, dict) or all(isinstance(k, str) for k in value)


def read_csv(path: Path, row_type: type) -> list[Any]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [row_type(**row) for row in csv.DictReader(handle)]


def assert_same_table(result: SparkLabs, local: list[Any], tmp_path: Path) -> None:
    """The CSV outputs are the local table: the same records in the same order, and the same bytes."""
    rows = [r for r in local if isinstance(r, PulledLab)]
    unmapped = [r for r in local if isinstance(r, UnmappedResult)]
    assert read_csv(result.output, PulledLab) == rows and result.rows == len(rows)
    assert read_csv(result.unmapped_output, UnmappedResult) == unmapped and result.unmapped == len(unmapped)
    assert result.outside == sum(1 for r in rows if r.window != "in-window")
    assert result.output.read_bytes() == write_rows(rows, tmp_path / "local.csv", PulledLab).read_bytes()
    local_unmapped = write_rows(unmapped, tmp_path / "local.unmapped.csv", UnmappedResult)
    assert result.unmapped_output.read_bytes() == local_unmapped.read_bytes()


def read_parquet(spark: Any, path: Path, row_type: type) -> list[list[Any]]:
    """The records of each file of a Parquet output, file by file, in the file's own order."""
    return [
        [row_type(**row.asDict()) for row in spark.read.parquet(str(part)).collect()]
        for part in sorted(path.glob("subject_bucket=*/*.parquet"))
    ]


def test_the_whole_example_gives_the_local_table(
    spark: Any, example_ndjson: Path, study: StudyDefinition, catalogue: LabCatalogue, tmp_path: Path
) -> None:
    result, local, subjects = both(example_ndjson, study, catalogue, spark, tmp_path / "out" / "labs.csv")
    assert result.rows > 8000 and result.subjects == 20
    assert result.others == subjects.others == 0 and result.rejected == 0
    assert_same_table(result, local, tmp_path)


def test_the_parquet_output_is_the_local_table_bucketed_by_subject_each_file_in_table_order(
    spark: Any, example_ndjson: Path, study: StudyDefinition, catalogue: LabCatalogue, tmp_path: Path
) -> None:
    with rows_never_reach_the_driver():
        result = spark_labs(example_ndjson, study, catalogue, tmp_path / "labs", spark=spark, buckets=4)
    _, records = labs_from_ndjson(sorted(example_ndjson.glob("*.ndjson")), study, catalogue)
    local = list(records)
    for row_type, path in ((PulledLab, result.output), (UnmappedResult, result.unmapped_output)):
        files = read_parquet(spark, path, row_type)
        expected = [r for r in local if isinstance(r, row_type)]
        assert Counter(r for part in files for r in part) == Counter(expected)  # the same records
        assert all(part == table_order(part) for part in files)  # each file sorted as the pull's table
        buckets = [{r.subject_id for r in part} for part in files]
        assert all(not (a & b) for i, a in enumerate(buckets) for b in buckets[i + 1 :])  # a subject in one file
    assert 1 < len(list(result.output.glob("subject_bucket=*"))) <= 4
    assert result.rows == sum(1 for r in local if isinstance(r, PulledLab)) > 8000


def context_folder(example_ndjson: Path, tmp_path: Path) -> Path:
    """A folder with the example's study, subjects, encounters and procedures, for Observations of a test's own."""
    folder = tmp_path / "ndjson"
    folder.mkdir()
    for name in ("ResearchStudy", "ResearchSubject", "Encounter", "Procedure"):
        shutil.copy(example_ndjson / f"{name}.ndjson", folder)
    return folder


def _literal(resource: dict[str, Any], placeholder: str, literal: str) -> str:
    return json.dumps(resource).replace(f'"{placeholder}"', literal)


def test_awkward_results_give_the_local_table(
    spark: Any, example_ndjson: Path, study: StudyDefinition, catalogue: LabCatalogue, tmp_path: Path
) -> None:
    folder = context_folder(example_ndjson, tmp_path)
    observations = list(read_ndjson(example_ndjson / "Observation.ndjson"))
    base = next(o for o in observations if "valueQuantity" in o and o.get("referenceRange"))
    quantity, ranges = base["valueQuantity"], base["referenceRange"]
    lines: list[str] = []
    for number, literal in enumerate(["88.0", "1e2", "1.50", "0.0000001", "12345678.9", "7", "-0.0"]):
        changed = {**base, "id": f"number-{number}", "valueQuantity": {**quantity, "value": "N"}}
        changed["meta"] = {"lastUpdated": "2026-11-30T10:00:00.123+08:00", "versionId": str(number)}
        lines.append(_literal(changed, "N", literal))
    treatment = {"type": {"coding": [{"system": catalogue.pack.system_uri("referencerange-meaning"), "code": "x"}]}}
    system, code = normal_range(catalogue)  # the view's constants normal_meaning and normal_code
    typed_normal = {"type": {"coding": [{"system": system, "code": code}]}}
    lines += [
        json.dumps({**base, "id": "comparator", "valueQuantity": {**quantity, "comparator": "<"}}),
        json.dumps({**base, "id": "ranges", "referenceRange": [{**ranges[0], **treatment}, {"text": "none"}, *ranges]}),
        json.dumps({**base, "id": "typed-normal", "referenceRange": [{**ranges[0], **typed_normal}]}),
        json.dumps({**base, "id": "no-system", "code": {"coding": [{"code": "local"}, *base["code"]["coding"]]}}),
        json.dumps(
            {**base, "id": "their-id", "identifier": [{"value": "no-system"}, {"system": "urn:x", "value": "1"}]}
        ),
        json.dumps({**base, "id": "pending", "status": "preliminary"}),
        json.dumps({**base, "id": "withdrawn", "status": "entered-in-error"}),
        json.dumps({**base, "id": "not-a-status", "status": "bogus"}),
        json.dumps({**base, "id": "no-catalogue-code", "code": {"coding": [{"system": "urn:local", "code": "X"}]}}),
        json.dumps({**base, "id": "other-patient", "subject": {"reference": "Patient/nobody"}}),
        json.dumps(
            {
                **{k: v for k, v in base.items() if k != "effectiveDateTime"},
                "id": "instant",
                "effectiveInstant": "2026-01-01T00:00:00Z",
            }
        ),
        json.dumps(
            {
                **{k: v for k, v in base.items() if k != "effectiveDateTime"},
                "id": "period",
                "effectivePeriod": {"start": base["effectiveDateTime"]},
            }
        ),
    ]
    lines.append(lines[-1])  # the same version listed twice, as a bulk export may
    lines += [json.dumps(o) for o in observations if "valueString" in o or "valueCodeableConcept" in o][:40]
    (folder / "Observation.ndjson").write_text("\n".join(lines) + "\n")
    patient = next(read_ndjson(example_ndjson / "Patient.ndjson"))
    (folder / "Mixed.ndjson").write_text(json.dumps(patient) + "\n" + json.dumps({**base, "id": "in-mixed"}) + "\n")

    result, local, subjects = both(folder, study, catalogue, spark, tmp_path / "out" / "labs.csv")
    assert_same_table(result, local, tmp_path)
    assert result.others == subjects.others == 1
    spark_rows = read_csv(result.output, PulledLab) + read_csv(result.unmapped_output, UnmappedResult)
    by_id = {r.observation_id: r for r in spark_rows}
    assert by_id["number-0"].reported_value == "88.0" and by_id["number-1"].reported_value == "100.0"
    assert by_id["number-5"].reported_value == "7" and by_id["number-0"].last_updated.endswith("+08:00")
    assert isinstance(by_id["withdrawn"], UnmappedResult) and isinstance(by_id["in-mixed"], PulledLab)
    assert by_id["their-id"].result_id == "|no-system"
    typed = by_id["typed-normal"]
    assert isinstance(typed, PulledLab) and typed.ref_low and typed.ref_low == by_id["comparator"].ref_low


def test_a_missing_folder_is_a_clear_error(spark: Any, study: StudyDefinition, catalogue: LabCatalogue) -> None:
    from fhir_lupus.errors import FhirLupusError

    with pytest.raises(FhirLupusError, match="not a directory of NDJSON files"):
        spark_labs(Path("/nonexistent/ndjson"), study, catalogue, Path("/nonexistent/labs"), spark=spark)


def test_results_pathlings_parser_would_refuse_are_set_aside_and_bad_lines_rejected(
    spark: Any, example_ndjson: Path, study: StudyDefinition, catalogue: LabCatalogue, tmp_path: Path
) -> None:
    """A comparator outside FHIR's codes and a number as text are read from the JSON, as the local path reads
    them; a line that is not JSON, a result whose code is no object and one whose date no rule can read (the
    local path stops on each) go to the rejects with file, line and reason; the run goes on."""
    folder = context_folder(example_ndjson, tmp_path)
    observations = list(read_ndjson(example_ndjson / "Observation.ndjson"))
    base = next(o for o in observations if "valueQuantity" in o and o.get("referenceRange"))
    odd = [
        {**base, "id": "about", "valueQuantity": {**base["valueQuantity"], "comparator": "about"}},
        {**base, "id": "text-number", "valueQuantity": {**base["valueQuantity"], "value": "1.0"}},
    ]
    good = [json.dumps(o) for o in observations[:200]]
    (folder / "Observation.ndjson").write_text("\n".join([*good, *(json.dumps(o) for o in odd)]) + "\n")
    result, local, _ = both(folder, study, catalogue, spark, tmp_path / "out" / "labs.csv")
    assert_same_table(result, local, tmp_path)  # the same table as the local path, with the odd two
    assert {"about", "text-number"} <= {r.observation_id for r in local}

    bad_date = json.dumps({**base, "id": "bad-date", "effectiveDateTime": "28/03/2008"})
    broken = [*good[:100], '{"resourceType": "Observation", "id": "cut', *good[100:], json.dumps({**base, "code": "x"})]
    broken.append(bad_date)
    (folder / "Observation.ndjson").write_text("\n".join(broken) + "\n")
    result = spark_labs(folder, study, catalogue, tmp_path / "broken" / "labs.csv", spark=spark)
    assert result.rows + result.unmapped > 0 and result.rejected == 3
    with result.rejects_output.open(encoding="utf-8", newline="") as handle:
        rejects = list(csv.DictReader(handle))
    where = str(folder / "Observation.ndjson")
    assert [(r["file"], r["line"], r["observation_id"]) for r in rejects] == [
        (where, "101", ""),
        (where, "202", base["id"]),
        (where, "203", "bad-date"),
    ]
    assert rejects[0]["reason"].startswith("not JSON") and "unreadable Observation" in rejects[1]["reason"]
    assert rejects[2]["reason"].startswith("unreadable Observation (ValueError")


def test_the_command_writes_parquet_buckets_and_names_the_rejects(
    spark: Any, example_ndjson: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from fhir_lupus.cli import app

    folder = context_folder(example_ndjson, tmp_path)
    lines = (example_ndjson / "Observation.ndjson").read_text(encoding="utf-8").splitlines()[:300]
    (folder / "Observation.ndjson").write_text("\n".join([*lines, "not json"]) + "\n", encoding="utf-8")
    output = tmp_path / "out" / "labs"
    argv = ["spark-labs", str(folder), "-o", str(output), "--master", "local[2]", "--buckets", "3"]
    done = CliRunner().invoke(app, argv)
    assert done.exit_code == 0, done.output
    text = " ".join(done.output.split())
    assert "lab rows of 20 subjects" in text and f"-> {output}" in text
    assert f"1 lines no rule can read -> {output.with_name('labs.rejects')}" in text
    assert 1 <= len(list(output.glob("subject_bucket=*"))) <= 3
    assert list((tmp_path / "out" / "labs.rejects").glob("part-*.parquet"))
