"""The mapping data itself: the study definition, the pack contract, and the public API surface."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support import REPO

import fhir_lupus
from fhir_lupus.errors import MappingError
from fhir_lupus.model import StudyDefinition, load_study
from fhir_lupus.terminology import MappingPack, load_pack


def test_public_names_are_pinned() -> None:
    assert sorted(fhir_lupus.__all__) == [
        "FhirLupusError", "InputError", "LoadReport", "MapResult", "MappingError", "ResourceInvalidError",
        "TerminologyError", "TrialData", "UnitError", "check_invariants", "dumps", "load_study", "load_trial",
        "map_trial", "transaction_bundle", "validate_resource", "write_quarantine",
    ]  # fmt: skip
    for name in fhir_lupus.__all__:
        assert getattr(fhir_lupus, name)


def test_errors_are_value_errors() -> None:
    for error in (
        fhir_lupus.InputError,
        fhir_lupus.UnitError,
        fhir_lupus.MappingError,
        fhir_lupus.TerminologyError,
    ):
        assert issubclass(error, ValueError) and issubclass(error, fhir_lupus.FhirLupusError)


class TestStudyDefinition:
    def test_registration_facts(self, study: StudyDefinition) -> None:
        assert study.nct_id == "NCT00698191" and study.phase == "phase-1"
        assert study.recruitment_status.registered == "UNKNOWN"
        assert study.sponsor.name == "Nanjing Medical University"
        assert "Drum Tower Hospital" in study.site.name and study.site.country == "CN"
        assert study.target_enrollment == 20 and [a.name for a in study.arms] == ["AlloMSC"]
        assert [o.type for o in study.outcomes].count("primary") == 3
        inclusion = [c for c in study.eligibility if not c.exclude]
        assert len(inclusion) == 8 and any("SLEDAI" in c.text for c in inclusion)

    def test_schedule(self, study: StudyDefinition) -> None:
        codes = [v.code for v in study.visits()]
        assert codes[:3] == ["BL", "M01", "M02"] and "M24" in codes and "M25" not in codes
        assert codes[25:28] == ["FU30", "FU36", "FU42"]
        assert study.visit("BL").encounter_class == "IMP"

    def test_bad_nct_id(self) -> None:
        with pytest.raises(MappingError, match="not an NCT id"):
            load_study("NCT123")
        with pytest.raises(MappingError, match="mapping file missing"):
            load_study("NCT99999999")


def copy_mappings(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", target)
    return target


def test_a_typo_in_the_pack_fails_at_load_time(tmp_path: Path) -> None:
    root = copy_mappings(tmp_path)
    labs = root / "terminology" / "labs.yaml"
    labs.write_text(
        labs.read_text(encoding="utf-8").replace("trial_unit: g/L", "trial_units: g/L", 1), encoding="utf-8"
    )
    with pytest.raises(MappingError, match=r"labs\.yaml: analytes\.c3\.trial_units: Extra inputs"):
        load_pack(root)


def test_a_malformed_loinc_code_fails_at_load_time(tmp_path: Path) -> None:
    root = copy_mappings(tmp_path)
    labs = root / "terminology" / "labs.yaml"
    labs.write_text(labs.read_text(encoding="utf-8").replace("code: 4485-9", "code: 4485-X9"), encoding="utf-8")
    with pytest.raises(MappingError, match="not a LOINC code"):
        load_pack(root)


def test_sledai_weights_must_add_up_to_105(tmp_path: Path) -> None:
    from fhir_lupus.scoring import load_sledai_definition

    root = copy_mappings(tmp_path)
    path = root / "scoring" / "sledai2k.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("{key: fever, weight: 1", "{key: fever, weight: 2"))
    with pytest.raises(MappingError, match="105"):
        load_sledai_definition(root)


def test_every_code_names_its_system(pack: MappingPack) -> None:
    for short in ("loinc", "snomed", "rxnorm", "ucum", "project"):
        assert pack.system_uri(short).startswith(("http://", "https://"))
    with pytest.raises(MappingError):
        pack.system_uri("icd-11")
