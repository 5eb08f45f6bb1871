"""Issue 20: the edit checks, the subject timeline and what a command may publish from doubtful input.

One test per check class and per timeline rule, on the hand-built rows of the ``dataset`` fixture, including each
case the issue found ("Why"): every one ends in a located refusal, a located query or the clinically right answer.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from test_adverse_events import ae
from test_screening import SCREEN_ROW, facts, med, med_row
from typer.testing import CliRunner

from fhir_lupus.cli import app
from fhir_lupus.errors import InputError, RejectedRows
from fhir_lupus.model import LoadReport, StudyDefinition, TrialData, load_trial
from fhir_lupus.model._check_rules import load_check_rules
from fhir_lupus.model._inputs import needed_files, require_inputs
from fhir_lupus.model._queries import query_id, track_queries
from fhir_lupus.pipeline import map_trial
from fhir_lupus.pull._visits import assign_visit
from fhir_lupus.registry import package_trial
from fhir_lupus.registry._key import RegistryKey
from fhir_lupus.report import write_report
from fhir_lupus.source import TrialSource
from fhir_lupus.study import schedule_report, screen_candidate, screen_trial, screening_findings
from fhir_lupus.terminology import UnitConverter, load_pack
from fhir_lupus.terminology._medications import load_medication_catalogue

runner = CliRunner()
Rows = dict[str, list[dict[str, str]]]
Edit = Callable[[Rows], Any]


def load(dataset: Callable[..., Path], edit: Edit | None = None) -> tuple[TrialData, LoadReport]:
    return load_trial(dataset(edit))


def rejects(report: LoadReport, file: str) -> dict[int, tuple[str | None, str]]:
    return {r.line: (r.column, r.reason) for r in report.rejects if r.file == file}


def findings(report: LoadReport, kind: str) -> list[Any]:
    return [f for f in report.findings if f.kind == kind]


def lab(rows: Rows, index: int, **changes: str) -> dict[str, str]:
    """A copy of lab row ``index`` with ``changes``, appended to labs.csv (its line is the file's last)."""
    row = dict(rows["labs.csv"][index], **changes)
    rows["labs.csv"].append(row)
    return row


HISTORY = [  # MSC-001's lifecycle in status_history.csv; withdrawn on 2008-03-01 (line 6)
    dict(subject_id="MSC-001", status="candidate", on="2007-12-20", reason=""),
    dict(subject_id="MSC-001", status="eligible", on="2007-12-28", reason=""),
    dict(subject_id="MSC-001", status="on-study", on="2008-01-02", reason=""),
    dict(subject_id="MSC-001", status="on-study-intervention", on="2008-01-07", reason=""),
    dict(subject_id="MSC-001", status="withdrawn", on="2008-03-01", reason="consent withdrawn"),
]


def withdrawn_in_history_only(rows: Rows) -> None:
    rows["status_history.csv"] = [dict(row) for row in HISTORY]
    rows["subjects.csv"][0].update(status="withdrawn", off_study_on="", off_study_reason="")


def fatal_event(**changes: str) -> dict[str, str]:
    """A grade 5 event of MSC-001: onset 2008-02-10, death (resolved_on) 2008-02-12."""
    fatal = dict(event_id="AE-1", term="pulmonary haemorrhage", ctcae_term="", grade="5", serious="yes")
    fatal |= dict(seriousness_criteria="death", outcome="fatal", related_to="none", causality="")
    return ae(**fatal, onset_on="2008-02-10", resolved_on="2008-02-12", recorded_on="2008-02-10") | changes


def died(rows: Rows, *events: dict[str, str], coded: bool = True) -> None:
    rows["adverse_events.csv"] = list(events) or [fatal_event()]
    rows["subjects.csv"][0].update(
        status="off-study", off_study_on="2008-02-12", off_study_reason="died", off_study_reason_code="death"
    )
    rows["subjects.csv"][1]["off_study_reason_code"] = ""
    if not coded:
        rows["subjects.csv"][0]["off_study_reason_code"] = ""


class TestTimeline:
    def test_a_withdrawal_recorded_only_in_the_history_ends_the_schedule(self, dataset: Callable[..., Path]) -> None:
        data, report = load(dataset, withdrawn_in_history_only)
        assert report.rejects == []
        timeline = data.timelines["MSC-001"]
        assert timeline.end is not None and (timeline.end.day, timeline.end.where) == (
            date(2008, 3, 1),
            "status_history.csv:6",
        )
        schedule = next(s for s in schedule_report(data) if s.subject_id == "MSC-001")
        assert schedule.off_study and schedule.count("not-yet-due") == 0
        statuses = {o.visit.code: o.status for o in schedule.visits}
        assert statuses["M01"] == "done" and statuses["M03"] == "off-study"  # not "missed" for two years
        assert not [f for f in report.findings if f.kind == "missed-visit" and "MSC-001" in f.message]
        subject = next(
            r for r in map_trial(TrialSource.loaded(data)).resources if r["resourceType"] == "ResearchSubject"
        )
        assert subject["period"]["end"] == "2008-03-01"

    def test_a_visit_after_the_withdrawal_is_refused_naming_where_it_ended(self, dataset: Callable[..., Path]) -> None:
        def edit(rows: Rows) -> None:
            withdrawn_in_history_only(rows)
            rows["visits.csv"].append(dict(subject_id="MSC-001", visit_code="M03", visit_date="2008-04-04"))

        _, report = load(dataset, edit)
        column, reason = rejects(report, "visits.csv")[5]
        assert column == "visit_date" and "after the end of participation" in reason
        assert "MSC-001 left the study on 2008-03-01 (status_history.csv:6)" in reason and "[after-end]" in reason

    def test_labs_months_after_the_subject_left_are_refused(self, dataset: Callable[..., Path]) -> None:
        # MSC-002 left on 2008-04-01; a result collected in June cannot fill its BL visit's analytes
        data, report = load(
            dataset, lambda rows: lab(rows, 10, result_id="L99", collected_at="2008-06-10T08:00:00+08:00")
        )
        column, reason = rejects(report, "labs.csv")[13]
        assert column == "collected_at" and "after the end of participation" in reason
        assert "L99" not in {row.record.lab.result_id for row in data.labs}

    def test_a_fatal_event_ends_follow_up_and_later_events_are_refused(self, dataset: Callable[..., Path]) -> None:
        def edit(rows: Rows) -> None:
            died(
                rows,
                fatal_event(),
                fatal_event(
                    event_id="AE-2",
                    grade="2",
                    serious="no",
                    seriousness_criteria="",
                    outcome="recovered",
                    onset_on="2008-02-20",
                    resolved_on="2008-02-25",
                    recorded_on="2008-02-20",
                ),
            )
            rows["visits.csv"].append(dict(subject_id="MSC-001", visit_code="M02", visit_date="2008-03-05"))

        data, report = load(dataset, edit)
        timeline = data.timelines["MSC-001"]
        assert timeline.died is not None and timeline.died.day == date(2008, 2, 12) and timeline.died.exact
        column, reason = rejects(report, "adverse_events.csv")[3]
        assert column == "onset_on" and "after MSC-001 died on 2008-02-12" in reason and "[ae-after-death]" in reason
        assert "after the end of participation" in rejects(report, "visits.csv")[5][1]
        assert findings(report, "death-disagreement") == [] and findings(report, "death-date-inexact") == []
        schedule = next(s for s in schedule_report(data) if s.subject_id == "MSC-001")
        assert {o.status for o in schedule.visits if o.visit.month >= 2} == {"off-study"}

    def test_a_death_the_subject_file_does_not_show_is_a_query_and_still_ends_follow_up(
        self, dataset: Callable[..., Path]
    ) -> None:
        def edit(rows: Rows) -> None:
            rows["adverse_events.csv"] = [fatal_event()]  # MSC-001 stays follow-up in subjects.csv

        data, report = load(dataset, edit)
        (query,) = findings(report, "death-disagreement")
        assert (query.file, query.line, query.severity, query.column) == ("subjects.csv", 2, "query", "status")
        assert "died on 2008-02-12 (adverse_events.csv:2)" in query.message
        assert data.timelines["MSC-001"].ended

    def test_a_coded_death_without_a_fatal_event_is_a_query(self, dataset: Callable[..., Path]) -> None:
        def edit(rows: Rows) -> None:
            died(
                rows,
                fatal_event(
                    event_id="AE-9",
                    subject_id="MSC-002",
                    grade="1",
                    serious="no",
                    seriousness_criteria="",
                    outcome="recovered",
                    onset_on="2008-02-05",
                    resolved_on="2008-02-06",
                    recorded_on="2008-02-05",
                ),
            )

        data, report = load(dataset, edit)
        (query,) = findings(report, "death-disagreement")
        assert query.column == "off_study_reason_code" and "no fatal event" in query.message
        died_on = data.timelines["MSC-001"].died
        assert died_on is not None and died_on.day == date(2008, 2, 12)  # the coded reason alone dates the death

    def test_a_fatal_event_without_a_date_of_death_refuses_nothing_and_asks(self, dataset: Callable[..., Path]) -> None:
        def edit(rows: Rows) -> None:
            rows["adverse_events.csv"] = [fatal_event(resolved_on="")]
            rows["subjects.csv"][0].update(status="off-study", off_study_on="2008-03-01", off_study_reason="died")

        data, report = load(dataset, edit)
        (query,) = findings(report, "death-date-inexact")
        assert (query.file, query.line, query.column) == ("adverse_events.csv", 2, "resolved_on")
        died_on = data.timelines["MSC-001"].died
        assert died_on is not None and not died_on.exact and died_on.day == date(2008, 2, 10)
        assert data.timelines["MSC-001"].end is not None and data.timelines["MSC-001"].end.day == date(2008, 3, 1)

    def test_an_unknown_off_study_reason_code_is_refused(self, dataset: Callable[..., Path]) -> None:
        def edit(rows: Rows) -> None:
            rows["subjects.csv"][0]["off_study_reason_code"] = ""
            rows["subjects.csv"][1]["off_study_reason_code"] = "moved"

        _, report = load(dataset, edit)
        column, reason = rejects(report, "subjects.csv")[3]
        assert column == "off_study_reason_code" and "'moved' is not one of" in reason and "death" in reason

    def test_a_subject_who_left_without_a_date_is_a_query_and_nothing_more_is_owed(
        self, dataset: Callable[..., Path]
    ) -> None:
        data, report = load(dataset, lambda rows: rows["subjects.csv"][1].update(off_study_on=""))
        (query,) = findings(report, "end-date-missing")
        assert (query.file, query.line, query.column, query.severity) == ("subjects.csv", 3, "off_study_on", "query")
        schedule = next(s for s in schedule_report(data) if s.subject_id == "MSC-002")
        assert schedule.count("not-yet-due") == 0 and schedule.count("off-study") > 0

    def test_dates_in_the_future_are_refused(self, dataset: Callable[..., Path]) -> None:
        def edit(rows: Rows) -> None:
            rows["visits.csv"][1]["visit_date"] = "2999-01-01"
            rows["subjects.csv"][0]["enrolled_on"] = "2008-01-02"

        _, report = load(dataset, edit)
        column, reason = rejects(report, "visits.csv")[3]
        assert column == "visit_date" and "in the future" in reason and "[future-date]" in reason

    def test_procedures_and_courses_after_the_end_are_refused(self, dataset: Callable[..., Path]) -> None:
        def edit(rows: Rows) -> None:
            rows["procedures.csv"].append(
                dict(
                    rows["procedures.csv"][0],
                    procedure_id="P9",
                    subject_id="MSC-002",
                    started_at="2008-05-01T08:00:00+08:00",
                    ended_at="",
                )
            )
            rows["medications.csv"] = [
                med_row("M9", "MSC-002", "prednisone", "40", "mg", "qd", "oral", "2008-05-01", "")
            ]

        _, report = load(dataset, edit)
        assert "after the end of participation" in rejects(report, "procedures.csv")[4][1]
        assert rejects(report, "medications.csv")[2][0] == "started_on"

    def test_screening_after_enrolment_is_refused(self, dataset: Callable[..., Path]) -> None:
        def edit(rows: Rows) -> None:
            rows["screening.csv"] = [dict(SCREEN_ROW, screened_on="2008-02-01")]

        _, report = load(dataset, edit)
        column, reason = rejects(report, "screening.csv")[2]
        assert column == "screened_on" and "after the enrolment of MSC-001" in reason

    def test_a_lab_away_from_its_visit_is_a_query_and_not_that_visit_s_measurement(
        self, dataset: Callable[..., Path]
    ) -> None:
        def edit(rows: Rows) -> None:  # the BL c3 drawn in March, two months after the BL visit
            rows["labs.csv"][0]["collected_at"] = "2008-03-20T08:00:00+08:00"

        data, report = load(dataset, edit)
        assert report.rejects == []
        (query,) = findings(report, "lab-outside-visit")
        assert (query.file, query.line, query.column) == ("labs.csv", 2, "collected_at")
        baseline = next(
            o for s in schedule_report(data) if s.subject_id == "MSC-001" for o in s.visits if o.visit.code == "BL"
        )
        assert "c3" in baseline.missing


class TestValueChecks:
    def test_a_negative_platelet_count_is_refused_and_no_thrombocytopenia_is_scored(
        self, dataset: Callable[..., Path]
    ) -> None:
        data, report = load(dataset, lambda rows: rows["labs.csv"][8].update(value="-85"))
        column, reason = rejects(report, "labs.csv")[10]
        assert column == "value" and "impossible" in reason and "[lab-impossible]" in reason
        score = next(s.record.score for s in data.sledai if s.record.assessment.visit_code == "BL")
        assert "thrombocytopenia" not in {d.key for d in score.descriptors}
        assert not score.final and {d.key for d in score.undecided} == {"thrombocytopenia"}
        (query,) = findings(report, "sledai-undecided")
        assert "labs.csv:10 was refused" in query.message and "preliminary" in query.message

    @pytest.mark.parametrize(("index", "value"), [(1, "-88"), (8, "-1")])
    def test_negative_concentrations_are_refused(self, dataset: Callable[..., Path], index: int, value: str) -> None:
        def edit(rows: Rows) -> None:
            lab(
                rows,
                1 if index == 1 else 8,
                result_id="LX",
                analyte="hemoglobin" if index == 8 else "creatinine",
                value=value,
                unit="g/L" if index == 8 else "umol/L",
                ref_low="",
                ref_high="",
            )

        _, report = load(dataset, edit)
        assert rejects(report, "labs.csv")[13][0] == "value"

    def test_a_complement_a_hundred_times_too_small_is_a_query(self, dataset: Callable[..., Path]) -> None:
        data, report = load(dataset, lambda rows: rows["labs.csv"][0].update(value="0.0045"))
        assert report.rejects == [] and len(data.labs) == 11  # kept: a query is not a refusal
        (query,) = findings(report, "lab-implausible")
        assert (query.line, query.column, query.value, query.severity) == (2, "value", "0.0045", "query")
        assert "below 0.02 g/L" in query.message and "unit slip" in query.message

    def test_a_percentage_above_100_is_refused(self, dataset: Callable[..., Path]) -> None:
        _, report = load(
            dataset,
            lambda rows: lab(
                rows, 8, result_id="LP", analyte="cd4_percent", value="140", unit="%", ref_low="", ref_high=""
            ),
        )
        assert "above 100 %" in rejects(report, "labs.csv")[13][1]

    def test_reference_limits_are_checked_too(self, dataset: Callable[..., Path]) -> None:
        def edit(rows: Rows) -> None:
            rows["labs.csv"][0]["ref_low"] = "-0.9"
            rows["labs.csv"][6]["ref_high"] = "10000"  # anti-dsDNA upper limit 100 times too large

        _, report = load(dataset, edit)
        assert rejects(report, "labs.csv")[2][0] == "ref_low"
        (query,) = findings(report, "lab-implausible")
        assert (query.line, query.column) == (8, "ref_high")

    def test_an_isolated_jump_of_an_order_of_magnitude_is_a_query(self, dataset: Callable[..., Path]) -> None:
        def edit(rows: Rows) -> None:  # C3 0.45 (BL), 4.5 two days before M01 (dg/L read as g/L?), 0.4 (M01)
            lab(rows, 0, result_id="LJ", value="4.5", collected_at="2008-02-02T08:00:00+08:00", visit_code="M01")
            rows["labs.csv"][9]["value"] = "0.4"

        _, report = load(dataset, edit)
        (query,) = findings(report, "lab-delta")  # the spike, not the first value beside it
        assert query.line == 13 and "times away from its neighbours 0.45 (labs.csv:2), 0.4 (labs.csv:11)" in (
            query.message
        )

    def test_a_censored_bound_no_assay_reports_is_a_query(self, dataset: Callable[..., Path]) -> None:
        # anti-dsDNA "<10" (range up to 100) is an assay limit; "<1000" is not (a "<10" times 100)
        data, report = load(dataset, lambda rows: rows["labs.csv"][6].update(value="<1000"))
        (query,) = findings(report, "lab-censored-bound")
        assert (query.line, query.column) == (8, "value") and "above the upper reference limit 100" in query.message
        assert len(data.labs) == 11 and not findings(load(dataset)[1], "lab-censored-bound")

    def test_a_pregnancy_recorded_for_a_man_is_refused(self, dataset: Callable[..., Path]) -> None:
        def edit(rows: Rows) -> None:
            rows["screening.csv"] = [dict(SCREEN_ROW, subject_id="C-1", sex="male", pregnant="yes")]
            rows["medications.csv"] = [med_row("M1", "C-1", "prednisone", "40", "mg", "qd", "oral", "2007-01-01", "")]

        data, report = load(dataset, edit)
        column, reason = rejects(report, "screening.csv")[2]
        assert column == "pregnant" and "cannot be recorded for a male subject" in reason
        assert data.screening == []

    def test_a_sledai_total_jumping_more_than_the_check_allows_is_a_query(self, dataset: Callable[..., Path]) -> None:
        # BL scores 13 (arthritis, rash and lab descriptors), M01 has the CRF total 0: a drop of 13
        _, report = load(dataset)
        (query,) = findings(report, "sledai-jump")
        assert (query.file, query.line, query.value) == ("sledai.csv", 3, "0") and "-13 from 13" in query.message

    def test_an_implausible_screening_value_is_a_query(self, dataset: Callable[..., Path]) -> None:
        def edit(rows: Rows) -> None:  # 24-h protein in mg written as g; the verdict would not change silently
            rows["screening.csv"] = [dict(SCREEN_ROW, urine_protein_24h="1800")]
            rows["medications.csv"] = [
                med_row("M1", "MSC-001", "prednisone", "40", "mg", "qd", "oral", "2007-01-01", "")
            ]

        data, report = load(dataset, edit)
        (query,) = findings(report, "screening-implausible")
        assert (query.file, query.line, query.column) == ("screening.csv", 2, "urine_protein_24h")
        assert "above 40 g/(24.h)" in query.message and len(data.screening) == 1

    def test_an_implausible_dose_is_a_query(self, dataset: Callable[..., Path]) -> None:
        def edit(rows: Rows) -> None:
            rows["screening.csv"] = [dict(SCREEN_ROW)]
            rows["medications.csv"] = [
                med_row(
                    "M1", "MSC-001", "cyclophosphamide", "50", "g/m2", "q2w", "intravenous", "2007-03-01", "2007-10-01"
                )
            ]

        _, report = load(dataset, edit)
        (query,) = findings(report, "medication-dose-implausible")
        assert (query.file, query.line, query.column) == (
            "medications.csv",
            2,
            "dose",
        ) and "above 2 g/m2" in query.message

    @pytest.mark.parametrize("value", ["123456789012345678901234567890", "1e30", "0.0000000000000000000001"])
    def test_a_number_no_result_can_be_is_refused_not_a_traceback(
        self, dataset: Callable[..., Path], tmp_path: Path, value: str
    ) -> None:
        data_dir = dataset(lambda rows: rows["labs.csv"][0].update(value=value))
        _, report = load_trial(data_dir)
        column, reason = rejects(report, "labs.csv")[2]
        assert column == "value" and any(why in reason for why in ("digits", "decimal places", "neither a number"))
        result = runner.invoke(app, ["map", str(data_dir), "-o", str(tmp_path / "b.json"), "--allow-rejects"])
        assert result.exit_code == 0, result.output


class TestFiles:
    @pytest.mark.parametrize("line", [1, 5])
    def test_a_byte_that_is_not_utf8_is_named_at_its_line(self, dataset: Callable[..., Path], line: int) -> None:
        path = dataset() / "labs.csv"
        lines = path.read_bytes().split(b"\n")
        lines[line - 1] = lines[line - 1].replace(b"Drum", b"Dr\xe9m").replace(b"result_id", b"r\xe9sult_id")
        path.write_bytes(b"\n".join(lines))
        with pytest.raises(InputError) as caught:
            load_trial(path.parent)
        assert caught.value.line == line and "save the file as UTF-8" in str(caught.value)
        assert str(caught.value).startswith(f"labs.csv:{line}: byte 0xe9")

    def test_a_byte_far_down_a_long_file_is_named_at_its_line(self, dataset: Callable[..., Path]) -> None:
        def edit(rows: Rows) -> None:
            for index in range(5000):
                lab(rows, 2, result_id=f"LU{index}", lab="Central Lab")

        path = dataset(edit) / "labs.csv"
        lines = path.read_bytes().split(b"\n")
        lines[4999] = lines[4999].replace(b"Central", b"C\xe9ntral")
        path.write_bytes(b"\n".join(lines))
        with pytest.raises(InputError, match=r"^labs\.csv:5000: byte 0xe9"):
            load_trial(path.parent)

    def test_each_command_declares_what_it_needs(self, dataset: Callable[..., Path]) -> None:
        data_dir = dataset()
        assert set(needed_files(data_dir, "map")) == {
            "subjects.csv",
            "visits.csv",
            "labs.csv",
            "sledai.csv",
            "procedures.csv",
        }
        assert set(needed_files(data_dir, "screen")) == {"screening.csv", "medications.csv"}
        assert set(needed_files(data_dir, "validate")) == set(needed_files(data_dir, "map"))
        (data_dir / "subjects.csv").write_text("subject_id\n", encoding="utf-8")
        assert needed_files(data_dir, "validate") == ("screening.csv",)  # nobody enrolled yet: still screening

    @pytest.mark.parametrize("command", ["validate", "map", "report", "push"])
    def test_an_empty_needed_file_stops_the_command_naming_it(
        self, dataset: Callable[..., Path], tmp_path: Path, command: str
    ) -> None:
        data_dir = dataset()
        (data_dir / "labs.csv").write_text("", encoding="utf-8")  # `: > labs.csv`
        args = {
            "map": ["-o", str(tmp_path / "b.json")],
            "report": ["-o", str(tmp_path / "r.html")],
            "push": ["--server", "http://127.0.0.1:9/fhir", "--journal", str(tmp_path / "j.sqlite")],
        }
        result = runner.invoke(app, [command, str(data_dir), *args.get(command, [])])
        assert result.exit_code == 2, result.output
        assert "labs.csv: has no rows" in result.output and f"`{command}` needs it" in result.output
        assert not (tmp_path / "b.json").exists() and not (tmp_path / "r.html").exists()
        with pytest.raises(InputError, match=r"labs\.csv"):
            require_inputs(data_dir, command)

    def test_without_labs_a_baseline_sledai_is_preliminary_and_eligibility_unknown_not_failed(
        self, dataset: Callable[..., Path]
    ) -> None:
        """The issue's first case: an empty labs.csv once scored MSC-002's BL 2 (of 18), final, and screening
        called enrolled subjects ineligible. screen does not need labs: the score is a range, the criterion
        unknown, the subject a query."""

        def edit(rows: Rows) -> None:
            rows["screening.csv"] = [dict(SCREEN_ROW)]
            rows["medications.csv"] = [
                med_row("M1", "MSC-001", "prednisone", "40", "mg", "qd", "oral", "2007-01-01", "2007-06-30"),
                med_row(
                    "M2", "MSC-001", "cyclophosphamide", "0.5", "g/m2", "q2w", "intravenous", "2007-03-01", "2007-10-01"
                ),
            ]
            rows["sledai.csv"][0]["descriptors"] = "rash"  # 2 points on the CRF, the rest would come from labs

        data_dir = dataset(edit)
        (data_dir / "labs.csv").write_text("", encoding="utf-8")  # `: > labs.csv`
        data, report = load_trial(data_dir)
        assert report.absent["labs.csv"] == "empty" and findings(report, "file-empty")
        score = next(s.record.score for s in data.sledai if s.record.assessment.visit_code == "BL")
        assert (score.total, score.final) == (2, False) and score.upper_total == 2 + 22
        (candidate,) = screen_trial(data, report=report)
        assert candidate.result.verdict == "incomplete"  # never "ineligible" on a missing lab file
        (query,) = [f for f in screening_findings(data, [candidate], report) if f.kind == "enrolled-not-eligible"]
        assert query.severity == "query" and "SLEDAI-2K 2-24, preliminary" in query.message

    def test_an_empty_optional_file_counts_as_absent_and_its_items_are_unknown(
        self, dataset: Callable[..., Path]
    ) -> None:
        data_dir = dataset()
        (data_dir / "treg.csv").write_text("measurement_id,subject_id,visit_code,measured_at,percent,lab\n")
        data, report = load_trial(data_dir)
        (note,) = findings(report, "file-empty")
        assert note.file == "treg.csv" and note.severity == "note"
        baseline = next(
            o for s in schedule_report(data) if s.subject_id == "MSC-001" for o in s.visits if o.visit.code == "BL"
        )
        assert "treg_percent" in baseline.unknown and "treg_percent" not in baseline.missing


@pytest.fixture(scope="module")
def decide(study: StudyDefinition) -> Callable[..., Any]:
    pack = load_pack()
    catalogue, units = load_medication_catalogue(pack), UnitConverter(pack)
    return lambda **changes: screen_candidate(facts(**changes), study.eligibility, catalogue=catalogue, units=units)


class TestEligibilityAsOfScreening:
    def test_a_course_running_at_screening_counts_only_its_part_before(self, decide: Callable[..., Any]) -> None:
        # six months of cyclophosphamide planned, three given by the screening date: not yet a failed regimen
        planned = med("cyclophosphamide", "0.5", "g/m2", "q2w", "2008-02-01", "2008-08-15")
        result = decide(medications=(med("prednisone", "30", "mg", "qd", "2007-01-01", "2007-06-01"), planned))
        cyc = next(c for c in result.criteria if "cyclophosphamide" in c.criterion.text)
        assert cyc.decision == "not met" and "3 months up to screening (2008-05-02)" in cyc.data

    def test_a_course_after_screening_does_not_count(self, decide: Callable[..., Any]) -> None:
        later = med("cyclophosphamide", "0.5", "g/m2", "q2w", "2008-06-01", "2009-01-15")
        result = decide(medications=(med("prednisone", "30", "mg", "qd", "2007-01-01", "2007-06-01"), later))
        cyc = next(c for c in result.criteria if "cyclophosphamide" in c.criterion.text)
        assert cyc.decision == "not met" and "started after screening (2008-05-02): not counted" in cyc.data

    def test_a_course_after_screening_is_a_note(self, dataset: Callable[..., Path]) -> None:
        def edit(rows: Rows) -> None:
            rows["screening.csv"] = [dict(SCREEN_ROW)]
            rows["medications.csv"] = [
                med_row("M1", "MSC-001", "prednisone", "40", "mg", "qd", "oral", "2007-12-24", "")
            ]

        _, report = load(dataset, edit)
        (note,) = findings(report, "medication-after-screening")
        assert (note.file, note.line, note.severity) == ("medications.csv", 2, "note")

    def test_a_refused_course_makes_a_failed_regimen_unknown_not_absent(self, dataset: Callable[..., Path]) -> None:
        def edit(rows: Rows) -> None:
            rows["screening.csv"] = [dict(SCREEN_ROW)]
            rows["medications.csv"] = [
                med_row("M1", "MSC-001", "prednisone", "40", "mg", "qd", "oral", "2007-01-01", "2007-06-30"),
                med_row(
                    "M2",
                    "MSC-001",
                    "cyclophosphamide",
                    "0.5",
                    "g/m2",
                    "q2w",
                    "subcutaneous",
                    "2007-03-01",
                    "2007-10-01",
                ),
            ]

        data, report = load(dataset, edit)
        assert rejects(report, "medications.csv")[3][0] == "route"
        (candidate,) = screen_trial(data, report=report)
        cyc = next(c for c in candidate.result.criteria if "cyclophosphamide" in c.criterion.text)
        assert cyc.decision == "unknown" and "medications.csv:3 refused" in cyc.data
        assert candidate.result.verdict == "incomplete"


def spoiled_platelet(rows: Rows) -> None:
    rows["labs.csv"][8]["value"] = "-85"


class TestPublishing:
    def test_map_writes_nothing_when_a_row_is_refused(self, dataset: Callable[..., Path], tmp_path: Path) -> None:
        out = tmp_path / "b.json"
        out.write_text("the previous output", encoding="utf-8")
        result = runner.invoke(app, ["map", str(dataset(spoiled_platelet)), "-o", str(out)])
        assert result.exit_code == 1 and "nothing was written" in result.output
        assert out.read_text(encoding="utf-8") == "the previous output"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "data"]  # no spool, no temporary file

    def test_with_allow_rejects_a_derived_value_is_preliminary_with_the_reason(
        self, dataset: Callable[..., Path], tmp_path: Path
    ) -> None:
        out = tmp_path / "b.json"
        result = runner.invoke(app, ["map", str(dataset(spoiled_platelet)), "-o", str(out), "--allow-rejects"])
        assert result.exit_code == 0, result.output
        entries = [e["resource"] for e in json.loads(out.read_text(encoding="utf-8"))["entry"]]
        sledai = [
            r
            for r in entries
            if r["resourceType"] == "Observation" and r["category"][0]["coding"][0]["code"] == "survey"
        ]
        baseline, month1 = sorted(sledai, key=lambda r: r["effectiveDateTime"])
        assert baseline["status"] == "preliminary" and month1["status"] == "final"  # M01's CRF total is the score
        (absent,) = [c for c in baseline["component"] if "dataAbsentReason" in c]
        assert absent["dataAbsentReason"]["coding"][0]["code"] == "unknown" and "valueInteger" not in absent
        assert "labs.csv:10 was refused" in absent["extension"][0]["valueString"]
        assert "sledai-undecided" in result.output

    def test_a_crf_total_stays_final_whatever_the_labs(self, dataset: Callable[..., Path]) -> None:
        def edit(rows: Rows) -> None:
            spoiled_platelet(rows)
            rows["sledai.csv"][0]["reported_total"] = "13"

        data, report = load(dataset, edit)
        assert all(s.record.score.final for s in data.sledai) and not findings(report, "sledai-undecided")

    def test_report_writes_nothing_then_marks_what_is_preliminary(
        self, dataset: Callable[..., Path], tmp_path: Path
    ) -> None:
        data_dir = dataset(spoiled_platelet)
        page = tmp_path / "r.html"
        refused = runner.invoke(app, ["report", str(data_dir), "-o", str(page)])
        assert refused.exit_code == 1 and not page.exists() and "not written" in refused.output
        data, report = load_trial(data_dir)
        result = write_report(TrialSource.loaded(data, report), page)
        summary = next(s for s in result.summaries["sledai"] if s.month == 3)
        assert not summary.final and summary.incomplete == ("MSC-001",)
        assert any("SLEDAI-2K total at M3" in line and "MSC-001" in line for line in result.preliminary)
        html = page.read_text(encoding="utf-8")
        assert 'class="prelim"' in html and "preliminary" in html

    def test_screen_csv_is_not_written_with_rejects(self, dataset: Callable[..., Path], tmp_path: Path) -> None:
        def edit(rows: Rows) -> None:
            rows["screening.csv"] = [dict(SCREEN_ROW)]
            rows["medications.csv"] = [med_row("M1", "MSC-001", "warfarin", "5", "mg", "qd", "oral", "2007-01-01", "")]

        out = tmp_path / "screen.csv"
        data_dir = dataset(edit)
        result = runner.invoke(app, ["screen", str(data_dir), "--csv", str(out)])
        assert result.exit_code == 1 and not out.exists()
        allowed = runner.invoke(app, ["screen", str(data_dir), "--csv", str(out), "--allow-rejects"])
        assert allowed.exit_code == 0 and out.exists()

    def test_a_registry_package_is_not_written_with_rejects(self, dataset: Callable[..., Path], tmp_path: Path) -> None:
        key = RegistryKey(b"k" * 32)
        with pytest.raises(RejectedRows):
            package_trial(
                TrialSource.directory(dataset(spoiled_platelet)),
                tmp_path / "pkg",
                key,
                link_table=tmp_path / "link.csv",
            )
        assert not (tmp_path / "pkg").exists() and not (tmp_path / "link.csv").exists()


