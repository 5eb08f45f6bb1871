"""The mapping data itself: the study definition, the pack contract, no code left in Python, and the public API
surface."""

from __future__ import annotations

import ast
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from support import REPO

import fhir_lupus
from fhir_lupus.errors import MappingError
from fhir_lupus.model import StudyDefinition, load_study, load_trial
from fhir_lupus.pipeline import map_trial
from fhir_lupus.pull._bulk import BulkOptions
from fhir_lupus.pull._bulk_pass import export_request
from fhir_lupus.pull._selection import LabSelection, lab_category
from fhir_lupus.pull._subjects import Subjects
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import (
    CodeRef,
    LabCatalogue,
    MappingPack,
    UnitConverter,
    load_fhir_codes,
    load_medication_catalogue,
    load_pack,
)


def test_public_names_resolve() -> None:
    # the list itself is pinned to docs/api.md by tests/test_public_api.py
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
        load_sledai_definition(load_pack(root))


def test_every_code_names_its_system(pack: MappingPack) -> None:
    for short in ("loinc", "snomed", "rxnorm", "ucum", "project"):
        assert pack.system_uri(short).startswith(("http://", "https://"))
    with pytest.raises(MappingError):
        pack.system_uri("icd-11")


# Strings of the Python code that are FHIR element names and also a code of mappings/ (R4 ResearchStudy.sponsor,
# which R5 turns into an associatedParty whose role is the code `sponsor`).
ELEMENT_NAMES = {"sponsor"}


def _mapping_values(data: Any) -> Iterator[str]:
    """Every code, display and unit of a mappings/ contract (``system`` short names excepted)."""
    if isinstance(data, CodeRef):
        yield data.code
        yield from [data.display] if data.display else []
    elif isinstance(data, BaseModel):
        for name in type(data).model_fields:
            if name != "system":
                yield from _mapping_values(getattr(data, name))
    elif isinstance(data, dict):
        for key, value in data.items():
            yield key
            yield from _mapping_values(value)
    elif isinstance(data, str):
        yield data


def _code_strings() -> Iterator[tuple[str, int, str]]:
    """(file, line, text) of every string constant in fhir_lupus/ that is not a docstring (those say why)."""
    for path in sorted((REPO / "fhir_lupus").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                yield str(path.relative_to(REPO)), node.lineno, node.value


def test_no_code_system_code_or_unit_is_written_in_python(pack: MappingPack) -> None:
    """The codes, displays and UCUM units mappers write on their own live in mappings/ (fhir/codes.yaml, the
    medication catalogue's units of time, the molar-mass unit), and so do the URIs of the code systems: none of
    them may come back as a literal."""
    medications = load_medication_catalogue()
    moved = {*_mapping_values(load_fhir_codes()), *medications.period_days, medications.day, pack.units.molar_mass}
    assert {"laboratory", "survey", "H", "Normal", "AMB", "inpatient encounter", "d", "mo", "%"} <= moved
    hosts = {*pack.systems.values(), "hl7.org", "unitsofmeasure.org", "loinc.org", "snomed.info"}
    found = [
        (where, line, text)
        for where, line, text in _code_strings()
        if (text in moved and text not in ELEMENT_NAMES) or any(host in text for host in hosts)
    ]
    assert found == []


def test_push_and_pull_read_the_same_lab_category_entry(tmp_path: Path, dataset: Callable[..., Path]) -> None:
    """Change the lab category in mappings/fhir/codes.yaml alone: the mapped lab results and Treg measurements
    carry the new code, and pull's search token, bulk _typeFilter and NDJSON/Spark selection ask for it."""
    root = copy_mappings(tmp_path)
    codes = root / "fhir" / "codes.yaml"
    text = codes.read_text(encoding="utf-8")
    assert text.count("code: laboratory}") == 1
    codes.write_text(text.replace("code: laboratory}", "code: lab-results}"), encoding="utf-8")
    pack = load_pack(root)
    data, report = load_trial(dataset(), pack=load_pack(root))
    resources = map_trial(TrialSource.loaded(data, report), settings=Settings.from_mappings(root)).resources
    category = lab_category(pack)
    assert category == f"{pack.system_uri('observation-category')}|lab-results"
    selection = LabSelection(category, frozenset())  # no catalogue code: the category alone selects
    kinds = {pack.identifier_system(kind, study=data.study.nct_id): kind for kind in ("lab_result", "treg", "sledai")}
    selected: dict[str, list[bool]] = {}
    for resource in resources:
        if resource["resourceType"] == "Observation":
            kind = kinds[resource["identifier"][0]["system"]]
            selected.setdefault(kind, []).append(selection.wanted(resource, None))
    assert set(selected) == {"lab_result", "treg", "sledai"}
    assert all(selected["lab_result"]) and all(selected["treg"]) and not any(selected["sledai"])
    options = BulkOptions(lab_filters=True)
    subjects = Subjects(data.study, LabCatalogue(pack, UnitConverter(pack)))
    request = export_request(subjects, options, patients=(), since="x")
    assert f"Observation?category={category}" in request.type_filters


def test_the_codes_name_known_systems_and_ucum_units(pack: MappingPack, units: UnitConverter) -> None:
    codes = load_fhir_codes()
    for ref in (codes.lab_category, codes.assessment_category, codes.normal_range, codes.sponsor_role):
        assert pack.system_uri(ref.system)
    assert pack.system_uri(codes.encounter_class.system) and pack.system_uri(codes.interpretation.high.system)
    for unit in (*type(codes.units).model_fields, "molar_mass"):
        ucum = pack.units.molar_mass if unit == "molar_mass" else getattr(codes.units, unit)
        assert units.to_ucum(ucum) == ucum  # UCUM parses it, and no alias rewrites it


def test_a_study_naming_an_unknown_encounter_class_fails_at_load_time(tmp_path: Path) -> None:
    root = copy_mappings(tmp_path)
    path = root / "studies" / "NCT00698191.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("encounter_class: IMP", "encounter_class: IPM"))
    with pytest.raises(MappingError, match="encounter_class 'IPM' is not one of AMB, IMP"):
        load_study("NCT00698191", load_pack(root))
