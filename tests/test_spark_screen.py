"""The Spark path's per-line screen and CSV lines, in plain Python (no Spark; tests/spark/ runs them on Spark).

A line Pathling's parser would refuse must never reach it (one refused value stops the whole job): the screen
sends it to the JSON reading, which gives the fact ``observation_fact`` gives, so the pull's rules set it aside
with pull's reason; a line that is not a resource goes to the rejects with its file and line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhir_lupus.pull import PulledLab, normal_range, observation_fact, write_rows
from fhir_lupus.pull._reverse import load_pull_rules
from fhir_lupus.spark import Reject, Screen, csv_line, rejects_path
from fhir_lupus.terminology import LabCatalogue, load_pack

PACK = load_pack()
RULES = load_pull_rules(PACK)
NORMAL = normal_range(LabCatalogue(PACK))
SCREEN = Screen(RULES.rows | RULES.pending | RULES.withdrawn, RULES.quantity_comparators, NORMAL)


def result(**extra: Any) -> dict[str, Any]:
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": "obs-1",
        "meta": {"lastUpdated": "2026-11-30T10:00:00.123+00:00", "versionId": "3"},
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2008-03-28T08:57:00+08:00",
        "valueQuantity": {"value": 1.0, "unit": "mg/dL", "comparator": "<"},
        "referenceRange": [{"low": {"value": 0.6}, "high": {"value": 1.2}}],
    }
    observation.update(extra)
    return observation


def screened(*lines: str) -> list[tuple[str, Any]]:
    return list(SCREEN((("Observation.ndjson", number), line) for number, line in enumerate(lines, start=1)))


def test_a_result_the_parser_accepts_goes_to_the_view_as_its_text() -> None:
    text = json.dumps(result(effectivePeriod={"start": "2008-03-28", "end": "2008-03"}))
    assert screened(text) == [("view", text)]


def test_the_pulls_statuses_and_comparators_are_what_the_mappings_say() -> None:
    assert {"final", "preliminary", "entered-in-error"} <= SCREEN.statuses
    assert SCREEN.comparators == {"<", "<=", ">=", ">"}  # mappings/fhir/pull.yaml, FHIR R4 QuantityComparator


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "bogus"},
        {"status": None},
        {"valueQuantity": {"value": 88, "comparator": "about"}},
        {"referenceRange": [{"low": {"value": 1, "comparator": "~"}}]},
        {"component": [{"valueQuantity": {"value": 1, "comparator": "ca"}}]},
        {"effectiveDateTime": "28/03/2008"},
        {"effectiveDateTime": "2008-03-28T08:57"},  # a time needs seconds and a zone in FHIR
        {"effectivePeriod": {"start": "2008-13-01"}},
        {"effectiveInstant": "2008-03-28"},
        {"issued": "yesterday"},
        {"meta": {"lastUpdated": "2026-11-30", "versionId": "3"}},
        {"valueQuantity": {"value": "1.0", "unit": "mg/dL"}},
        {"valueQuantity": {"value": True}},
        {"referenceRange": [{"high": {"value": "high"}}]},
        {"identifier": {"value": "1"}},  # an object where FHIR has an array: read as no identifier
    ],
)
def test_a_value_the_parser_may_refuse_sends_the_result_to_the_json_reading(changes: dict[str, Any]) -> None:
    resource = result(**changes)
    [(kind, (where, fact))] = screened("", json.dumps(resource))
    assert kind == "fact" and where == ("Observation.ndjson", 2)
    assert fact == observation_fact(json.loads(json.dumps(resource)), NORMAL)


@pytest.mark.parametrize("changes", [{"category": {"coding": []}}, {"subject": "Patient/p1"}, {"code": "x"}])
def test_a_result_of_the_wrong_shape_is_rejected_not_guessed(changes: dict[str, Any]) -> None:
    [(kind, reject)] = screened(json.dumps(result(**changes)))
    assert kind == "reject" and (reject.file, reject.line, reject.observation_id) == ("Observation.ndjson", 1, "obs-1")
    assert reject.reason.startswith("unreadable Observation (AttributeError")


def test_lines_that_are_no_resource_are_rejected_with_file_line_and_reason() -> None:
    patient = json.dumps({"resourceType": "Patient", "id": "p1"})
    found = screened(patient, '{"resourceType": "Observation", "id": ', "[1, 2]", json.dumps(result(code="x")))
    kinds = [kind for kind, _ in found]
    assert kinds == ["reject", "reject", "reject"]  # the Patient is the driver's; nothing for it here
    first, second, third = (payload for _, payload in found)
    assert (first.file, first.line, first.observation_id) == ("Observation.ndjson", 2, "")
    assert first.reason.startswith("not JSON")
    assert (second.line, second.reason) == (3, "not a FHIR resource (no resourceType)")
    assert (third.line, third.observation_id) == (4, "obs-1")
    assert third.reason.startswith("unreadable Observation (AttributeError")  # code is no object: no fact


def test_the_rejects_sit_beside_the_table() -> None:
    assert rejects_path(Path("out/labs.csv")) == Path("out/labs.rejects.csv")
    assert rejects_path(Path("out/labs")) == Path("out/labs.rejects")
    assert isinstance(Reject("f", 1, "", "why"), Reject)


def test_a_csv_line_is_the_pull_writers_record(tmp_path: Path) -> None:
    awkward = ["plain", 'a "quoted" word', "comma, inside", "line\nbreak", "", " lead", "µmol/L"]
    row = PulledLab(*awkward, *["x"] * (len(PulledLab.__dataclass_fields__) - len(awkward)))
    written = write_rows([row], tmp_path / "labs.csv", PulledLab).read_bytes().decode("utf-8")
    columns = list(PulledLab.__dataclass_fields__)
    values = [getattr(row, c) for c in columns]
    assert written == csv_line(columns) + "\r\n" + csv_line(values) + "\r\n"


def test_a_local_session_shuffles_in_a_few_partitions_per_core() -> None:
    from fhir_lupus.spark._session import _local_cores

    assert [_local_cores(m) for m in ("local", "local[2]", "local[3, 1]")] == [1, 2, 3]
    assert _local_cores("local[*]") >= 1
