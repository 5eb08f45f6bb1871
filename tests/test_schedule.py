"""The protocol schedule as data (issue 9): windows, missed visits, the 6-12-month follow-up rule, expected
analytes, and its FHIR form (PlanDefinition / ActivityDefinition) in R4 and R5."""

from __future__ import annotations

import csv
from datetime import date, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fhir_lupus import load_trial, map_trial
from fhir_lupus.cli import app
from fhir_lupus.mappers._r5 import to_r5
from fhir_lupus.mappers._schedule import map_schedule_of_activities
from fhir_lupus.model._entities import Subject, Visit
from fhir_lupus.model._records import Located
from fhir_lupus.model._schedule import (
    SubjectSchedule,
    VisitOutcome,
    evaluate_schedule,
    schedule_findings,
)
from fhir_lupus.model._study import StudyDefinition, load_study
from fhir_lupus.pipeline import make_context
from fhir_lupus.source import TrialSource
from fhir_lupus.study import schedule_rows
from fhir_lupus.terminology import load_pack
from fhir_lupus.validation import validate_resource

BL = date(2020, 1, 1)
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "nct00698191"


@pytest.fixture(scope="module")
def study() -> StudyDefinition:
    return load_study("NCT00698191")


def subject(off_study_on: date | None = None) -> Subject:
    return Subject(
        subject_id="S-1",
        mrn="MRN-1",
        sex="female",
        birth_date="1980-01-01",
        enrolled_on=BL - timedelta(days=5),
        status="off-study" if off_study_on else "follow-up",
        off_study_on=off_study_on,
        arm="AlloMSC",
    )


def run(
    study: StudyDefinition,
    visits: dict[str, date],
    *,
    off_study_on: date | None = None,
    present: dict[tuple[str, str], set[str]] | None = None,
) -> SubjectSchedule:
    rows = [
        Located(Visit(subject_id="S-1", visit_code=code, visit_date=day), "visits.csv", line, {})
        for line, (code, day) in enumerate(visits.items(), start=2)
    ]
    (result,) = evaluate_schedule(study, [subject(off_study_on)], rows, present=present)
    return result


def monthly(last: int, *, skip: tuple[int, ...] = ()) -> dict[str, date]:
    """BL and M01..M<last> on their due dates (30-day months from BL), leaving out the months in ``skip``."""
    visits = {"BL": BL}
    visits.update({f"M{m:02d}": BL + timedelta(days=30 * m) for m in range(1, last + 1) if m not in skip})
    return visits


def outcome(result: SubjectSchedule, code: str) -> VisitOutcome:
    return next(o for o in result.visits if o.visit.code == code)


# -- windows ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shift", "status"), [(7, "done"), (8, "out-of-window"), (-7, "done"), (-8, "out-of-window")])
def test_visit_window_boundary_is_inclusive(study: StudyDefinition, shift: int, status: str) -> None:
    visits = monthly(3)
    visits["M02"] = BL + timedelta(days=60 + shift)
    result = outcome(run(study, visits), "M02")
    assert result.status == status
    assert result.days_from_due == shift
    assert result.days_outside_window == (0 if status == "done" else (1 if shift > 0 else -1))


def test_out_of_window_visit_is_a_finding_with_its_line(study: StudyDefinition) -> None:
    visits = monthly(3)
    visits["M02"] = BL + timedelta(days=68)
    findings = schedule_findings(study, [run(study, visits)])
    assert [(f.kind, f.line) for f in findings] == [("out-of-window", 4)]
    assert "S-1 M02 on 2020-03-09, due 2020-03-01 +/- 7 days" in findings[0].message


# -- missed before the last contact, not yet due after ---------------------------------------------------------


def test_missed_before_last_contact_and_not_yet_due_after(study: StudyDefinition) -> None:
    result = run(study, monthly(6, skip=(4,)))
    assert outcome(result, "M04").status == "missed"
    assert outcome(result, "M07").status == "not-yet-due"
    assert result.count("missed") == 1 and result.count("done") == 6
    assert [f.message for f in schedule_findings(study, [result])] == ["S-1 M04 (due 2020-04-30)"]


def test_off_study_date_is_the_last_contact(study: StudyDefinition) -> None:
    # the subject left after the M04 window closed (due day 120 + 7): M04 is missed, M05 never owed
    result = run(study, monthly(3), off_study_on=BL + timedelta(days=128))
    assert outcome(result, "M04").status == "missed"
    assert outcome(result, "M05").status == "off-study"
    # leaving on the last day of the window: M04 was not yet owed
    assert outcome(run(study, monthly(3), off_study_on=BL + timedelta(days=127)), "M04").status == "off-study"


