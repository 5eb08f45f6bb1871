"""LabFact: the flat columns of a lab Observation, read from a resource or from the lab view's rows (no Spark here).

The Spark path (tests/spark/) classifies facts that Pathling's view made; these tests pin what both paths share:
the number text, the fact a resource gives, how view rows fold into facts, the selection over a fact, and the
view file's agreement with LabFact and the mapping pack.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import fields
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fhir_lupus.cli import app
from fhir_lupus.errors import MappingError
from fhir_lupus.model import StudyDefinition
from fhir_lupus.pull._fact import LabFact, normal_range, number_text, observation_fact
from fhir_lupus.pull._reverse import (
    PulledLab,
    UnmappedResult,
    classify_fact,
    code_index,
    load_pull_rules,
    reverse_map,
)
from fhir_lupus.pull._selection import LabSelection, lab_category
from fhir_lupus.spark._view import PAIR_FIELDS, RAW_FIELDS, fact_resource, facts_from_rows, load_lab_view, with_raw
from fhir_lupus.terminology import LabCatalogue, default_mappings_dir, load_pack

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
MEANING = "http://terminology.hl7.org/CodeSystem/referencerange-meaning"
NORMAL = (MEANING, "normal")


def creatinine(**extra: Any) -> dict[str, Any]:
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": "obs-1",
        "meta": {"lastUpdated": "2026-11-30T10:00:00.123+00:00", "versionId": "3"},
        "identifier": [{"system": "urn:lab", "value": "A|1"}, {"value": "no-system"}],
        "status": "final",
        "category": [{"coding": [{"system": "urn:cat", "code": "laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": "2160-0"}, {"code": "local-only"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2008-03-28T08:57:00+08:00",
        "valueQuantity": {"value": 1.0, "unit": "mg/dL", "system": UCUM, "code": "mg/dL", "comparator": "<"},
        "referenceRange": [
            {"type": {"coding": [{"system": MEANING, "code": "treatment"}]}, "low": {"value": 5}},
            {"text": "no bounds"},
            {"low": {"value": 0.6, "unit": "mg/dL"}, "high": {"value": 1.2, "system": UCUM, "code": "mg/dL"}},
        ],
    }
    observation.update(extra)
    return observation


@pytest.mark.parametrize(
    ("parsed", "text", "expected"),
    [
        (88, "88", "88"),
        (1.0, "1.0", "1.0"),
        (1.25, "1.25", "1.25"),
        (100.0, "100.0", "100.0"),  # JSON 1e2 or 100.0: a float for Python's reader
        (1e-07, "1.0E-7", "1e-07"),  # Spark's get_json_object writes floats as Java prints doubles
        (12345678.9, "1.23456789E7", "12345678.9"),
        (-0.0, "-0.0", "-0.0"),
        (None, None, None),
    ],
)
def test_number_text_agrees_for_parsed_numbers_and_their_json_text(
    parsed: Any, text: str | None, expected: str
) -> None:
    assert number_text(parsed) == expected
    assert number_text(text) == expected


def test_observation_fact_reads_every_column() -> None:
    fact = observation_fact(creatinine(), NORMAL)
    assert fact == LabFact(
        observation_id="obs-1",
        patient="Patient/p1",
        status="final",
        last_updated="2026-11-30T10:00:00.123+00:00",
        version_id="3",
        identifiers=(("urn:lab", "A|1"), ("", "no-system")),
        codes=((LOINC, "2160-0"), ("", "local-only")),
        categories=(("urn:cat", "laboratory"),),
        effective_date_time="2008-03-28T08:57:00+08:00",
        quantity_value="1.0",
        quantity_unit="mg/dL",
        quantity_system=UCUM,
        quantity_code="mg/dL",
        quantity_comparator="<",
        range_low_value="0.6",  # the treatment range comes first, the range without bounds is skipped
        range_high_value="1.2",
        range_high_system=UCUM,
        range_high_code="mg/dL",
    )
    assert fact.has_quantity and not fact.has_concept and fact.collected == "2008-03-28T08:57:00+08:00"


def test_a_period_and_a_coded_value(catalogue: LabCatalogue) -> None:
    observation = creatinine(
        effectivePeriod={"start": "2008-01-01", "end": "2008-01-02"},
        valueCodeableConcept={"coding": [{"system": "urn:x", "code": "y"}], "text": "+"},
    )
    del observation["effectiveDateTime"], observation["valueQuantity"]
    fact = observation_fact(observation, NORMAL)
    assert (fact.effective_start, fact.effective_end, fact.collected) == ("2008-01-01", "2008-01-02", "2008-01-01")
    assert fact.concept_codes == (("urn:x", "y"),) and fact.concept_text == "+" and fact.has_concept


def test_reverse_map_is_classify_fact_of_the_fact(catalogue: LabCatalogue, study: StudyDefinition) -> None:
    rules, by_code = load_pull_rules(), code_index(catalogue)
    for observation in (creatinine(), creatinine(status="preliminary"), creatinine(status="cancelled")):
        args = ("MSC-001", by_code, catalogue, study, None, 14, rules)
        expected = reverse_map(observation, *args)
        assert classify_fact(observation_fact(observation, normal_range(catalogue)), *args) == expected
    row = reverse_map(creatinine(), "MSC-001", by_code, catalogue, study, None, 14, rules)
    assert isinstance(row, PulledLab)
    assert row.reported_value == "<1.0"  # the number's own text, not Spark's normalised decimal "1"
    assert row.result_id == "urn:lab|A|1" and row.last_updated == "2026-11-30T10:00:00.123+00:00"
    aside = reverse_map(creatinine(status="cancelled"), "MSC-001", by_code, catalogue, study, None, 14, rules)
    assert isinstance(aside, UnmappedResult) and aside.value == "<1.0 mg/dL" and aside.codes.endswith(";|local-only")


def test_a_quantity_without_a_value_is_set_aside_not_a_crash(catalogue: LabCatalogue, study: StudyDefinition) -> None:
    observation = creatinine(valueQuantity={"unit": "mg/dL", "system": UCUM, "code": "mg/dL"})
    record = reverse_map(observation, "MSC-001", code_index(catalogue), catalogue, study, None, 14, load_pull_rules())
    assert isinstance(record, UnmappedResult) and record.reason == "quantity without a value"


def view_rows(observation: dict[str, Any], fact: LabFact) -> list[dict[str, Any]]:
    """The rows the lab view gives for ``observation``: a fact row, then one row per pair, scalars repeated."""
    scalars = {f.name: getattr(fact, f.name) for f in fields(LabFact) if f.name not in PAIR_FIELDS.values()}
    scalars = {k: v for k, v in scalars.items() if k not in RAW_FIELDS}
    scalars["effective_timing"] = "true" if fact.effective_timing else "false"  # the view's columns come as text
    rows = [{**scalars, "pair_kind": "fact", "pair_system": "", "pair_value": ""}]
    for kind, name in PAIR_FIELDS.items():
        for system, value in getattr(fact, name):
            rows.append({**scalars, "pair_kind": kind, "pair_system": system or None, "pair_value": value or None})
    return rows


def test_view_rows_fold_into_the_fact_of_the_resource() -> None:
    one = creatinine()
    two = creatinine(id="obs-2", valueCodeableConcept={"coding": [{"system": "urn:x", "code": "y"}]})
    del two["valueQuantity"], two["identifier"]
    facts = [observation_fact(o, NORMAL) for o in (one, two)]
    rows = [row for observation, fact in zip((one, two), facts, strict=True) for row in view_rows(observation, fact)]
    folded = list(facts_from_rows(rows))
    raw = [(None if f.quantity_value is None else f.quantity_value, f.last_updated, None) for f in facts]
    assert [with_raw(f, *r) for f, r in zip(folded, raw, strict=True)] == facts


def test_a_pair_row_away_from_its_fact_row_is_an_error() -> None:
    one, two = creatinine(), creatinine(id="obs-2")
    rows_one = view_rows(one, observation_fact(one, NORMAL))
    rows_two = view_rows(two, observation_fact(two, NORMAL))
    with pytest.raises(ValueError, match="Observation/obs-1 does not follow its fact row"):
        list(facts_from_rows([rows_one[0], rows_two[0], *rows_one[1:]]))


@pytest.mark.parametrize(
    "effective",
    [
        {"effectiveDateTime": "2008-03-28T08:57:00+08:00"},
        {"effectiveDateTime": "2008-02"},
        {"effectiveInstant": "2008-01-01T00:00:00Z"},
        {"effectivePeriod": {"start": "2007-12-01"}},
        {"effectivePeriod": {"start": "2007-12-01", "end": "2007-12-31"}},
        {"effectiveTiming": {"event": ["2007-01-01"]}},
        {},
    ],
)
def test_the_selection_reads_a_fact_as_it_reads_the_resource(
    catalogue: LabCatalogue, effective: dict[str, Any]
) -> None:
    category = lab_category(catalogue.pack)
    selection = LabSelection(category, frozenset(code_index(catalogue)))
    system, code = category.split("|")
    for categories in ([], [{"coding": [{"system": system, "code": code}]}]):
        for coding in ([{"system": LOINC, "code": "2160-0"}], [{"system": LOINC, "code": "0000-0"}]):
            observation = {**creatinine(category=categories, code={"coding": coding}), **effective}
            if "effectiveDateTime" not in effective:
                del observation["effectiveDateTime"]
            resource = fact_resource(observation_fact(observation, NORMAL))
            for floor in (None, date(2008, 1, 1), date(2008, 2, 1), date(2008, 4, 1)):
                assert selection.wanted(resource, floor) == selection.wanted(observation, floor), (observation, floor)


def test_the_view_selects_every_labfact_column_and_names_its_source(catalogue: LabCatalogue) -> None:
    view = load_lab_view(normal_range(catalogue))
    columns = [c["name"] for select in view["select"] for c in select.get("column", [])]
    branches = view["select"][1]["unionAll"]
    pair_kinds = {c["path"].strip("'") for b in branches for c in b["column"] if c["name"] == "pair_kind"}
    assert pair_kinds == {"fact", *PAIR_FIELDS}
    covered = set(columns) | set(PAIR_FIELDS.values()) | set(RAW_FIELDS)
    assert covered == {f.name for f in fields(LabFact)}
    assert "SQL on FHIR v2" in view["description"]


def test_a_view_that_disagrees_with_the_mapping_pack_is_refused(tmp_path: Path, catalogue: LabCatalogue) -> None:
    own = tmp_path / "mappings"
    shutil.copytree(default_mappings_dir(), own)
    path = own / "views" / "lab_observation.json"
    view = json.loads(path.read_text())
    view["constant"][0]["valueUri"] = "urn:other"
    path.write_text(json.dumps(view))
    with pytest.raises(MappingError, match="normal_meaning is 'urn:other'"):
        load_lab_view(normal_range(catalogue), load_pack(own))
    view["select"][0]["column"] = [c for c in view["select"][0]["column"] if c["name"] != "status"]
    path.write_text(json.dumps(view))
    with pytest.raises(MappingError, match="select has no column status"):
        load_lab_view(("urn:other", "normal"), load_pack(own))


def test_without_the_spark_extra_the_command_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyspark", None)  # as if not installed
    done = CliRunner().invoke(app, ["spark-labs", str(tmp_path), "-o", str(tmp_path / "labs.csv")])
    assert done.exit_code == 2
    assert "pip install 'fhir_lupus[spark]'" in " ".join(done.output.split())
