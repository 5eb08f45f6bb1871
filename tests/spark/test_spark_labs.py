"""The Spark path gives the lab table of the single-machine path (``sync.local.labs_from_ndjson``), row for row.

Both read the same NDJSON; the Spark path flattens Observations with Pathling's SQL-on-FHIR view and classifies
the facts on the executors. Equal lists of rows and equal CSV bytes, on the whole example trial and on results
written to be awkward: number literals that Spark's decimals would reshape, a treatment range before the normal
one, codings without a system, pending and withdrawn statuses, a Patient who is no subject, a duplicate line,
a file mixing Patients and Observations.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from fhir_lupus.model import StudyDefinition
from fhir_lupus.pull._local import labs_from_ndjson, read_ndjson
from fhir_lupus.pull._reverse import PulledLab, UnmappedResult, normal_range
from fhir_lupus.pull._store import table_order, write_rows
from fhir_lupus.spark import spark_labs
from fhir_lupus.terminology import LabCatalogue


def both(folder: Path, study: StudyDefinition, catalogue: LabCatalogue, spark: Any) -> tuple[Any, list[Any], Any]:
    subjects, records = labs_from_ndjson(sorted(folder.glob("*.ndjson")), study, catalogue)
    local = table_order(list(records))
    return spark_labs(folder, study, catalogue, spark=spark), local, subjects


def assert_same_table(result: Any, local: list[Any], tmp_path: Path) -> None:
    assert result.rows == [r for r in local if isinstance(r, PulledLab)]
    assert result.unmapped == [r for r in local if isinstance(r, UnmappedResult)]
    spark_csv = write_rows(result.rows, tmp_path / "spark.csv", PulledLab).read_bytes()
    local_csv = write_rows([r for r in local if isinstance(r, PulledLab)], tmp_path / "local.csv", PulledLab)
    assert spark_csv == local_csv.read_bytes()


def test_the_whole_example_gives_the_local_table(
    spark: Any, example_ndjson: Path, study: StudyDefinition, catalogue: LabCatalogue, tmp_path: Path
) -> None:
    result, local, subjects = both(example_ndjson, study, catalogue, spark)
    assert len(result.rows) > 8000 and result.subjects == 20
    assert result.others == subjects.others == 0
    assert_same_table(result, local, tmp_path)


def _literal(resource: dict[str, Any], placeholder: str, literal: str) -> str:
    return json.dumps(resource).replace(f'"{placeholder}"', literal)


def test_awkward_results_give_the_local_table(
    spark: Any, example_ndjson: Path, study: StudyDefinition, catalogue: LabCatalogue, tmp_path: Path
) -> None:
    folder = tmp_path / "ndjson"
    folder.mkdir()
    for name in ("ResearchStudy", "ResearchSubject", "Encounter", "Procedure"):
        shutil.copy(example_ndjson / f"{name}.ndjson", folder)
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

    result, local, subjects = both(folder, study, catalogue, spark)
    assert_same_table(result, local, tmp_path)
    assert result.others == subjects.others == 1
    by_id = {r.observation_id: r for r in [*result.rows, *result.unmapped]}
    assert by_id["number-0"].reported_value == "88.0" and by_id["number-1"].reported_value == "100.0"
    assert by_id["number-5"].reported_value == "7" and by_id["number-0"].last_updated.endswith("+08:00")
    assert isinstance(by_id["withdrawn"], UnmappedResult) and isinstance(by_id["in-mixed"], PulledLab)
    assert by_id["their-id"].result_id == "|no-system"
    typed = by_id["typed-normal"]
    assert isinstance(typed, PulledLab) and typed.ref_low and typed.ref_low == by_id["comparator"].ref_low


def test_a_missing_folder_is_a_clear_error(spark: Any, study: StudyDefinition, catalogue: LabCatalogue) -> None:
    from fhir_lupus.errors import FhirLupusError

    with pytest.raises(FhirLupusError, match="not a directory of NDJSON files"):
        spark_labs(Path("/nonexistent/ndjson"), study, catalogue, spark=spark)


def test_a_result_pathling_cannot_parse_is_named_not_a_stack_trace(
    spark: Any, example_ndjson: Path, study: StudyDefinition, catalogue: LabCatalogue, tmp_path: Path
) -> None:
    from fhir_lupus.errors import FhirLupusError

    folder = tmp_path / "ndjson"
    folder.mkdir()
    shutil.copy(example_ndjson / "ResearchStudy.ndjson", folder)
    shutil.copy(example_ndjson / "ResearchSubject.ndjson", folder)
    base = next(read_ndjson(example_ndjson / "Observation.ndjson"))
    bad = {**base, "valueQuantity": {**base["valueQuantity"], "comparator": "about"}}
    (folder / "Observation.ndjson").write_text(json.dumps(bad) + "\n")
    with pytest.raises(FhirLupusError, match=r"not valid FHIR R4 for Pathling's parser \(.*comparator"):
        spark_labs(folder, study, catalogue, spark=spark)