# -- after M24: the 6-12-month rule --------------------------------------------------------------------------


def test_follow_up_twelve_months_plus_window_after_previous_is_on_time(study: StudyDefinition) -> None:
    visits = monthly(24)
    visits["FU36"] = visits["M24"] + timedelta(days=360 + 7)
    result = run(study, visits)
    assert outcome(result, "FU30").status == "skipped"
    assert outcome(result, "FU36").status == "done"
    assert outcome(result, "FU42").status == "not-yet-due"
    assert schedule_findings(study, [result]) == []


def test_follow_up_one_day_later_is_missed(study: StudyDefinition) -> None:
    visits = monthly(24)
    visits["FU36"] = visits["M24"] + timedelta(days=360 + 8)
    result = run(study, visits)
    assert outcome(result, "FU30").status == "missed"
    fu36 = outcome(result, "FU36")
    assert fu36.status == "out-of-window" and fu36.days_outside_window == 1
    kinds = [(f.kind, f.message.split(" (")[0]) for f in schedule_findings(study, [result])]
    assert kinds == [
        ("missed-visit", "S-1 FU30"),
        ("out-of-window", "S-1 FU36 on 2022-12-24, due 2022-12-16 +/- 7 days"),
    ]


def test_six_month_follow_ups_are_done_and_a_long_gap_counts_once_a_year(study: StudyDefinition) -> None:
    visits = monthly(24)
    visits["FU30"] = BL + timedelta(days=900)
    result = run(study, visits, off_study_on=BL + timedelta(days=900 + 2 * 360 + 30))
    assert outcome(result, "FU30").status == "done"
    # nothing after FU30 for two years: one follow-up owed by FU30 + 12 months, the next by 12 months later
    statuses = {o.visit.code: o.status for o in result.visits if o.visit.month > 30}
    assert list(statuses.values()).count("missed") == 2
    assert statuses["FU36"] == "missed" and statuses["FU42"] == "missed"


def test_follow_up_window_is_due_minus_window_to_twelve_months_after_previous(study: StudyDefinition) -> None:
    visits = monthly(24)
    visits["FU30"] = BL + timedelta(days=900 - 8)  # one day before the window opens
    assert outcome(run(study, visits), "FU30").status == "out-of-window"
    visits["FU30"] = BL + timedelta(days=900 - 7)
    assert outcome(run(study, visits), "FU30").status == "done"


# -- expected analytes -----------------------------------------------------------------------------------------


def test_treg_is_expected_every_three_months_and_not_after_month_24(study: StudyDefinition) -> None:
    with_treg = {v.code for v in study.visits() if "treg" in v.activities}
    assert with_treg == {"BL", "M03", "M06", "M09", "M12", "M15", "M18", "M21", "M24"}
    assert set(study.visit("BL").activities) >= {"serology", "renal", "urinalysis", "blood_count", "sledai"}
    assert study.visit("M01").activities == ("serology", "renal", "urinalysis", "sledai")


def test_missing_analytes_per_visit(study: StudyDefinition) -> None:
    renal_and_urine = {"egfr", "urea", "urine_protein_dipstick", "urine_blood_dipstick", "urine_rbc", "urine_wbc"}
    present = {
        ("S-1", "M01"): {"ana", "anti_dsdna", "c3", "c4", "sledai"} | renal_and_urine,
        ("S-1", "M02"): {"anti_dsdna", "c3", "creatinine_clearance", "bun", "sledai"},
        ("S-1", "M03"): {"ana", "anti_dsdna", "c3", "c4", "sledai"} | renal_and_urine,
    }
    result = run(study, monthly(3), present=present)
    assert outcome(result, "M01").missing == ()
    assert outcome(result, "M02").missing == (
        "ana",
        "c4",
        "urine_protein_dipstick",
        "urine_blood_dipstick",
        "urine_rbc",
        "urine_wbc",
    )
    assert outcome(result, "M03").missing == ("treg_percent",)  # Treg due at M03
    assert "sledai" in outcome(result, "BL").missing  # nothing recorded at BL


