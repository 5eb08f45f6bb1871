"""Protocol months as data (protocol.visit_months): the anchor event and the 30-day or calendar month rule."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fakefhir import BASE, FakeFhir

from fhir_lupus import load_trial
from fhir_lupus.client import FhirClient, RetryPolicy
from fhir_lupus.errors import MappingError
from fhir_lupus.journal import Journal
from fhir_lupus.mappers._context import MappingContext
from fhir_lupus.mappers._procedure import map_procedure
from fhir_lupus.model import LoadReport, StudyDefinition, load_study
from fhir_lupus.model._study import add_calendar_months, due_date, nearest_month
from fhir_lupus.pull import pull_study
from fhir_lupus.pull._visits import assign_visit
from fhir_lupus.push import push_trial
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import MappingPack, default_mappings_dir, load_pack

Rows = dict[str, list[dict[str, str]]]
BL = date(2008, 1, 5)  # MSC-001's baseline in tests/conftest.py; its MSC infusion is on 2008-01-07


def months(study: StudyDefinition, *, anchor: str = "baseline", rule: str = "30-day") -> StudyDefinition:
    """The study with protocol.visit_months changed, validated like the study file."""
    data = study.model_dump()
    data["protocol"]["visit_months"].update(anchor=anchor, rule=rule)
    return StudyDefinition.model_validate(data)


def load(dataset: Callable[..., Path], study: StudyDefinition, edit: Callable[[Rows], Any] | None = None) -> LoadReport:
    report = load_trial(dataset(edit), study=study)[1]
    assert report.rejects == [], [str(r) for r in report.rejects]
    return report


def findings(report: LoadReport, kind: str) -> list[str]:
    return [f.message for f in report.findings if f.kind == kind]


def book_calendar_months(rows: Rows) -> None:
    """MSC-001 seen at M01..M24 on calendar months from BL, as a site booking by the calendar would."""
    rows["visits.csv"] = [v for v in rows["visits.csv"] if v["subject_id"] != "MSC-001" or v["visit_code"] == "BL"]
    rows["visits.csv"] += [
        dict(subject_id="MSC-001", visit_code=f"M{n:02d}", visit_date=add_calendar_months(BL, n).isoformat())
        for n in range(1, 25)
    ]


class TestRules:
    @pytest.mark.parametrize(
        ("day", "n", "expected"),
        [
            (date(2008, 1, 31), 1, date(2008, 2, 29)),  # leap year
            (date(2009, 1, 31), 1, date(2009, 2, 28)),
            (date(2008, 8, 31), 1, date(2008, 9, 30)),
            (date(2008, 1, 31), 2, date(2008, 3, 31)),  # clamped per month, not carried over
            (date(2008, 11, 15), 14, date(2010, 1, 15)),
            (BL, 0, BL),
        ],
    )
    def test_calendar_months_keep_the_day_clamped_to_the_month_end(self, day: date, n: int, expected: date) -> None:
        assert add_calendar_months(day, n) == expected
        assert due_date(day, n, "calendar") == expected

    def test_the_rules_part_by_10_to_11_days_at_month_24(self) -> None:
        assert due_date(date(2009, 1, 5), 24, "30-day") == date(2010, 12, 26)
        assert due_date(date(2009, 1, 5), 24, "calendar") == date(2011, 1, 5)
        assert due_date(BL, 18, "30-day") == date(2009, 6, 28)  # 7 days before the calendar month: still in
        assert (due_date(BL, 24, "calendar") - due_date(BL, 24, "30-day")).days == 11

    @pytest.mark.parametrize(
        ("anchor", "day", "expected"),
        [
            (date(2008, 1, 31), date(2008, 2, 29), 1),  # the clamped due date is the nearest
            (date(2008, 1, 31), date(2008, 3, 2), 1),  # 2 days after Feb 29, 29 before Mar 31
            (BL, date(2010, 1, 5), 24),
            (BL, date(2007, 12, 1), 0),
        ],
    )
    def test_nearest_calendar_month(self, anchor: date, day: date, expected: int) -> None:
        assert nearest_month(anchor, day, "calendar") == expected

    def test_the_shipped_default_is_baseline_and_30_day(self, study: StudyDefinition) -> None:
        assert (study.protocol.visit_months.anchor, study.protocol.visit_months.rule) == ("baseline", "30-day")


class TestStudyFile:
    @pytest.mark.parametrize(("key", "good", "bad"), [("rule", "30-day", "lunar"), ("anchor", "baseline", "consent")])
    def test_an_unknown_month_rule_or_anchor_is_a_mapping_error_naming_file_and_key(
        self, tmp_path: Path, key: str, good: str, bad: str
    ) -> None:
        source = (default_mappings_dir() / "studies" / "NCT00698191.yaml").read_text(encoding="utf-8")
        assert source.count(f"    {key}: {good}\n") == 1
        shutil.copytree(default_mappings_dir(), tmp_path, dirs_exist_ok=True)  # a whole pack, with this study
        path = tmp_path / "studies" / "NCT00698191.yaml"
        path.write_text(source.replace(f"    {key}: {good}\n", f"    {key}: {bad}\n"), encoding="utf-8")
        with pytest.raises(MappingError) as raised:
            load_study("NCT00698191", load_pack(tmp_path))
        assert str(path) in str(raised.value) and f"protocol.visit_months.{key}" in str(raised.value)

    def test_the_infusion_code_is_how_the_mapper_codes_the_infusion(
        self, dataset: Callable[..., Path], ctx: MappingContext, pack: MappingPack, study: StudyDefinition
    ) -> None:
        data, _ = load_trial(dataset())
        subject = next(s.record for s in data.subjects if s.record.subject_id == "MSC-001")
        infusion = next(p.record for p in data.procedures if p.record.kind == "msc_infusion")
        coding = pack.coding(study.protocol.visit_months.infusion_code)
        codings = map_procedure(infusion, subject, ctx)["code"]["coding"]
        assert any(c["system"] == coding["system"] and c["code"] == coding["code"] for c in codings)


class TestLoaderWindows:
    def test_a_calendar_month_visit_at_m24_is_in_window_only_under_the_calendar_rule(
        self, dataset: Callable[..., Path], study: StudyDefinition
    ) -> None:
        calendar = load(dataset, months(study, rule="calendar"), book_calendar_months)
        missed = [message for message in findings(calendar, "missed-visit") if message.startswith("MSC-001")]
        assert findings(calendar, "out-of-window") == [] and missed == []  # MSC-002 left after its M01 window

        thirty = load(dataset, months(study, rule="30-day"), book_calendar_months)
        late = findings(thirty, "out-of-window")
        assert "MSC-001 M24 on 2010-01-05, due 2009-12-25 +/- 7 days" in late
        assert {message.split(" on ")[0] for message in late} == {f"MSC-001 M{n}" for n in range(19, 25)}  # M18: 7 d

    def test_30_day_booking_is_in_window_under_30_day_only(
        self, dataset: Callable[..., Path], study: StudyDefinition
    ) -> None:
        def book_30_day(rows: Rows) -> None:
            book_calendar_months(rows)
            for visit in rows["visits.csv"]:
                if visit["subject_id"] == "MSC-001" and visit["visit_code"] != "BL":
                    visit["visit_date"] = due_date(BL, int(visit["visit_code"][1:]), "30-day").isoformat()

        assert findings(load(dataset, months(study, rule="30-day"), book_30_day), "out-of-window") == []
        calendar = findings(load(dataset, months(study, rule="calendar"), book_30_day), "out-of-window")
        assert "MSC-001 M24 on 2009-12-25, due 2010-01-05 +/- 7 days" in calendar

    def test_the_msc_infusion_anchor_shifts_due_dates(
        self, dataset: Callable[..., Path], study: StudyDefinition
    ) -> None:
        def late_m01_and_m03(rows: Rows) -> None:
            rows["visits.csv"][1]["visit_date"] = "2008-02-13"  # BL + 39 days, infusion (01-07) + 37 days
            rows["visits.csv"].append(dict(subject_id="MSC-001", visit_code="M03", visit_date="2008-04-06"))

        from_baseline = load(dataset, months(study, anchor="baseline"), late_m01_and_m03)
        assert "MSC-001 M01 on 2008-02-13, due 2008-02-04 +/- 7 days" in findings(from_baseline, "out-of-window")
        assert "MSC-001 M02 (due 2008-03-05)" in findings(from_baseline, "missed-visit")

        from_infusion = load(dataset, months(study, anchor="msc_infusion"), late_m01_and_m03)
        assert findings(from_infusion, "out-of-window") == []
        assert "MSC-001 M02 (due 2008-03-07)" in findings(from_infusion, "missed-visit")
        # MSC-002 has no infusion: its months count from BL, and the report says so
        assert findings(from_infusion, "no-anchor") == [
            "MSC-002 has no completed MSC infusion: visit months counted from BL (2008-02-03)"
        ]

    def test_without_a_completed_infusion_the_anchor_falls_back_to_baseline(
        self, dataset: Callable[..., Path], study: StudyDefinition
    ) -> None:
        def infusion_not_done(rows: Rows) -> None:
            rows["procedures.csv"][1].update(status="not-done", cells_per_kg="", donor_id="", ended_at="")

        report = load(dataset, months(study, anchor="msc_infusion"), infusion_not_done)
        assert [m.split(" has")[0] for m in findings(report, "no-anchor")] == ["MSC-001", "MSC-002"]
        assert findings(report, "out-of-window") == []  # M01 on BL + 30: due from BL, not from the infusion


class TestPullAssignment:
    @pytest.mark.parametrize("n", range(18, 25))
    def test_calendar_month_collections_get_their_visit_under_the_calendar_rule(
        self, study: StudyDefinition, n: int
    ) -> None:
        collected = f"{add_calendar_months(BL, n).isoformat()}T08:00:00+08:00"
        assert assign_visit(collected, BL, months(study, rule="calendar"), 7) == (f"M{n}", "in-window", "0")

    def test_a_calendar_month_collection_at_m24(self, study: StudyDefinition) -> None:
        collected = "2010-01-05T08:00:00+08:00"  # BL 2008-01-05 + 24 calendar months
        assert assign_visit(collected, BL, months(study, rule="calendar"), 7) == ("M24", "in-window", "0")
        assert assign_visit(collected, BL, months(study, rule="30-day"), 7) == ("", "outside-windows", "11")

    def test_calendar_offsets_count_from_the_clamped_due_date(self, study: StudyDefinition) -> None:
        end_of_january = date(2008, 1, 31)
        assert assign_visit("2008-03-03", end_of_january, months(study, rule="calendar"), 7) == (
            "M01",
            "in-window",
            "3",
        )


def pulled(fake: FakeFhir, dataset: Callable[..., Path], study: StudyDefinition, tmp_path: Path) -> dict[str, Any]:
    data, report = load_trial(dataset(), study=study)
    with FhirClient(BASE, retry=RetryPolicy(attempts=1)) as fhir, Journal(tmp_path / "j.sqlite") as journal:
        push_trial(TrialSource.loaded(data, report), fhir, journal, source="test")
        result = pull_study(fhir, journal, study, since=None)
    return {row.result_id: (row.visit_code, row.days_from_due) for row in result.rows}


class TestPullAnchor:
    def test_the_msc_infusion_procedure_on_the_server_is_day_0(
        self, fake: FakeFhir, dataset: Callable[..., Path], study: StudyDefinition, tmp_path: Path
    ) -> None:
        from_baseline = pulled(fake, dataset, months(study, anchor="baseline"), tmp_path / "bl")
        assert from_baseline["L1"] == ("BL", "0") and from_baseline["L10"] == ("M01", "0")
        fake.requests.clear()
        from_infusion = pulled(fake, dataset, months(study, anchor="msc_infusion"), tmp_path / "msc")
        # MSC-001's infusion (2008-01-07) is day 0: its labs are two days before their due dates
        assert from_infusion["L1"] == ("BL", "-2") and from_infusion["L10"] == ("M01", "-2")
        # MSC-002 has no infusion Procedure: the BL Encounter stays its day 0
        assert from_infusion["L11"] == ("BL", "0")
        assert any(path.startswith("Procedure?") for _, path in fake.requests)