class TestQueries:
    def spoil(self, rows: Rows) -> None:
        rows["labs.csv"][0]["value"] = "0.0045"  # a C3 a hundred times too small: a query

    def test_validate_writes_queries_with_ids_that_survive_moving_rows(
        self, dataset: Callable[..., Path], tmp_path: Path
    ) -> None:
        out = tmp_path / "queries.csv"
        data_dir = dataset(self.spoil)
        result = runner.invoke(app, ["validate", str(data_dir), "--queries", str(out)])
        assert result.exit_code == 0, result.output  # queries do not change the exit code
        rows = list(csv.DictReader(out.open(encoding="utf-8")))
        implausible = next(r for r in rows if r["check"] == "lab-implausible")
        assert (implausible["file"], implausible["line"], implausible["column"], implausible["value"]) == (
            "labs.csv",
            "2",
            "value",
            "0.0045",
        )
        assert re.fullmatch(r"Q-[0-9a-f]{12}", implausible["query_id"]) and implausible["status"] == "open"
        assert re.search(r"lab-implausible\s+│\s+query\s+│", result.output)  # counts per check

        def moved(rows: Rows) -> None:
            self.spoil(rows)
            rows["labs.csv"].insert(0, rows["labs.csv"].pop(5))

        _, report = load(dataset, moved)
        (again,) = findings(report, "lab-implausible")
        assert again.line == 3 and query_id(again) == implausible["query_id"]

    def test_a_confirmed_value_closes_its_query_and_a_changed_one_reopens_it(
        self, dataset: Callable[..., Path]
    ) -> None:
        data_dir = dataset(self.spoil)
        _, report = load_trial(data_dir)
        (query,) = findings(report, "lab-implausible")
        responses = data_dir / "query_responses.csv"
        with responses.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["query_id", "response", "confirmed_value", "responded_by", "responded_on"])
            writer.writerow([query_id(query), "hereditary C3 deficiency, confirmed", "0.0045", "WJ", "2008-03-01"])
        log = track_queries(load_trial(data_dir)[1], data_dir)
        assert [q.status for q in log.queries if q.finding.kind == "lab-implausible"] == ["closed"]
        out = data_dir.parent / "q.csv"
        result = runner.invoke(app, ["validate", str(data_dir), "--queries", str(out)])
        assert result.exit_code == 0 and "lab-implausible" not in out.read_text(encoding="utf-8")
        assert re.search(r"lab-implausible\s+│\s+query\s+│\s+│\s+│\s+│\s+│\s+1", result.output)
        text = (data_dir / "labs.csv").read_text(encoding="utf-8").replace(",0.0045,", ",0.0046,")
        (data_dir / "labs.csv").write_text(text, encoding="utf-8")
        reopened = track_queries(load_trial(data_dir)[1], data_dir)
        assert [q.status for q in reopened.queries if q.finding.kind == "lab-implausible"] == ["reopened"]

    def test_a_bad_response_row_is_refused_like_any_row(self, dataset: Callable[..., Path]) -> None:
        data_dir = dataset()
        (data_dir / "query_responses.csv").write_text(
            "query_id,response,confirmed_value,responded_by,responded_on\nQ-nothex,ok,,WJ,2008-03-01\n",
            encoding="utf-8",
        )
        report = load_trial(data_dir)[1]
        track_queries(report, data_dir)
        assert rejects(report, "query_responses.csv")[2][0] == "query_id"


