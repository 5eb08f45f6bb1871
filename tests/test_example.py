"""The shipped example dataset maps completely, and every resource passes the models and the invariants."""

from __future__ import annotations

import csv
from typing import Any

import pytest
from support import EXAMPLE

from fhir_lupus.bundle import transaction_bundle
from fhir_lupus.model import LoadReport, load_trial
from fhir_lupus.pipeline import MapResult, map_trial
from fhir_lupus.source import TrialSource
from fhir_lupus.validation import check_invariants, validate_resource


@pytest.fixture(scope="module")
def example() -> tuple[MapResult, LoadReport]:
    data, report = load_trial(EXAMPLE)
    return map_trial(TrialSource.loaded(data, report)), report


def _rows(name: str) -> int:
    with (EXAMPLE / name).open(encoding="utf-8") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def test_nothing_rejected_and_every_row_mapped(example: tuple[MapResult, LoadReport]) -> None:
    result, report = example
    assert report.rejects == []
    counts = result.counts
    assert counts["Patient"] == counts["ResearchSubject"] == _rows("subjects.csv") == 20
    assert counts["Encounter"] == _rows("visits.csv")
    assert counts["Procedure"] == _rows("procedures.csv")
    assert counts["Observation"] == _rows("labs.csv") + _rows("sledai.csv") + _rows("treg.csv")


def test_every_resource_validates_and_keeps_the_invariants(example: tuple[MapResult, LoadReport]) -> None:
    result, _ = example
    for resource in result.resources:
        validate_resource(resource, "R4")
        assert check_invariants(resource) == [], resource["id"]


def test_example_reports_the_planted_deviation_and_dropouts(example: tuple[MapResult, LoadReport]) -> None:
    result, report = example
    deviations = [f for f in report.findings if f.kind == "protocol-deviation"]
    assert [d.message.split(":")[0] for d in deviations] == ["MSC-013"]
    withdrawn = [r for r in result.resources if r["resourceType"] == "ResearchSubject" and r["status"] == "withdrawn"]
    assert len(withdrawn) == 3


def test_example_labs_use_chinese_hospital_units(example: tuple[MapResult, LoadReport]) -> None:
    result, _ = example
    units: dict[str, set[str]] = {}
    for resource in result.resources:
        if resource["resourceType"] == "Observation" and "valueQuantity" in resource:
            units.setdefault(resource["code"]["coding"][0]["code"], set()).add(resource["valueQuantity"]["code"])
    assert units["4485-9"] == {"g/L"}  # C3
    assert units["14682-9"] == {"umol/L"}  # creatinine, molar
    assert units["22664-7"] == {"mmol/L"}  # urea, not BUN
    assert units["2889-4"] == {"g/(24.h)"}


def test_bundle_of_the_example(example: tuple[MapResult, LoadReport]) -> None:
    result, _ = example
    bundle: dict[str, Any] = transaction_bundle(result.resources)
    assert len(bundle["entry"]) == len(result.resources)
    assert check_invariants(bundle) == []
