"""Push/pull pieces that need no server: reverse mapping, visit windows, journal, levels, diffs."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from fhir_lupus.bundle import dependency_sorted
from fhir_lupus.journal import Journal, JournalEntry
from fhir_lupus.model import StudyDefinition
from fhir_lupus.pull import PulledLab, UnmappedResult
from fhir_lupus.pull._reverse import code_index, load_pull_rules, reverse_map
from fhir_lupus.pull._visits import assign_visit
from fhir_lupus.push import content_hash
from fhir_lupus.push._dryrun import diff_paths
from fhir_lupus.terminology import LabCatalogue

UCUM = "http://unitsofmeasure.org"
BL = date(2008, 1, 5)


def observation(code: str, **value: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "o1",
        "meta": {"lastUpdated": "2026-11-25T12:00:00.000+00:00"},
        "identifier": [{"system": "https://fhir-lupus.example.org/fhir/sid/NCT00698191/lab-result", "value": "L-1"}],
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "effectiveDateTime": "2008-02-06T08:00:00+08:00",
        **value,
    }


def reverse(obs: dict[str, Any], catalogue: LabCatalogue, study: StudyDefinition) -> PulledLab | UnmappedResult:
    return reverse_map(obs, "MSC-001", code_index(catalogue), catalogue, study, BL, 7, load_pull_rules())


class TestReverseMapping:
    def test_mass_creatinine_is_normalised_to_the_trial_unit(
        self, catalogue: LabCatalogue, study: StudyDefinition
    ) -> None:
        row = reverse(
            observation(
                "2160-0",
                valueQuantity={"value": 1.2, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"},
                referenceRange=[{"low": {"value": 0.5, "system": UCUM, "code": "mg/dL"}}],
            ),
            catalogue,
            study,
        )
        assert isinstance(row, PulledLab)
        assert (row.analyte, row.value, row.unit, row.reported_value, row.reported_unit) == (
            "creatinine",
            "106.082",
            "umol/L",
            "1.2",
            "mg/dL",
        )
        assert row.ref_low == "44.2008" and row.ref_high == ""
        assert (row.result_id, row.visit_code, row.window, row.days_from_due) == ("L-1", "M01", "in-window", "2")

    def test_comparator_ordinal_and_titer(self, catalogue: LabCatalogue, study: StudyDefinition) -> None:
        dsdna = reverse(
            observation("5130-0", valueQuantity={"value": 10, "comparator": "<", "system": UCUM, "code": "[IU]/mL"}),
            catalogue,
            study,
        )
        assert isinstance(dsdna, PulledLab) and dsdna.value == "<10" and dsdna.unit == "[IU]/mL"
        dip = reverse(
            observation(
                "20454-5",
                valueCodeableConcept={
                    "coding": [{"system": "http://snomed.info/sct", "code": "260348001"}],
                    "text": "2+",
                },
            ),
            catalogue,
            study,
        )
        assert isinstance(dip, PulledLab) and dip.value == "2+"
        ana = reverse(observation("5048-4", valueString="1:320"), catalogue, study)
        assert isinstance(ana, PulledLab) and (ana.analyte, ana.value) == ("ana", "1:320")

    def test_unit_from_the_display_when_no_ucum_code(self, catalogue: LabCatalogue, study: StudyDefinition) -> None:
        row = reverse(observation("14682-9", valueQuantity={"value": 88, "unit": "µmol/L"}), catalogue, study)
        assert isinstance(row, PulledLab) and (row.value, row.unit) == ("88", "umol/L")

    def test_unreadable_results_are_kept_aside_with_a_reason(
        self, catalogue: LabCatalogue, study: StudyDefinition
    ) -> None:
        unknown = reverse(
            observation("2345-7", valueQuantity={"value": 5.4, "system": UCUM, "code": "mmol/L"}), catalogue, study
        )
        assert isinstance(unknown, UnmappedResult) and unknown.reason == "no code of the lab catalogue"
        assert unknown.codes == "http://loinc.org|2345-7"
        wrong_unit = reverse(
            observation("4485-9", valueQuantity={"value": 5, "system": UCUM, "code": "mmol/L"}), catalogue, study
        )
        assert isinstance(wrong_unit, UnmappedResult) and "fits no catalogue code" in wrong_unit.reason
        assert wrong_unit.value == "5 mmol/L"
        no_value = reverse(observation("4485-9"), catalogue, study)
        assert isinstance(no_value, UnmappedResult) and "no value" in no_value.reason


class TestVisitWindows:
    @pytest.mark.parametrize(
        ("collected", "expected"),
        [
            ("2008-01-05", ("BL", "in-window", "0")),
            ("2008-02-10", ("M01", "in-window", "6")),
            ("2008-02-14", ("", "outside-windows", "10")),  # M01 due 02-04: 10 days late
            ("2009-12-27", ("M24", "in-window", "2")),
            ("2010-06-25", ("FU30", "in-window", "2")),  # BL + 900 days = 2010-06-23
            ("2010-01-24", ("", "outside-windows", "0")),  # month 25 is not a protocol visit
            ("2007-12-01", ("", "outside-windows", "-35")),
        ],
    )
    def test_assignment(self, study: StudyDefinition, collected: str, expected: tuple[str, str, str]) -> None:
        assert assign_visit(collected + "T08:00:00+08:00", BL, study, 7) == expected

    def test_without_a_baseline_nothing_is_assigned(self, study: StudyDefinition) -> None:
        assert assign_visit("2008-02-10", None, study, 7)[1] == "outside-windows"


class TestJournal:
    def test_records_survive_reopening_and_update_in_place(self, tmp_path: Path) -> None:
        path = tmp_path / "j.sqlite"
        with Journal(path) as journal:
            journal.start_push("p1", "http://s/fhir/", "data")
            journal.record("http://s/fhir/", "p1", [JournalEntry("Patient", "sys|1", "h1", "7", "1", "created")])
        with Journal(path) as journal:
            journal.record("http://s/fhir/", "p2", [JournalEntry("Patient", "sys|1", "h2", "7", "2", "updated")])
            entries = journal.entries("http://s/fhir/")
            assert entries == {("Patient", "sys|1"): JournalEntry("Patient", "sys|1", "h2", "7", "2", "updated")}
            assert journal.entries("http://other/fhir/") == {}
            assert journal.pushes("http://s/fhir/") == [("p1", "running", "")]
            journal.set_high_water("http://s/fhir/", "NCT1", "2026-01-01T00:00:00Z")
            journal.set_high_water("http://s/fhir/", "NCT1", "2026-02-01T00:00:00Z")
            assert journal.high_water("http://s/fhir/", "NCT1") == "2026-02-01T00:00:00Z"


def test_dependency_order_puts_referenced_resources_first() -> None:
    lab = {"resourceType": "Observation", "id": "lab", "subject": {"reference": "Patient/p"}}
    score = {"resourceType": "Observation", "id": "score", "derivedFrom": [{"reference": "Observation/lab"}]}
    patient = {"resourceType": "Patient", "id": "p"}
    assert [r["id"] for r in dependency_sorted([score, lab, patient])] == ["p", "lab", "score"]


def test_content_hash_ignores_key_order_but_not_values() -> None:
    assert content_hash({"a": 1, "b": [1, 2]}) == content_hash({"b": [1, 2], "a": 1})
    assert content_hash({"a": 1}) != content_hash({"a": 2})


def test_diff_paths() -> None:
    before = {"code": {"coding": [{"code": "1", "display": "x"}]}, "valueQuantity": {"value": 1.0}}
    after = {
        "code": {"coding": [{"code": "1", "display": "y"}]},
        "valueQuantity": {"value": 1},
        "note": [{"text": "n"}],
    }
    assert diff_paths(before, after) == ["code.coding[0].display", "note"]