def test_pull_assigns_no_visit_after_the_end_of_participation(study: StudyDefinition) -> None:
    day0 = date(2008, 1, 5)
    assert assign_visit("2008-03-05T08:00:00+08:00", day0, study, 7)[:2] == ("M02", "in-window")
    assert assign_visit("2008-03-05T08:00:00+08:00", day0, study, 7, end=date(2008, 3, 1))[:2] == ("", "after-end")
    assert assign_visit("2008-03-01", day0, study, 7, end=date(2008, 3, 1))[1] != "after-end"  # the last day counts


def test_every_check_raised_is_declared_with_a_severity_and_a_source() -> None:
    """The checks are data: every id the code raises is in mappings/checks/checks.yaml, and every declared
    check is raised somewhere (no dead entry)."""
    rules = load_check_rules()
    source = "\n".join(p.read_text(encoding="utf-8") for p in (Path(__file__).parents[1] / "fhir_lupus").rglob("*.py"))
    raised = set(re.findall(r'(?:raise_|severity|finding)\(\s*"([a-z0-9-]+)"', source))
    raised |= set(re.findall(r'Finding\(\s*[^,()]+,\s*[^,()]+,\s*"([a-z0-9-]+)"', source))
    assert raised - set(rules.checks) == set()  # raised but not declared
    assert {check for check in rules.checks if f'"{check}"' not in source} == set()  # declared, never raised
    assert all(check.source and check.what for check in rules.checks.values())


