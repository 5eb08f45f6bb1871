"""Pull pieces without a server: status rules, hospital-written labs, the search object, the merging store."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from fhir_lupus.client import Capabilities, UnsupportedInteraction
from fhir_lupus.journal import Journal
from fhir_lupus.model import StudyDefinition
from fhir_lupus.pull import PulledLab, PullStore, UnmappedResult
from fhir_lupus.pull._reverse import code_index, load_pull_rules, reverse_map
from fhir_lupus.pull._search import Search, matches
from fhir_lupus.terminology import LabCatalogue

UCUM = "http://unitsofmeasure.org"
BL = date(2008, 1, 5)
HOSPITAL = "urn:oid:1.2.156.112604.1.2.1"  # a hospital lab system's own identifier namespace


def lab(
    status: str, *, oid: str = "o1", version: str = "1", updated: str = "2026-11-25T12:00:00Z", **extra: Any
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "meta": {"versionId": version, "lastUpdated": updated},
        "status": status,
        "identifier": [{"system": HOSPITAL, "value": f"ACC-{oid}"}],
        "code": {
            "coding": [
                {"system": "urn:oid:1.2.156.112604.1.2.3", "code": "C3", "display": "补体C3"},
                {"system": "http://loinc.org", "code": "4485-9"},
            ]
        },
        "effectiveDateTime": "2008-02-06T08:00:00+08:00",
        "valueQuantity": {"value": 0.8, "unit": "g/L", "system": UCUM, "code": "g/L"},
        **extra,
    }


def reverse(obs: dict[str, Any], catalogue: LabCatalogue, study: StudyDefinition) -> PulledLab | UnmappedResult:
    return reverse_map(obs, "MSC-001", code_index(catalogue), catalogue, study, BL, 7, load_pull_rules())


class TestStatus:
    @pytest.mark.parametrize("status", ["final", "amended", "corrected"])
    def test_final_results_are_rows_with_their_status(
        self, status: str, catalogue: LabCatalogue, study: StudyDefinition
    ) -> None:
        row = reverse(lab(status), catalogue, study)
        assert isinstance(row, PulledLab) and (row.status, row.analyte, row.value) == (status, "c3", "0.8")

    @pytest.mark.parametrize("status", ["preliminary", "registered", "unknown"])
    def test_pending_results_are_kept_aside_with_their_status(
        self, status: str, catalogue: LabCatalogue, study: StudyDefinition
    ) -> None:
        kept = reverse(lab(status), catalogue, study)
        assert isinstance(kept, UnmappedResult) and kept.status == status and "not final" in kept.reason
        assert kept.value == "0.8 g/L" and kept.result_id == f"{HOSPITAL}|ACC-o1"

    @pytest.mark.parametrize("status", ["entered-in-error", "cancelled"])
    def test_withdrawn_results_never_become_rows(
        self, status: str, catalogue: LabCatalogue, study: StudyDefinition
    ) -> None:
        kept = reverse(lab(status), catalogue, study)
        assert isinstance(kept, UnmappedResult) and "withdrawn" in kept.reason and kept.status == status

    def test_a_status_that_is_not_one_is_set_aside(self, catalogue: LabCatalogue, study: StudyDefinition) -> None:
        kept = reverse(lab("done"), catalogue, study)
        assert isinstance(kept, UnmappedResult) and "not an Observation status" in kept.reason


class TestHospitalLabs:
    def test_us_units_a_comparator_and_the_hospital_identifier(
        self, catalogue: LabCatalogue, study: StudyDefinition
    ) -> None:
        creatinine = lab(
            "final",
            code={
                "coding": [{"system": "urn:local", "code": "CREA"}, {"system": "http://loinc.org", "code": "2160-0"}]
            },
            valueQuantity={"value": 1.5, "comparator": ">", "unit": "mg/dL"},  # unit text only, no UCUM code
            referenceRange=[{"high": {"value": 1.1, "system": UCUM, "code": "mg/dL"}}],
        )
        row = reverse(creatinine, catalogue, study)
        assert isinstance(row, PulledLab)
        assert (row.analyte, row.value, row.unit, row.reported_value) == ("creatinine", ">132.603", "umol/L", ">1.5")
        assert row.ref_high == "97.2419" and row.result_id == f"{HOSPITAL}|ACC-o1" and row.visit_code == "M01"

    @pytest.mark.parametrize(
        ("loinc", "ucum"),
        [("98979-8", "mL/min"), ("2164-2", "mL/min/{1.73_m2}")],  # eGFR in mL/min; clearance per 1.73 m2
    )
    def test_rate_per_body_surface_is_never_relabelled_as_a_raw_rate(
        self, catalogue: LabCatalogue, study: StudyDefinition, loinc: str, ucum: str
    ) -> None:
        obs = lab(
            "final",
            code={"coding": [{"system": "http://loinc.org", "code": loinc}]},
            valueQuantity={"value": 85, "unit": ucum, "system": UCUM, "code": ucum},
        )
        kept = reverse(obs, catalogue, study)
        assert isinstance(kept, UnmappedResult) and f"unit {ucum} fits no catalogue code" in kept.reason
        assert kept.value == f"85 {ucum}"

    def test_clearance_per_body_surface_has_its_own_analyte(
        self, catalogue: LabCatalogue, study: StudyDefinition
    ) -> None:
        obs = lab(
            "final",
            code={"coding": [{"system": "http://loinc.org", "code": "12195-4"}]},
            valueQuantity={"value": 85, "unit": "mL/min/{1.73_m2}", "system": UCUM, "code": "mL/min/{1.73_m2}"},
        )
        row = reverse(obs, catalogue, study)
        assert isinstance(row, PulledLab) and (row.analyte, row.value, row.unit) == (
            "creatinine_clearance_bsa",
            "85",
            "mL/min/{1.73_m2}",
        )

    def test_ordinal_answers_are_matched_with_their_system(
        self, catalogue: LabCatalogue, study: StudyDefinition
    ) -> None:
        def dipstick(system: str) -> dict[str, Any]:
            return lab(
                "final",
                code={"coding": [{"system": "http://loinc.org", "code": "20454-5"}]},
                valueQuantity=None,
                valueCodeableConcept={"coding": [{"system": system, "code": "260348001"}], "text": "++"},
            )

        row = reverse(dipstick("http://snomed.info/sct"), catalogue, study)
        assert isinstance(row, PulledLab) and row.value == "2+"
        # the same digits in a local code system mean nothing to us: set aside, not read as "2+"
        kept = reverse(dipstick("urn:local:answers"), catalogue, study)
        assert isinstance(kept, UnmappedResult) and "not an ordinal" in kept.reason

    def test_the_normal_reference_range_is_chosen_not_the_first(
        self, catalogue: LabCatalogue, study: StudyDefinition
    ) -> None:
        meaning = "http://terminology.hl7.org/CodeSystem/referencerange-meaning"
        obs = lab(
            "final",
            referenceRange=[
                {"low": {"value": 1.2}, "type": {"coding": [{"system": meaning, "code": "treatment"}]}},
                {"text": "see report"},
                {
                    "low": {"value": 0.9},
                    "high": {"value": 1.8},
                    "type": {"coding": [{"system": meaning, "code": "normal"}]},
                },
            ],
        )
        row = reverse(obs, catalogue, study)
        assert isinstance(row, PulledLab) and (row.ref_low, row.ref_high) == ("0.9", "1.8")

    def test_a_treg_percentage_is_a_trial_row(self, catalogue: LabCatalogue, study: StudyDefinition, pack: Any) -> None:
        obs = lab(
            "final",
            identifier=[{"system": pack.identifier_system("treg", study=study.nct_id), "value": "T-MSC-001-M03"}],
            code={"coding": [{"system": pack.system_uri("project"), "code": "treg-percent"}]},
            effectiveDateTime="2008-04-04T08:00:00+08:00",
            valueQuantity={"value": 4.2, "unit": "%", "system": UCUM, "code": "%"},
        )
        row = reverse(obs, catalogue, study)
        assert isinstance(row, PulledLab)
        assert (row.result_id, row.analyte, row.value, row.unit, row.visit_code, row.loinc) == (
            "T-MSC-001-M03",
            "treg_percent",
            "4.2",
            "%",
            "M03",
            "",
        )

    def test_only_a_local_code_is_set_aside(self, catalogue: LabCatalogue, study: StudyDefinition) -> None:
        local = lab("final", code={"coding": [{"system": "urn:local", "code": "C3"}]})
        kept = reverse(local, catalogue, study)
        assert isinstance(kept, UnmappedResult) and kept.reason == "no code of the lab catalogue"
        assert kept.codes == "urn:local|C3"


def capabilities(*params: str) -> Capabilities:
    return Capabilities.from_statement(
        {
            "rest": [
                {
                    "mode": "server",
                    "resource": [
                        {
                            "type": "Observation",
                            "interaction": [{"code": "search-type"}],
                            "searchParam": [{"name": p} for p in params],
                        }
                    ],
                }
            ]
        }
    )


class TestSearch:
    def test_what_the_server_lacks_is_filtered_here(self) -> None:
        search = Search("Observation").where(
            capabilities("patient"), patient="Patient/1", code="http://loinc.org|4485-9,http://loinc.org|4498-2"
        )
        assert search.query() == {"patient": "Patient/1"}
        assert search.local == (("code", "http://loinc.org|4485-9,http://loinc.org|4498-2"),)
        assert search.fallbacks == ("Observation?code is filtered here: the server does not search by it",)
        with pytest.raises(UnsupportedInteraction, match="by value-quantity"):
            search.where(capabilities("patient"), **{"value-quantity": "gt5"})

    def test_local_filters_read_like_a_server(self) -> None:
        obs = lab("final", subject={"reference": "Patient/1"}, category=[{"coding": [{"code": "laboratory"}]}])
        assert matches(obs, "code", "http://loinc.org|4485-9") and not matches(obs, "code", "http://loinc.org|1-8")
        assert matches(obs, "code", "C3") and matches(obs, "category", "laboratory")
        assert matches(obs, "patient", "Patient/1,Patient/2") and not matches(obs, "patient", "Patient/2")
        assert matches(obs, "_lastUpdated", "ge2026-11-25T12:00:00Z")  # ge keeps the mark's own instant
        assert not matches(obs, "_lastUpdated", "gt2026-11-25T12:00:00+00:00")
        assert matches(obs, "date", "ge2008-01-01") and not matches(obs, "date", "lt2008-02-01")


class TestPullStore:
    def record(self, oid: str, version: str, updated: str, *, value: str = "0.8", row: bool = True) -> Any:
        if row:
            return PulledLab(
                f"L-{oid}",
                "MSC-001",
                "M01",
                "c3",
                value,
                "g/L",
                "",
                "",
                "",
                "2008-02-06",
                "in-window",
                "2",
                "4485-9",
                value,
                "g/L",
                oid,
                updated,
                "final",
                version,
            )
        return UnmappedResult(
            "MSC-001",
            oid,
            "http://loinc.org|4485-9",
            value,
            "2008-02-06",
            "status entered-in-error: withdrawn by its source, never a trial row",
            "entered-in-error",
            f"L-{oid}",
            updated,
            version,
        )

    def merge(self, store: PullStore, journal: Journal, *records: Any, replace_all: bool = False) -> Any:
        store.stage(records)
        with store.transaction():
            return store.merge(replace_all=replace_all)

    def test_a_stage_commits_without_waiting_for_the_disk_and_the_merge_with(self, tmp_path: Path) -> None:
        """A stage is committed under synchronous=NORMAL (lost in a crash, it is fetched again); the connection is
        back at FULL afterwards, so the merge's commit, which moves the mark, syncs the log with every stage."""
        with Journal(tmp_path / "j.sqlite") as journal, PullStore(journal.path, "http://s/fhir/", "NCT1") as store:
            store.stage([self.record("a", "1", "2026-01-01T00:00:00Z")])
            assert store._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
            assert store._db.execute("SELECT COUNT(*) FROM pull_stage").fetchone() == (1,)
            with store.transaction():
                assert store.merge(replace_all=False).total_rows == 1

    def test_newer_versions_win_same_versions_are_unchanged_and_withdrawals_remove_rows(self, tmp_path: Path) -> None:
        with Journal(tmp_path / "j.sqlite") as journal, PullStore(journal.path, "http://s/fhir/", "NCT1") as store:
            first = self.merge(
                store,
                journal,
                self.record("a", "1", "2026-01-01T00:00:00Z"),
                self.record("b", "1", "2026-01-01T00:00:01Z"),
            )
            assert len(first.new_rows) == 2 and first.total_rows == 2
            again = self.merge(
                store,
                journal,
                self.record("a", "1", "2026-01-01T00:00:00.000+00:00"),
                self.record("b", "2", "2026-01-02T00:00:00Z", value="0.9"),
            )
            assert again.unchanged == 1 and [r.value for r in again.new_rows] == ["0.9"]
            older = self.merge(store, journal, self.record("b", "1", "2026-01-01T00:00:01Z"))
            assert older.stale == 1 and [r.value for r in store.rows()] == ["0.8", "0.9"]
            withdrawn = self.merge(store, journal, self.record("a", "2", "2026-01-03T00:00:00Z", row=False))
            assert [(r.observation_id, r.result_id) for r in withdrawn.removed] == [("a", "L-a")]
            assert "entered-in-error" in withdrawn.removed[0].reason
            assert [r.observation_id for r in store.rows()] == ["b"] and withdrawn.total_unmapped == 1
            full = self.merge(store, journal, self.record("c", "1", "2026-01-04T00:00:00Z"), replace_all=True)
            assert {r.observation_id for r in full.removed} == {"b"} and [r.observation_id for r in store.rows()] == [
                "c"
            ]

    def test_output_is_the_whole_store_and_a_failed_write_changes_nothing(self, tmp_path: Path) -> None:
        with Journal(tmp_path / "j.sqlite") as journal, PullStore(journal.path, "http://s/fhir/", "NCT1") as store:
            self.merge(store, journal, self.record("a", "1", "2026-01-01T00:00:00Z"))
            store.stage([self.record("b", "1", "2026-01-02T00:00:00Z")])
            blocked = tmp_path / "labs.csv"
            blocked.mkdir()  # the output path is a directory: the write fails
            with pytest.raises(OSError), store.transaction():
                store.merge(replace_all=False)
                store.set_high_water("2026-01-02T00:00:00Z")
                store.write(blocked)
            assert journal.high_water("http://s/fhir/", "NCT1") is None
            assert [r.observation_id for r in store.rows()] == ["a"]  # the merge was rolled back too
            output = tmp_path / "out" / "labs.csv"
            self.merge(store, journal, self.record("b", "1", "2026-01-02T00:00:00Z"))
            rows, unmapped = store.write(output)
            with rows.open(encoding="utf-8") as handle:
                assert [line["observation_id"] for line in csv.DictReader(handle)] == ["a", "b"]
            assert unmapped.name == "labs.unmapped.csv" and unmapped.read_text().startswith("subject_id,")
