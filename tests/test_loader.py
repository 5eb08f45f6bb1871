"""Each class of bad input is refused with file, line and column, quarantined and counted; nothing is lost."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fhir_lupus.errors import InputError
from fhir_lupus.model import LoadReport, load_trial, write_quarantine

Rows = dict[str, list[dict[str, str]]]
Edit = Callable[[Rows], Any]


def load(dataset: Callable[..., Path], edit: Edit | None = None) -> LoadReport:
    return load_trial(dataset(edit))[1]


def only_reject(report: LoadReport) -> tuple[str, int, str | None, str]:
    assert len(report.rejects) == 1, [str(r) for r in report.rejects]
    reject = report.rejects[0]
    return reject.file, reject.line, reject.column, reject.reason


def test_clean_dataset_has_no_rejects(dataset: Callable[..., Path]) -> None:
    data, report = load_trial(dataset())
    assert report.rejects == []
    assert report.read == {
        "subjects.csv": 2,
        "visits.csv": 3,
        "labs.csv": 11,
        "sledai.csv": 2,
        "treg.csv": 1,
        "procedures.csv": 2,
    }
    assert len(data.labs) == 11 and len(data.sledai) == 2


@pytest.mark.parametrize(
    ("file", "index", "column", "value", "reason"),
    [
        ("subjects.csv", 0, "sex", "f", "Input should be"),
        ("subjects.csv", 0, "birth_date", "01/05/1980", "YYYY"),
        ("subjects.csv", 0, "enrolled_on", "2008-13-01", "date"),
        ("subjects.csv", 0, "status", "active", "Input should be"),
        ("subjects.csv", 0, "arm", "Placebo", "not an arm"),
        ("visits.csv", 1, "visit_code", "M99", "not a visit of the protocol"),
        ("visits.csv", 1, "visit_date", "2007-12-01", "before enrolment"),
        ("labs.csv", 0, "value", "high", "neither a number"),
        ("labs.csv", 0, "unit", "furlongs", "not a UCUM unit"),
        ("labs.csv", 0, "unit", "mmol/L", "no code for c3"),
        ("labs.csv", 7, "method", "cockcroft-gault", "no code for egfr"),
        ("labs.csv", 7, "unit", "mL/min", "an eGFR in mL/min is not normalised"),
        ("labs.csv", 1, "specimen", "urine", "this analyte is serum/plasma creatinine"),
        ("labs.csv", 0, "specimen", "urine", "specimen urine"),
        ("labs.csv", 3, "method", "elisa", "an immunoassay reports units or presence, not a dilution titer"),
        ("labs.csv", 0, "analyte", "troponin", "not in the lab catalogue"),
        ("labs.csv", 0, "collected_at", "2008-01-05T08:00:00", "UTC offset"),
        ("labs.csv", 0, "specimen", "saliva", "Input should be"),
        ("labs.csv", 0, "ref_low", "2.0", "ref_low is above ref_high"),
        ("labs.csv", 4, "ref_low", "0", "needs a numeric result"),
        ("labs.csv", 0, "visit_code", "M02", "visit M02 of MSC-001 is not in visits.csv"),
        ("sledai.csv", 0, "descriptors", "arthritis;headache", "unknown SLEDAI-2K descriptor"),
        ("sledai.csv", 0, "window_days", "14", "window_days 14"),
        ("treg.csv", 0, "percent", "140", "less than or equal to 100"),
        ("procedures.csv", 1, "cells_per_kg", "", "needs cells_per_kg"),
        ("procedures.csv", 0, "route", "oral", "Input should be"),
    ],
)
def test_bad_cell_is_located(
    dataset: Callable[..., Path], file: str, index: int, column: str, value: str, reason: str
) -> None:
    def spoil(rows: Rows) -> None:
        rows[file][index][column] = value

    report = load(dataset, spoil)
    rejected_file, line, rejected_column, message = next(
        (r.file, r.line, r.column, r.reason) for r in report.rejects if r.file == file
    )
    assert (rejected_file, line) == (file, index + 2)  # header is line 1
    assert reason in message
    if rejected_column is not None:
        assert rejected_column == column or column in message
    assert "must" not in str(report.rejects[0]) or str(report.rejects[0]).startswith(f"{file}:{index + 2}")


SCORE_FINDINGS = ("sledai-lab-findings", "sledai-total-differs", "sledai-undecided")  # about one score's inputs


def sledai_of(dataset: Callable[..., Path], edit: Edit) -> tuple[Any, LoadReport]:
    data, report = load_trial(dataset(edit))
    assert report.rejects == [], [str(r) for r in report.rejects]
    return data.sledai[0].record.score, report


def test_crf_total_is_the_score_and_lab_findings_stand_beside_it(dataset: Callable[..., Path]) -> None:
    def crf_total(rows: Rows) -> None:
        rows["sledai.csv"][0]["reported_total"] = "6"

    score, report = sledai_of(dataset, crf_total)
    # arthritis 4 + rash 2 on the CRF; proteinuria 4, low complement 2, thrombocytopenia 1 met by labs
    assert score.total == 6 and score.total_from_crf and score.computed_total == 13
    assert {d.key: d.points for d in score.descriptors}["proteinuria"] == 0
    (finding,) = [f for f in report.findings if f.kind == "sledai-lab-findings"]
    assert finding.line == 2 and "CRF total 6" in finding.message and "would give 13" in finding.message
    assert "proteinuria (4; L6)" in finding.message


def test_without_a_crf_total_lab_findings_count(dataset: Callable[..., Path]) -> None:
    score, report = sledai_of(dataset, lambda rows: None)
    assert score.total == 13 and not score.total_from_crf and score.final
    assert not [f for f in report.findings if f.kind in SCORE_FINDINGS]


def _low_wbc(rows: Rows, not_attributed: str) -> None:
    low = dict(rows["labs.csv"][8], result_id="L12", analyte="wbc", value="2.1", ref_low="3.5", ref_high="9.5")
    rows["labs.csv"].append(low)
    rows["sledai.csv"][0]["not_attributed"] = not_attributed
    rows["sledai.csv"][1]["not_attributed"] = ""


def test_drug_attributed_leukopenia_does_not_score(dataset: Callable[..., Path]) -> None:
    counted, _ = sledai_of(dataset, lambda rows: _low_wbc(rows, ""))
    assert counted.total == 14  # 13 + leukopenia 1, derived from L12
    score, report = sledai_of(dataset, lambda rows: _low_wbc(rows, "leukopenia:cyclophosphamide"))
    assert score.total == 13
    leukopenia = next(d for d in score.descriptors if d.key == "leukopenia")
    assert (leukopenia.source, leukopenia.points, leukopenia.evidence) == ("not-attributed", 0, ("L12",))
    assert "cyclophosphamide" in leukopenia.why
    assert not [f for f in report.findings if f.kind in SCORE_FINDINGS]


def test_not_attributed_and_due_to_lupus_at_once_is_refused(dataset: Callable[..., Path]) -> None:
    def both(rows: Rows) -> None:
        rows["sledai.csv"][0]["not_attributed"] = "rash:drug eruption"
        rows["sledai.csv"][1]["not_attributed"] = ""

    file, line, _, reason = only_reject(load(dataset, both))
    assert (file, line) == ("sledai.csv", 2) and "rash listed both" in reason


def test_unknown_not_attributed_descriptor_is_refused(dataset: Callable[..., Path]) -> None:
    def unknown(rows: Rows) -> None:
        rows["sledai.csv"][0]["not_attributed"] = "nosebleed:trauma"
        rows["sledai.csv"][1]["not_attributed"] = ""

    assert only_reject(load(dataset, unknown))[2:] == ("not_attributed", "unknown SLEDAI-2K descriptor(s): nosebleed")


def test_window_of_zero_days_is_refused_not_defaulted(dataset: Callable[..., Path]) -> None:
    def zero(rows: Rows) -> None:
        rows["sledai.csv"][0]["window_days"] = "0"

    file, line, column, reason = only_reject(load(dataset, zero))
    assert (file, line, column) == ("sledai.csv", 2, "window_days") and "window_days 0" in reason


def test_duplicate_business_key(dataset: Callable[..., Path]) -> None:
    def spoil(rows: Rows) -> None:
        rows["labs.csv"].append(dict(rows["labs.csv"][1]))

    file, line, column, reason = only_reject(load(dataset, spoil))
    assert (file, line, column) == ("labs.csv", 13, "result_id")
    assert "duplicate L2 (first at line 3)" in reason


def test_unknown_subject(dataset: Callable[..., Path]) -> None:
    def spoil(rows: Rows) -> None:
        rows["treg.csv"][0]["subject_id"] = "MSC-999"

    assert only_reject(load(dataset, spoil))[2:] == (
        "subject_id",
        "unknown subject MSC-999 (not in subjects.csv)",
    )


def test_rejected_subject_takes_its_rows_with_it(dataset: Callable[..., Path]) -> None:
    def spoil(rows: Rows) -> None:
        rows["subjects.csv"][1]["sex"] = "x"

    report = load(dataset, spoil)
    by_file = report.rejected
    assert by_file == {"subjects.csv": 1, "visits.csv": 1, "labs.csv": 1}
    cascade = [r for r in report.rejects if r.file != "subjects.csv"]
    assert all("subject MSC-002 was rejected (subjects.csv:3)" in r.reason for r in cascade)


def test_subject_without_mrn_or_pseudonym(dataset: Callable[..., Path]) -> None:
    def spoil(rows: Rows) -> None:
        rows["subjects.csv"][1]["pseudonym"] = ""

    report = load(dataset, spoil)
    assert any(r.file == "subjects.csv" and "mrn or a pseudonym" in r.reason for r in report.rejects)


def test_a_renamed_column_is_one_error_naming_both_columns(dataset: Callable[..., Path]) -> None:
    """Not one refusal per row that never says which column is missing: the file, line 1, both names."""

    def spoil(rows: Rows) -> None:
        for row in rows["labs.csv"]:
            row["result_value"] = row.pop("value")

    with pytest.raises(InputError) as caught:
        load(dataset, spoil)
    assert str(caught.value).startswith("labs.csv:1: missing column value; unknown column result_value")


def test_an_unknown_column_of_an_optional_file_stops_the_load_too(dataset: Callable[..., Path]) -> None:
    def spoil(rows: Rows) -> None:
        for row in rows["treg.csv"]:
            row["percnt"] = row.pop("percent")

    with pytest.raises(InputError, match=r"^treg\.csv:1: missing column percent; unknown column percnt"):
        load(dataset, spoil)


def test_missing_required_columns_are_listed_together(dataset: Callable[..., Path]) -> None:
    def spoil(rows: Rows) -> None:
        for row in rows["visits.csv"]:
            del row["visit_date"], row["visit_code"]

    with pytest.raises(InputError, match=r"^visits\.csv:1: missing columns visit_code, visit_date"):
        load(dataset, spoil)


def test_a_repeated_column_is_one_error(dataset: Callable[..., Path]) -> None:
    path = dataset()
    text = (path / "treg.csv").read_text(encoding="utf-8").splitlines()
    (path / "treg.csv").write_text(
        "\n".join([text[0] + ",lab", *(line + ",x" for line in text[1:])]) + "\n", encoding="utf-8"
    )
    with pytest.raises(InputError, match=r"^treg\.csv:1: repeated column lab"):
        load_trial(path)


def test_row_with_extra_cells(dataset: Callable[..., Path]) -> None:
    path = dataset()
    with (path / "treg.csv").open("a", encoding="utf-8") as handle:
        handle.write("T2,MSC-001,BL,2008-01-05T08:00:00+08:00,3.1,lab,surplus\n")
    report = load_trial(path)[1]
    assert [(r.file, r.line, r.reason) for r in report.rejects] == [
        ("treg.csv", 3, "row has 7 cells, the header has 6")
    ]


def test_without_subjects_file_nobody_is_enrolled_and_the_rows_are_refused(dataset: Callable[..., Path]) -> None:
    """Which files a command needs is its own (mappings/checks/inputs.yaml, tests/test_data_integrity.py); the
    loader reads what is there and refuses the rows of subjects it does not know."""
    path = dataset()
    (path / "subjects.csv").unlink()
    data, report = load_trial(path)
    assert data.subjects == [] and report.absent["subjects.csv"] == "missing"
    assert report.rejected["visits.csv"] == 3
    assert "unknown subject MSC-001 (not in subjects.csv)" in report.rejects[0].reason


def test_missing_trial_txt(dataset: Callable[..., Path]) -> None:
    path = dataset()
    (path / "trial.txt").unlink()
    with pytest.raises(InputError, match=r"trial\.txt"):
        load_trial(path)


def test_quarantine_keeps_every_rejected_row_once(dataset: Callable[..., Path], tmp_path: Path) -> None:
    def spoil(rows: Rows) -> None:
        rows["labs.csv"][0]["collected_at"] = "2008-01-05"
        rows["labs.csv"][0]["specimen"] = "saliva"  # two problems, one row
        rows["labs.csv"][2]["unit"] = "furlongs"

    report = load(dataset, spoil)
    assert report.rejected == {"labs.csv": 2}
    (path,) = write_quarantine(report.rejects, tmp_path / "q")
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["_line"] for row in rows] == ["2", "4"]
    assert rows[0]["result_id"] == "L1" and rows[0]["specimen"] == "saliva"
    assert "Input should be" in rows[0]["_reason"] and "UTC offset" in rows[0]["_reason"]
    assert rows[0]["_column"] == "specimen;collected_at"
    assert rows[1]["_column"] == "unit"


def test_protocol_findings(dataset: Callable[..., Path]) -> None:
    def late_infusion(rows: Rows) -> None:
        rows["procedures.csv"][1]["started_at"] = "2008-01-09T08:00:00+08:00"
        rows["procedures.csv"][1]["ended_at"] = "2008-01-09T09:00:00+08:00"

    report = load(dataset, late_infusion)
    deviations = [f for f in report.findings if f.kind == "protocol-deviation"]
    assert len(deviations) == 1 and "72.0 h after" in deviations[0].message and deviations[0].line == 3
    assert report.rejects == []  # a deviation is reported, not refused
    on_time = load(dataset)
    assert not [f for f in on_time.findings if f.kind == "protocol-deviation"]


def test_missed_and_out_of_window_visits(dataset: Callable[..., Path]) -> None:
    def shift(rows: Rows) -> None:
        rows["visits.csv"].append(dict(subject_id="MSC-001", visit_code="M03", visit_date="2008-04-20"))

    report = load(dataset, shift)
    kinds = {(f.kind, f.message.split(" (")[0]) for f in report.findings}
    assert ("missed-visit", "MSC-001 M02") in kinds
    assert any(f.kind == "out-of-window" and "M03" in f.message for f in report.findings)