def test_activity_analytes_are_catalogue_keys(study: StudyDefinition) -> None:
    catalogue = load_pack().labs.analytes
    for key, activity in study.protocol.activities.items():
        for item in activity.analytes:
            for analyte in (item,) if isinstance(item, str) else item:
                assert analyte in catalogue, (key, analyte)


# -- the example and the CLI ---------------------------------------------------------------------------------


def test_example_findings_and_csv(tmp_path: Path) -> None:
    _data, report = load_trial(EXAMPLE)
    kinds = [f.kind for f in report.findings]
    # 24 missed M-visits between visits held, plus MSC-017 M17: the subject withdrew (2010-09-19) the day
    # after its window closed
    assert kinds.count("missed-visit") == 25 and "out-of-window" not in kinds
    out = tmp_path / "schedule.csv"
    result = CliRunner().invoke(app, ["schedule", str(EXAMPLE), "--csv", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 20 * len(load_study("NCT00698191").visits())
    statuses = {row["status"] for row in rows}
    assert statuses <= {"done", "missed", "skipped", "not-yet-due", "off-study", "out-of-window"}
    assert sum(row["status"] == "missed" for row in rows) == 25
    m01 = next(row for row in rows if row["subject_id"] == "MSC-001" and row["visit_code"] == "M01")
    assert m01["visits_line"] == "3"
    # The example measures every activity the study file expects at each visit held (ANA monthly, with the rest of
    # the serology, as the registration's primary outcome says), so no visit held lacks anything.
    held = [row for row in rows if row["status"] == "done"]
    with (EXAMPLE / "visits.csv").open(encoding="utf-8") as handle:
        assert len(held) == sum(1 for _ in csv.DictReader(handle))  # every visit of visits.csv is in window
    assert [row for row in held if row["missing"]] == []


def test_cli_rejects_a_bad_as_of_date() -> None:
    result = CliRunner().invoke(app, ["schedule", str(EXAMPLE), "--as-of", "2020-13-01"])
    assert result.exit_code == 2


def test_rows_for_a_subject_without_baseline(study: StudyDefinition) -> None:
    result = run(study, {"M01": BL})
    assert result.anchor is None
    assert schedule_rows([result])[0]["status"] == "no-baseline"
    assert [f.kind for f in schedule_findings(study, [result])] == ["no-baseline"]


# -- FHIR ------------------------------------------------------------------------------------------------------


def test_plan_and_activity_definitions_validate_in_r4_and_r5() -> None:
    data, report = load_trial(EXAMPLE)
    ctx = make_context(data)
    resources = map_schedule_of_activities(ctx)
    pack = ctx.pack
    protocol = resources[-1]
    assert protocol["meta"]["profile"] == [pack.profile_url("soa_study_protocol")]
    assert protocol["type"]["coding"][0]["code"] == "clinical-protocol"
    visits = [r for r in resources if r["resourceType"] == "PlanDefinition"][:-1]
    activities = [r for r in resources if r["resourceType"] == "ActivityDefinition"]
    assert len(visits) == len(data.study.visits()) and len(activities) == len(data.study.protocol.activities)
    assert [a["id"] for a in protocol["action"]] == [v.code for v in data.study.visits()]
    urls = {r["url"] for r in resources}
    for action in protocol["action"]:
        assert action["definitionCanonical"] in urls
    for visit in visits:
        assert {a["definitionCanonical"] for a in visit.get("action", [])} <= urls
    m02 = next(a for a in protocol["action"] if a["id"] == "M02")
    (relation,) = m02["relatedAction"]
    assert relation["actionId"] == "BL" and relation["offsetDuration"]["value"] == 60
    window = relation["extension"][0]["valueRange"]
    assert (window["low"]["value"], window["high"]["value"]) == (53, 67)
    fu30 = next(a for a in protocol["action"] if a["id"] == "FU30")
    assert fu30["relatedAction"][1]["actionId"] == "M24"
    assert fu30["relatedAction"][1]["extension"][0]["valueRange"]["high"]["value"] == 367
    for resource in resources:
        validate_resource(resource, "R4")
        r5 = to_r5(resource, ctx)
        validate_resource(r5, "R5")
    assert "targetId" in to_r5(protocol, ctx)["action"][2]["relatedAction"][0]
    study = next(
        r for r in map_trial(TrialSource.loaded(data, report)).resources if r["resourceType"] == "ResearchStudy"
    )
    assert study["protocol"] == [{"reference": f"PlanDefinition/{protocol['id']}"}]
