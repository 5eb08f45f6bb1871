"""Eligibility screening (screening.csv + medications.csv + the study file's rules) and the medication resources."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from support import EXAMPLE
from typer.testing import CliRunner

from fhir_lupus.cli import app
from fhir_lupus.errors import MappingError
from fhir_lupus.mappers._r5 import to_r5
from fhir_lupus.model import StudyDefinition, load_trial
from fhir_lupus.model._history import MedicationHistory
from fhir_lupus.model._study import Eligibility
from fhir_lupus.pipeline import make_context, map_trial
from fhir_lupus.source import TrialSource
from fhir_lupus.study import CandidateFacts, screen_candidate, screen_trial, screening_findings
from fhir_lupus.terminology import UnitConverter, load_pack, parse_model
from fhir_lupus.terminology._medications import load_medication_catalogue
from fhir_lupus.validation import validate_resource

CONSENT = date(2008, 5, 2)


def med(drug: str, dose: str, unit: str, frequency: str, start: str, end: str | None, outcome: str = "failed") -> Any:
    return MedicationHistory(
        medication_id=f"M-{drug}-{dose}",
        subject_id="C1",
        drug=drug,
        dose=Decimal(dose),
        dose_unit=unit,
        frequency=frequency,
        started_on=date.fromisoformat(start),
        ended_on=date.fromisoformat(end) if end else None,
        outcome=outcome,
    )


PREDNISONE = med("prednisone", "30", "mg", "qd", "2007-01-01", "2007-06-01")
CYC = med("cyclophosphamide", "0.5", "g/m2", "q2w", "2007-01-15", "2007-07-15")


def facts(**changes: Any) -> CandidateFacts:
    """A candidate who meets every inclusion criterion and no exclusion criterion."""
    findings: dict[str, bool | None] = {
        "acr_criteria_met": True,
        "consent_signed": True,
        "contraception_agreed": True,
        "end_stage_renal_failure": False,
        "severe_heart_failure": False,
        "severe_pulmonary_failure": False,
        "other_major_organ_damage": False,
        "uncontrolled_infection": False,
        "pregnant": False,
        "breast_feeding": False,
        "pregnancy_intended": False,
    }
    findings |= changes.pop("findings", {})
    base = CandidateFacts(
        subject_id="C1",
        sex="female",
        birth_date="1980-05-02",
        age_on=CONSENT,
        age_on_label="consent",
        findings=findings,
        sledai_total=12,
        sledai_source="screening.csv",
        urine_protein=(Decimal("1.8"), "g/(24.h)"),
        alt=Decimal("30"),
        alt_uln=Decimal("40"),
        medications=(PREDNISONE, CYC),
        as_of=CONSENT,
    )
    return replace(base, **changes)


@pytest.fixture(scope="module")
def screen(study: StudyDefinition) -> Callable[..., Any]:
    pack = load_pack()
    catalogue, units = load_medication_catalogue(pack), UnitConverter(pack)

    def run(**changes: Any) -> Any:
        return screen_candidate(facts(**changes), study.eligibility, catalogue=catalogue, units=units)

    return run


def decision(result: Any, source: str) -> str:
    return next(c.decision for c in result.criteria if c.criterion.rule.source == source)


def refractory(result: Any) -> tuple[str, str]:
    chosen = [c.decision for c in result.criteria if c.criterion.rule.source == "medications"]
    return chosen[0], chosen[1]


class TestBoundaries:
    def test_the_reference_candidate_is_eligible(self, screen: Callable[..., Any]) -> None:
        result = screen()
        assert result.verdict == "eligible" and result.status == "eligible"

    @pytest.mark.parametrize(
        ("birth", "expected"),
        [
            ("1993-05-03", "not met"),  # 14 on the consent date (15 the next day)
            ("1993-05-02", "met"),  # 15 that very day
            ("1937-05-03", "met"),  # 70
            ("1937-05-02", "not met"),  # 71 that very day
            ("1937-05-01", "not met"),
        ],
    )
    def test_age_in_completed_years_at_consent(self, screen: Callable[..., Any], birth: str, expected: str) -> None:
        result = screen(birth_date=birth)
        assert decision(result, "screening.age") == expected
        assert result.verdict == ("eligible" if expected == "met" else "ineligible")

    def test_a_birth_year_alone_decides_only_when_every_day_of_it_does(self, screen: Callable[..., Any]) -> None:
        assert decision(screen(birth_date="1980"), "screening.age") == "met"
        assert decision(screen(birth_date="1993"), "screening.age") == "unknown"  # 14 or 15

    @pytest.mark.parametrize(("total", "expected"), [(7, "not met"), (8, "met")])
    def test_sledai(self, screen: Callable[..., Any], total: int, expected: str) -> None:
        assert decision(screen(sledai_total=total), "screening.sledai_total") == expected

    @pytest.mark.parametrize(
        ("value", "unit", "expected"),
        [
            ("0.99", "g/(24.h)", "not met"),
            ("1.0", "g/(24.h)", "met"),
            ("990", "mg/(24.h)", "not met"),
            ("1000", "mg/(24.h)", "met"),
        ],
    )
    def test_urine_protein_through_ucum(self, screen: Callable[..., Any], value: str, unit: str, expected: str) -> None:
        assert decision(screen(urine_protein=(Decimal(value), unit)), "screening.urine_protein_24h") == expected

    @pytest.mark.parametrize(("alt", "excluded"), [("120", False), ("120.4", True), ("121", True)])
    def test_alt_exactly_three_times_the_upper_limit_is_not_excluded(
        self, screen: Callable[..., Any], alt: str, excluded: bool
    ) -> None:
        result = screen(alt=Decimal(alt), alt_uln=Decimal("40"))
        assert decision(result, "screening.alt_x_uln") == ("met" if excluded else "not met")
        assert result.verdict == ("ineligible" if excluded else "eligible")

    @pytest.mark.parametrize(("dose", "expected"), [("20", "not met"), ("20.5", "met")])
    def test_prednisone_more_than_20_mg_a_day(self, screen: Callable[..., Any], dose: str, expected: str) -> None:
        prednisone = med("prednisone", dose, "mg", "qd", "2007-01-01", "2007-06-01")
        assert refractory(screen(medications=(prednisone, CYC)))[0] == expected

    def test_prednisone_in_two_daily_doses_counts_the_day(self, screen: Callable[..., Any]) -> None:
        prednisone = med("prednisone", "12.5", "mg", "bid", "2007-01-01", "2007-06-01")
        assert refractory(screen(medications=(prednisone, CYC)))[0] == "met"

    @pytest.mark.parametrize("field", ["birth_date", "sledai_total", "urine_protein", "alt", "alt_uln"])
    def test_missing_data_is_unknown_and_the_verdict_incomplete(self, screen: Callable[..., Any], field: str) -> None:
        result = screen(**{field: None})
        assert [c.decision for c in result.criteria].count("unknown") == 1
        assert result.verdict == "incomplete" and result.status == "candidate"

    def test_an_unknown_yes_no_finding(self, screen: Callable[..., Any]) -> None:
        result = screen(findings={"uncontrolled_infection": None})
        assert decision(result, "screening.uncontrolled_infection") == "unknown" and result.verdict == "incomplete"

    def test_a_known_failure_wins_over_unknowns(self, screen: Callable[..., Any]) -> None:
        assert screen(sledai_total=None, alt=Decimal("200")).verdict == "ineligible"

    def test_pregnancy_and_breast_feeding_do_not_apply_to_men(self, screen: Callable[..., Any]) -> None:
        result = screen(sex="male", findings={"pregnant": None, "breast_feeding": None})
        assert decision(result, "screening.pregnant") == "not met" and result.verdict == "eligible"
        assert screen(findings={"pregnant": True}).verdict == "ineligible"


class TestRefractoryReading:
    """Failed prednisone AND (failed CYC OR failed another immunosuppressant): never both CYC and MMF."""

    def test_cyclophosphamide_alone(self, screen: Callable[..., Any]) -> None:
        assert refractory(screen(medications=(PREDNISONE, CYC))) == ("met", "met")

    def test_mmf_alone(self, screen: Callable[..., Any]) -> None:
        mmf = med("mycophenolate_mofetil", "1", "g", "bid", "2007-01-01", "2007-04-01")
        assert refractory(screen(medications=(PREDNISONE, mmf))) == ("met", "met")

    def test_mmf_below_2_g_a_day_or_under_three_months(self, screen: Callable[..., Any]) -> None:
        low = med("mycophenolate_mofetil", "750", "mg", "bid", "2007-01-01", "2007-06-01")
        short = med("mycophenolate_mofetil", "1", "g", "bid", "2007-01-01", "2007-03-31")
        assert refractory(screen(medications=(PREDNISONE, low)))[1] == "not met"
        assert refractory(screen(medications=(PREDNISONE, short)))[1] == "not met"

    def test_another_immunosuppressant_from_the_mappings_file(self, screen: Callable[..., Any]) -> None:
        tacrolimus = med("tacrolimus", "2", "mg", "bid", "2007-01-01", "2007-05-01")
        assert refractory(screen(medications=(PREDNISONE, tacrolimus))) == ("met", "met")

    def test_cyclophosphamide_dose_interval_and_duration(self, screen: Callable[..., Any]) -> None:
        for course in (
            med("cyclophosphamide", "0.8", "g/m2", "q2w", "2007-01-15", "2007-07-15"),  # dose too high
            med("cyclophosphamide", "0.5", "g/m2", "q4w", "2007-01-15", "2007-07-15"),  # monthly
            med("cyclophosphamide", "0.5", "g/m2", "q2w", "2007-01-15", "2007-07-14"),  # 5 months
            med("cyclophosphamide", "0.5", "g/m2", "q2w", "2007-01-15", "2007-07-15", "responded"),
        ):
            assert refractory(screen(medications=(PREDNISONE, course)))[1] == "not met", course
        assert (
            refractory(
                screen(
                    medications=(PREDNISONE, med("cyclophosphamide", "500", "mg/m2", "q2w", "2007-01-15", "2007-07-15"))
                )
            )[1]
            == "met"
        )

    def test_a_dose_in_mg_cannot_be_judged_per_m2(self, screen: Callable[..., Any]) -> None:
        absolute = med("cyclophosphamide", "800", "mg", "q2w", "2007-01-15", "2007-07-15")
        assert refractory(screen(medications=(PREDNISONE, absolute)))[1] == "unknown"

    def test_no_history_is_unknown_an_unknown_outcome_too(self, screen: Callable[..., Any]) -> None:
        assert refractory(screen(medications=())) == ("unknown", "unknown")
        unknown = med("prednisone", "30", "mg", "qd", "2007-01-01", "2007-06-01", "unknown")
        assert refractory(screen(medications=(unknown, CYC)))[0] == "unknown"


class TestOneDefinition:
    def test_every_group_characteristic_has_a_rule_and_every_rule_a_characteristic(
        self, study: StudyDefinition, screen: Callable[..., Any], dataset: Callable[..., Path]
    ) -> None:
        data, report = load_trial(dataset())
        group = next(r for r in map_trial(TrialSource.loaded(data, report)).resources if r["resourceType"] == "Group")
        characteristics = group["characteristic"]
        result = screen()
        assert len(characteristics) == len(study.eligibility) == len(result.criteria)
        for characteristic, criterion, decided in zip(characteristics, study.eligibility, result.criteria, strict=True):
            assert criterion.rule is not None and decided.criterion is criterion
            assert characteristic["code"]["text"] == criterion.text
            assert characteristic["exclude"] == criterion.exclude
            value = criterion.characteristic_value()
            if criterion.rule.at_least is not None and value.range is not None:
                assert characteristic["valueRange"]["low"]["value"] == criterion.rule.at_least

    def test_a_threshold_written_twice_is_refused(self) -> None:
        with pytest.raises(MappingError, match="range is the rule's"):
            parse_model(
                Eligibility,
                Path("study.yaml"),
                {
                    "text": "SLEDAI >= 8",
                    "code": {"system": "project", "code": "sledai-2k-total"},
                    "value": {"range": {"low": 8, "unit": "{score}"}},
                    "rule": {"source": "screening.sledai_total", "at_least": 8},
                },
            )

    def test_a_rule_that_does_not_fit_its_source_is_refused(self) -> None:
        with pytest.raises(MappingError, match="yes/no"):
            parse_model(
                Eligibility,
                Path("study.yaml"),
                {
                    "text": "x",
                    "code": {"system": "project", "code": "comorbidity"},
                    "rule": {"source": "screening.pregnant", "at_least": 1},
                },
            )


SCREEN_ROW = dict(
    subject_id="MSC-001",
    screened_on="2007-12-20",
    consent_signed="yes",
    consent_on="2008-01-02",
    birth_date="1980-05-01",
    sex="female",
    acr_criteria_met="yes",
    contraception_agreed="yes",
    end_stage_renal_failure="no",
    severe_heart_failure="no",
    severe_pulmonary_failure="no",
    other_major_organ_damage="no",
    uncontrolled_infection="no",
    pregnant="no",
    breast_feeding="no",
    pregnancy_intended="no",
    alt="30",
    alt_uln="40",
    urine_protein_24h="1.8",
    urine_protein_unit="g/24h",
    sledai_total="",
    note="",
)


def med_row(
    mid: str, subject: str, drug: str, dose: str, unit: str, freq: str, route: str, start: str, end: str
) -> dict[str, str]:
    return dict(
        medication_id=mid,
        subject_id=subject,
        drug=drug,
        dose=dose,
        dose_unit=unit,
        frequency=freq,
        route=route,
        started_on=start,
        ended_on=end,
        outcome="failed",
        note="",
    )


def with_history(rows: dict[str, list[dict[str, str]]]) -> None:
    rows["screening.csv"] = [
        SCREEN_ROW,
        SCREEN_ROW
        | dict(
            subject_id="C-9", birth_date="1936-01-01", sex="male", pregnant="", breast_feeding="", sledai_total="10"
        ),
    ]
    rows["medications.csv"] = [
        med_row("M1", "MSC-001", "prednisone", "40", "mg", "qd", "oral", "2007-01-01", "2007-06-30"),
        med_row("M2", "MSC-001", "cyclophosphamide", "0.5", "g/m2", "q2w", "intravenous", "2007-03-01", "2007-10-01"),
        med_row("M3", "C-9", "prednisone", "40", "mg", "qd", "oral", "2007-01-01", "2007-06-30"),
        med_row("M4", "C-9", "mycophenolate_mofetil", "1", "g", "bid", "oral", "2007-03-01", "2007-10-01"),
    ]


class TestTrial:
    def test_screening_a_data_directory(self, dataset: Callable[..., Path]) -> None:
        data, report = load_trial(dataset(with_history))
        assert report.rejects == []
        verdicts = {c.result.subject_id: (c.enrolled, c.result.verdict) for c in screen_trial(data)}
        assert verdicts == {"MSC-001": (True, "eligible"), "C-9": (False, "ineligible")}  # C-9 is 71
        # SLEDAI from the BL assessment of sledai.csv when the screening row leaves it empty
        first = screen_trial(data)[0].result
        sledai = next(c for c in first.criteria if c.criterion.rule.source == "screening.sledai_total")
        assert "sledai.csv BL" in sledai.data
        assert [f.message for f in screening_findings(data, screen_trial(data))] == [
            "MSC-002 enrolled without a screening row"
        ]

    def test_an_enrolled_subject_who_did_not_screen_eligible_is_a_finding(self, dataset: Callable[..., Path]) -> None:
        def edit(rows: dict[str, list[dict[str, str]]]) -> None:
            with_history(rows)
            rows["screening.csv"][0] = SCREEN_ROW | dict(alt="200")

        data, _ = load_trial(dataset(edit))
        findings = screening_findings(data, screen_trial(data))
        assert findings[0].kind == "enrolled-not-eligible" and findings[0].line == 2
        assert "MSC-001 enrolled but screened ineligible" in findings[0].message and "ALT 200" in findings[0].message

    @pytest.mark.parametrize(
        ("file", "index", "change", "column"),
        [
            ("medications.csv", 0, {"drug": "azathioprine"}, "drug"),
            ("medications.csv", 0, {"route": "rectal"}, "route"),
            ("medications.csv", 0, {"dose_unit": "spoons"}, "dose_unit"),
            ("medications.csv", 0, {"subject_id": "NOBODY"}, "subject_id"),
            ("medications.csv", 0, {"ended_on": "2006-01-01"}, None),
            ("screening.csv", 0, {"sex": "male"}, "sex"),
            ("screening.csv", 0, {"urine_protein_unit": "cups"}, "urine_protein_unit"),
        ],
    )
    def test_bad_rows_are_refused_with_file_line_and_column(
        self, dataset: Callable[..., Path], file: str, index: int, change: dict[str, str], column: str | None
    ) -> None:
        def edit(rows: dict[str, list[dict[str, str]]]) -> None:
            with_history(rows)
            rows[file][index] = rows[file][index] | change

        _, report = load_trial(dataset(edit))
        [reject] = report.rejects
        assert (reject.file, reject.line) == (file, index + 2)
        if column:
            assert reject.column == column

    def test_medication_resources_r4_and_r5(self, dataset: Callable[..., Path]) -> None:
        data, report = load_trial(dataset(with_history))
        resources = map_trial(TrialSource.loaded(data, report)).resources
        assert report.rejects == []
        statements = [r for r in resources if r["resourceType"] == "MedicationStatement"]
        assert [s["identifier"][0]["value"] for s in statements] == ["M1", "M2"]  # C-9 did not enrol: not mapped
        assert statements[1]["medicationCodeableConcept"]["coding"][0]["code"] == "3002"
        assert statements[1]["dosage"][0]["timing"]["repeat"] == {"frequency": 1, "period": 2, "periodUnit": "wk"}
        assert statements[1]["dosage"][0]["doseAndRate"][0]["doseQuantity"]["code"] == "g/m2"
        [administration] = [r for r in resources if r["resourceType"] == "MedicationAdministration"]
        ctx = make_context(data)
        assert administration["id"] == ctx.resource_id("MedicationAdministration", ctx.nct_id, "P1")
        assert administration["identifier"] == [ctx.identifier("medication_administration", "P1")]
        infusion = next(
            r for r in resources if r["resourceType"] == "Procedure" and r["identifier"][0]["value"] == "P2"
        )
        assert administration["partOf"] == [{"reference": f"Procedure/{infusion['id']}"}]
        assert administration["dosage"]["dose"]["value"] == 1400
        for resource in [*statements, administration]:
            validate_resource(to_r5(resource, ctx), "R5")

    def test_procedure_codes_come_from_the_mappings_file(self) -> None:
        source = (Path(__file__).parents[1] / "fhir_lupus" / "mappers" / "_procedure.py").read_text(encoding="utf-8")
        assert "18629005" not in source and "47625008" not in source and "3002" not in source


class TestExampleAndCli:
    def test_example_screens_as_planted(self) -> None:
        data, _ = load_trial(EXAMPLE)
        screened = screen_trial(data)
        enrolled = [c.result.verdict for c in screened if c.enrolled]
        others = {c.result.subject_id: c.result.verdict for c in screened if not c.enrolled}
        assert enrolled == ["eligible"] * 20
        assert others == {
            "SCR-001": "ineligible",
            "SCR-002": "ineligible",
            "SCR-003": "ineligible",
            "SCR-004": "ineligible",
            "SCR-005": "ineligible",
            "SCR-006": "incomplete",
        }
        # the one incomplete candidate is a query for the site, naming what is unknown; enrolled ones raise none
        (query,) = screening_findings(data, screened)
        assert (query.kind, query.severity, query.subject_id, query.line) == (
            "eligibility-incomplete",
            "query",
            "SCR-006",
            27,
        )
        assert "alt_uln not given" in query.message

    def test_screen_command(self, tmp_path: Path) -> None:
        out = tmp_path / "screen.csv"
        result = CliRunner().invoke(app, ["screen", str(EXAMPLE), "--csv", str(out)])
        assert result.exit_code == 0, result.output
        assert "SCR-004 (not enrolled, screening.csv:25): ineligible" in result.output
        assert "20 eligible, 5 ineligible, 1 incomplete of 26 screened" in result.output
        lines = out.read_text(encoding="utf-8").splitlines()
        assert lines[0] == "subject_id,enrolled,verdict,status,criterion,exclude,decision,data"
        assert len(lines) == 1 + 26 * 17

    def test_screen_without_screening_file_is_a_usage_error(self, dataset: Callable[..., Path]) -> None:
        result = CliRunner().invoke(app, ["screen", str(dataset())])
        assert result.exit_code == 2
