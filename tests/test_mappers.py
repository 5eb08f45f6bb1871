"""Each mapper on the small dataset: the elements a hospital server and a registry rely on."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fhir_lupus.mappers._observation_lab import interpretation
from fhir_lupus.model import load_trial
from fhir_lupus.pipeline import map_trial
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import MappingPack, load_fhir_codes
from fhir_lupus.validation import validate_resource

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
PROJECT = "https://fhir-lupus.example.org/fhir/CodeSystem/fhir-lupus"
STUDY_EXT = "http://hl7.org/fhir/StructureDefinition/workflow-researchStudy"


@pytest.fixture
def mapped(dataset: Callable[..., Path]) -> list[dict[str, Any]]:
    data, report = load_trial(dataset())
    resources = map_trial(TrialSource.loaded(data, report)).resources
    assert report.rejects == []
    return resources


def one(resources: list[dict[str, Any]], resource_type: str, identifier: str) -> dict[str, Any]:
    found = [
        r
        for r in resources
        if r["resourceType"] == resource_type and r.get("identifier", [{}])[0].get("value") == identifier
    ]
    assert len(found) == 1, (resource_type, identifier)
    return found[0]


def ref(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


class TestResearchStudy:
    def test_identity_status_and_design(self, mapped: list[dict[str, Any]], pack: MappingPack) -> None:
        study = one(mapped, "ResearchStudy", "NCT00698191")
        current = pack.identifier_system("study", study="NCT00698191")
        superseded = pack.superseded_identifier_systems("study", study="NCT00698191")
        assert superseded and current not in superseded  # the registry's URI changed: the old one stays searchable
        assert study["identifier"] == [
            {"use": "official", "system": current, "value": "NCT00698191"},
            *({"use": "old", "system": system, "value": "NCT00698191"} for system in superseded),
        ]
        assert study["status"] == "active"
        assert study["extension"][0]["valueCodeableConcept"]["text"] == "UNKNOWN"
        assert "UNKNOWN" in study["note"][0]["text"]
        assert study["phase"]["coding"][0]["code"] == "phase-1"
        assert [c["coding"][0]["code"] for c in study["condition"]] == ["55464009", "68815009"]
        assert [a["name"] for a in study["arm"]] == ["AlloMSC"]
        assert [o["type"]["coding"][0]["code"] for o in study["objective"]] == ["primary"] * 3 + ["secondary"]

    def test_references_resolve_to_sponsor_site_and_group(self, mapped: list[dict[str, Any]]) -> None:
        study = one(mapped, "ResearchStudy", "NCT00698191")
        sponsor = next(r for r in mapped if r["resourceType"] == "Organization")
        site = next(r for r in mapped if r["resourceType"] == "Location")
        group = next(r for r in mapped if r["resourceType"] == "Group")
        assert study["sponsor"]["reference"] == ref(sponsor) and sponsor["name"] == "Nanjing Medical University"
        assert study["site"][0]["reference"] == ref(site) and site["address"]["city"] == "Nanjing"
        assert study["enrollment"][0]["reference"] == ref(group)

    def test_eligibility_group(self, mapped: list[dict[str, Any]]) -> None:
        group = next(r for r in mapped if r["resourceType"] == "Group")
        assert group["actual"] is False and group["quantity"] == 20
        chars = group["characteristic"]
        age = next(c for c in chars if c["code"]["coding"][0]["code"] == "30525-0")
        assert age["valueRange"]["low"]["value"] == 15 and age["valueRange"]["high"]["value"] == 70
        assert age["exclude"] is False
        protein = next(c for c in chars if c["code"]["coding"][0]["code"] == "2889-4")
        assert protein["valueRange"]["low"] == {
            "value": 1,
            "unit": "g/24 h",
            "system": UCUM,
            "code": "g/(24.h)",
        }
        excluded = [c["code"]["text"] for c in chars if c["exclude"]]
        assert "End-stage renal failure" in excluded and len(excluded) == 9  # 5 registered bullets, split per concept

    def test_refractory_disease_never_requires_both_cyclophosphamide_and_mmf(
        self, mapped: list[dict[str, Any]], study: Any
    ) -> None:
        """R4 Group characteristics are all required: the CYC-or-other-immunosuppressant alternative is one."""
        chars = next(r for r in mapped if r["resourceType"] == "Group")["characteristic"]
        drugs_required = [
            coding["code"]
            for c in chars
            if not c["exclude"]
            for coding in c.get("valueCodeableConcept", {}).get("coding", [])
            if coding["system"] == "http://www.nlm.nih.gov/research/umls/rxnorm"
        ]
        assert drugs_required == ["8640"]  # prednisone only; never cyclophosphamide (3002) and MMF (68149) both
        alternative = [
            c for c in chars if c["code"]["coding"][0]["code"] == "failed-cyclophosphamide-or-other-immunosuppressant"
        ]
        assert len(alternative) == 1 and alternative[0]["valueBoolean"] is True
        assert "or other immunosuppressive drugs, such as MMF 2 g / day" in alternative[0]["code"]["text"]
        criterion = next(c for c in study.eligibility if c.code.code == alternative[0]["code"]["coding"][0]["code"])
        assert any("0.4 ~ 0.6 / m2" in a and "g/m2" in a for a in criterion.assumptions)


class TestPatientAndSubject:
    def test_mrn_patient_links_to_the_hospital_record(self, mapped: list[dict[str, Any]]) -> None:
        patient = one(mapped, "Patient", "DT0000001")
        identifier = patient["identifier"][0]
        assert identifier["system"] == "https://fhir-lupus.example.org/sid/njdth-mrn"
        assert identifier["type"]["coding"][0]["code"] == "MR"
        assert patient["gender"] == "female" and patient["birthDate"] == "1980-05-01"
        assert not {"name", "address", "telecom"} & patient.keys()

    def test_pseudonymous_patient(self, mapped: list[dict[str, Any]]) -> None:
        patient = one(mapped, "Patient", "P-0a1b2c3d")
        assert patient["identifier"][0]["system"].endswith("/sid/pseudonym")
        assert patient["birthDate"] == "1975"

    def test_research_subject(self, mapped: list[dict[str, Any]]) -> None:
        subject = one(mapped, "ResearchSubject", "MSC-002")
        patient = one(mapped, "Patient", "P-0a1b2c3d")
        assert subject["individual"]["reference"] == ref(patient)
        assert subject["status"] == "withdrawn" and subject["assignedArm"] == "AlloMSC"
        assert subject["period"] == {"start": "2008-02-01", "end": "2008-04-01"}
        assert subject["extension"][0]["valueString"] == "moved away"


class TestLabObservation:
    def test_quantity_with_units_range_and_interpretation(self, mapped: list[dict[str, Any]]) -> None:
        obs = one(mapped, "Observation", "L2")
        assert obs["code"]["coding"][0] == {
            "system": LOINC,
            "code": "14682-9",
            "display": "Creatinine [Moles/volume] in Serum or Plasma",
        }
        assert obs["valueQuantity"] == {"value": 88, "unit": "µmol/L", "system": UCUM, "code": "umol/L"}
        assert obs["referenceRange"][0]["low"]["value"] == 44 and obs["referenceRange"][0]["high"]["value"] == 133
        assert obs["interpretation"][0]["coding"][0]["code"] == "N"
        assert obs["category"][0]["coding"][0]["code"] == "laboratory"
        assert obs["effectiveDateTime"] == "2008-01-05T08:00:00+08:00"
        assert obs["extension"][0] == {
            "url": STUDY_EXT,
            "valueReference": {"reference": ref(one(mapped, "ResearchStudy", "NCT00698191"))},
        }
        encounter = one(mapped, "Encounter", "MSC-001/BL")
        assert obs["encounter"]["reference"] == ref(encounter)
        assert obs["subject"]["reference"] == ref(one(mapped, "Patient", "DT0000001"))

    def test_low_value_and_local_code(self, mapped: list[dict[str, Any]]) -> None:
        obs = one(mapped, "Observation", "L1")
        assert obs["interpretation"][0]["coding"][0]["code"] == "L"
        assert obs["code"]["coding"][1]["code"] == "DT-C3"
        assert obs["contained"][0]["type"]["coding"][0]["code"] == "119364003"
        assert obs["specimen"] == {"reference": "#specimen"}

    def test_comparator_is_kept(self, mapped: list[dict[str, Any]]) -> None:
        obs = one(mapped, "Observation", "L7")
        assert obs["valueQuantity"]["comparator"] == "<" and obs["valueQuantity"]["value"] == 10
        assert obs["valueQuantity"]["code"] == "[IU]/mL"
        assert "interpretation" not in obs  # "<10" vs high 100 says nothing about "L"

    @pytest.mark.parametrize(
        ("number", "comparator", "low", "high", "flag"),
        [
            ("10", ">=", None, "10", None),  # 10 or more does not prove above 10
            ("10", ">", None, "10", "H"),
            ("11", ">=", None, "10", "H"),
            ("100", "<=", "100", None, None),  # 100 or less does not prove below 100
            ("100", "<", "100", None, "L"),
            ("99", "<=", "100", None, "L"),
            ("5", "<", "1", "10", None),  # inside or below: no verdict, and never N
            ("5", None, "1", "10", "N"),
            ("10", None, "1", "10", "N"),
            ("10.5", None, "1", "10", "H"),
        ],
    )
    def test_interpretation_of_censored_values(
        self, number: str, comparator: str | None, low: str | None, high: str | None, flag: str | None
    ) -> None:
        bounds = [None if bound is None else Decimal(bound) for bound in (low, high)]
        assert interpretation(Decimal(number), comparator, *bounds, load_fhir_codes().interpretation) == flag

    def test_egfr_unit_keeps_its_annotation(self, mapped: list[dict[str, Any]]) -> None:
        quantity = one(mapped, "Observation", "L8")["valueQuantity"]
        assert quantity["code"] == "mL/min/{1.73_m2}" and "{1.73_m2}" in quantity["unit"]

    def test_ordinal_is_snomed_and_titer_is_a_string(self, mapped: list[dict[str, Any]]) -> None:
        dip = one(mapped, "Observation", "L5")
        assert dip["code"]["coding"][0]["code"] == "20454-5"
        assert dip["valueCodeableConcept"]["coding"][0] == {
            "system": SNOMED,
            "code": "260348001",
            "display": "++",
        }
        ana = one(mapped, "Observation", "L4")
        assert ana["code"]["coding"][0]["code"] == "5048-4" and ana["valueString"] == "1:320"

    def test_egfr_keeps_its_method(self, mapped: list[dict[str, Any]]) -> None:
        obs = one(mapped, "Observation", "L8")
        assert obs["code"]["coding"][0]["code"] == "62238-1" and obs["method"]["text"] == "ckd-epi-2009"


class TestSledaiAndTreg:
    def test_sledai_total_components_and_derivation(self, mapped: list[dict[str, Any]]) -> None:
        obs = one(mapped, "Observation", "MSC-001/BL")
        assert obs["category"][0]["coding"][0]["code"] == "survey"
        assert obs["code"]["coding"][0] == {
            "system": PROJECT,
            "code": "sledai-2k-total",
            "display": "SLEDAI-2K total score",
        }
        # arthritis 4 + rash 2 flagged; derived: proteinuria 4 (1.8 g/24 h), low complement 2 (C3 0.45),
        # thrombocytopenia 1 (platelets 85)
        assert obs["valueInteger"] == 13
        components = {c["code"]["coding"][0]["code"]: c for c in obs["component"]}
        assert set(components) == {
            "sledai-arthritis",
            "sledai-rash",
            "sledai-proteinuria",
            "sledai-low-complement",
            "sledai-thrombocytopenia",
        }
        assert "extension" not in components["sledai-arthritis"]
        assert components["sledai-proteinuria"]["extension"][0]["valueBoolean"] is True
        derived_from = {d["reference"] for d in obs["derivedFrom"]}
        assert derived_from == {ref(one(mapped, "Observation", rid)) for rid in ("L1", "L6", "L9")}

    def test_crf_total_and_attribution_in_the_components(self, dataset: Callable[..., Path]) -> None:
        def crf(rows: dict[str, list[dict[str, str]]]) -> None:
            rows["sledai.csv"][0].update(reported_total="8", not_attributed="thrombocytopenia:drug-induced")
            rows["sledai.csv"][1]["not_attributed"] = ""

        data, report = load_trial(dataset(crf))
        obs = one(map_trial(TrialSource.loaded(data, report)).resources, "Observation", "MSC-001/BL")
        assert obs["valueInteger"] == 8  # the CRF total is the score
        components = {c["code"]["coding"][0]["code"]: c for c in obs["component"]}
        assert components["sledai-arthritis"]["valueInteger"] == 4
        assert components["sledai-proteinuria"]["valueInteger"] == 0  # met by labs, not on the CRF
        reasons = {
            key: [e.get("valueString") for e in c.get("extension", []) if "not-counted" in e["url"]]
            for key, c in components.items()
        }
        assert "drug-induced" in reasons["sledai-thrombocytopenia"][0]
        assert "CRF" in reasons["sledai-proteinuria"][0] and reasons["sledai-arthritis"] == []
        validate_resource(obs, "R4")  # raises when invalid

    def test_zero_score_has_no_components(self, mapped: list[dict[str, Any]]) -> None:
        obs = one(mapped, "Observation", "MSC-001/M01")
        assert obs["valueInteger"] == 0 and "component" not in obs

    def test_treg(self, mapped: list[dict[str, Any]]) -> None:
        obs = one(mapped, "Observation", "T1")
        assert obs["code"]["coding"][0]["code"] == "treg-percent"
        assert obs["valueQuantity"] == {"value": 2.5, "unit": "%", "system": UCUM, "code": "%"}


class TestProcedureEncounterCodeSystem:
    def test_cyclophosphamide_pretreatment(self, mapped: list[dict[str, Any]]) -> None:
        proc = one(mapped, "Procedure", "P1")
        assert proc["status"] == "completed"
        assert [c["code"] for c in proc["code"]["coding"]] == ["18629005", "cyclophosphamide-pretreatment"]
        assert proc["usedCode"][0]["coding"][0]["code"] == "3002"
        doses = [e["valueQuantity"] for e in proc["extension"] if e["url"].endswith("procedure-dose")]
        assert [(d["value"], d["code"]) for d in doses] == [(1400, "mg"), (850, "mg/m2")]
        assert proc["performedPeriod"]["start"] == "2008-01-06T08:00:00+08:00"

    def test_msc_infusion(self, mapped: list[dict[str, Any]]) -> None:
        proc = one(mapped, "Procedure", "P2")
        assert proc["code"]["coding"][0]["code"] == "msc-infusion"
        ext = {e["url"].rsplit("/", 1)[1]: e for e in proc["extension"]}
        assert ext["procedure-dose"]["valueQuantity"]["value"] == 1000000
        assert ext["procedure-dose"]["valueQuantity"]["code"] == "{cells}/kg"
        assert ext["msc-donor"]["valueIdentifier"]["value"] == "D-2008-01"
        assert ext["procedure-route"]["valueCodeableConcept"]["coding"][0]["code"] == "47625008"

    def test_baseline_encounter_is_inpatient(self, mapped: list[dict[str, Any]]) -> None:
        assert one(mapped, "Encounter", "MSC-001/BL")["class"]["code"] == "IMP"
        assert one(mapped, "Encounter", "MSC-001/M01")["class"]["code"] == "AMB"

    def test_every_project_code_used_is_defined_in_the_codesystem(self, mapped: list[dict[str, Any]]) -> None:
        codesystem = next(r for r in mapped if r["resourceType"] == "CodeSystem")
        assert codesystem["url"] == PROJECT
        defined: set[str] = set()
        stack = list(codesystem["concept"])
        while stack:
            concept = stack.pop()
            defined.add(concept["code"])
            stack.extend(concept.get("concept", []))
        assert codesystem["count"] == len(defined)
        used = {
            coding["code"] for resource in mapped for coding in _codings(resource) if coding.get("system") == PROJECT
        }
        assert used and used <= defined


def _codings(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        found = [node] if "code" in node and "system" in node and isinstance(node["code"], str) else []
        return found + [c for value in node.values() for c in _codings(value)]
    if isinstance(node, list):
        return [c for item in node for c in _codings(item)]
    return []


def test_r5_output_reshapes_and_validates(dataset: Callable[..., Path]) -> None:
    data, report = load_trial(dataset())
    resources = map_trial(TrialSource.loaded(data, report), fhir_version="R5").resources
    subject = one(resources, "ResearchSubject", "MSC-002")
    assert subject["status"] == "active"
    assert subject["progress"][0]["subjectState"]["coding"][0]["code"] == "withdrawn"
    assert subject["progress"][0]["reason"]["text"] == "moved away"
    assert "individual" not in subject and subject["subject"]["reference"].startswith("Patient/")
    study = one(resources, "ResearchStudy", "NCT00698191")
    assert study["recruitment"]["targetNumber"] == 20 and "enrollment" not in study
    assert study["comparisonGroup"][0]["name"] == "AlloMSC"
    proc = one(resources, "Procedure", "P1")
    assert "occurrencePeriod" in proc and proc["used"][0]["concept"]["coding"][0]["code"] == "3002"
    encounter = one(resources, "Encounter", "MSC-001/BL")
    assert encounter["status"] == "completed" and encounter["class"][0]["coding"][0]["code"] == "IMP"
    for resource in resources:
        validate_resource(resource, "R5")