def test_push_publishes_a_preliminary_total_only_where_no_final_one_stands(
    dataset: Callable[..., Path], tmp_path: Path, fake: Any
) -> None:
    """The whole chain through the CLI against the fake server: a refused lab makes the BL total preliminary (listed);
    the correct data makes it final; the refused lab again cannot put the preliminary total back over it."""
    journal = tmp_path / "journal.sqlite"
    args = ["--server", "http://127.0.0.1:9/fhir", "--journal", str(journal)]

    def baseline_total() -> dict[str, Any]:
        (found,) = [o for o in fake.all("Observation") if o["identifier"][0]["value"] == "MSC-001/BL"]
        return found

    spoiled = dataset(spoiled_platelet)
    refused = runner.invoke(app, ["push", str(spoiled), *args])
    assert refused.exit_code == 1 and fake.all("Observation") == []  # nothing sent without --allow-rejects
    first = runner.invoke(app, ["push", str(spoiled), *args, "--allow-rejects"])
    assert first.exit_code == 0, first.output
    assert "preliminary" in first.output and "sledai-undecided" in first.output
    assert baseline_total()["status"] == "preliminary"
    (spoiled / "labs.csv").write_text(
        (spoiled / "labs.csv").read_text(encoding="utf-8").replace(",-85,", ",85,"), encoding="utf-8"
    )
    corrected = runner.invoke(app, ["push", str(spoiled), *args])
    assert corrected.exit_code == 0, corrected.output
    assert (baseline_total()["status"], baseline_total()["valueInteger"]) == ("final", 13)
    (spoiled / "labs.csv").write_text(
        (spoiled / "labs.csv").read_text(encoding="utf-8").replace(",85,", ",-85,"), encoding="utf-8"
    )
    again = runner.invoke(app, ["push", str(spoiled), *args, "--allow-rejects"])
    assert again.exit_code == 5 and "held-back" in again.output and "not replaced" in again.output  # issue 22: 5
    assert (baseline_total()["status"], baseline_total()["valueInteger"]) == ("final", 13)
