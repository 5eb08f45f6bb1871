"""Pulled rows go through the trial's checks before they count for a flare signal (fhir_lupus/signals/_inputs.py).

A hospital's table holds what its systems wrote: an impossible value, an implausible one, a date in the future or
after the subject left the study. None of them raises a signal; each is named (table, line, Observation) with the
check's reason; and a signal judged on a series that lost such a row is provisional, published as preliminary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from fhir_lupus.cli import app
from fhir_lupus.pull import PulledLab, write_rows
from fhir_lupus.signals import NotCounted, Signal, flare_signals, load_flare_definitions, signal_resource
from fhir_lupus.source import TrialSource
from tests.test_signals import LOW_C, SETTINGS, ids, lab


def _checked(rows: list[PulledLab], trial: TrialSource | None = None) -> tuple[list[Signal], list[NotCounted]]:
    not_counted: list[NotCounted] = []
    found = flare_signals(rows, trial=trial, settings=SETTINGS, table="labs.csv", not_counted=not_counted)
    return found, not_counted


def test_an_impossible_value_raises_nothing_and_is_named() -> None:
    rows = [lab("c3", "0.95", "g/L", 1, low="0.9"), lab("c3", "-0.85", "g/L", 2, low="0.9")]
    found, not_counted = _checked(rows)
    assert found == []
    [item] = not_counted
    assert (item.table, item.line, item.column, item.verdict) == ("labs.csv", 3, "value", "refused")
    assert (item.observation_id, item.result_id, item.check) == (
        rows[1].observation_id,
        rows[1].result_id,
        "lab-impossible",
    )
    assert f"labs.csv:3 (Observation/{rows[1].observation_id})" in str(item) and "impossible" in str(item)


def test_an_implausible_value_is_queried_and_raises_nothing() -> None:
    rows = [lab("c3", "0.95", "g/L", 1, low="0.9"), lab("c3", "0.01", "g/L", 2, low="0.9")]
    found, not_counted = _checked(rows)
    assert found == []
    assert [(i.line, i.verdict, i.check) for i in not_counted] == [(3, "queried", "lab-implausible")]


def test_an_impossible_reference_limit_is_blamed_on_its_column() -> None:
    rows = [lab("c3", "0.95", "g/L", 1, low="0.9"), lab("c3", "0.85", "g/L", 2, low="-0.9")]
    found, not_counted = _checked(rows)
    assert found == []
    assert [(i.line, i.column) for i in not_counted] == [(3, "ref_low")]


def test_a_result_dated_in_the_future_raises_nothing() -> None:
    future = dataclasses.replace(lab("c3", "0.85", "g/L", 2, low="0.9"), collected_at="2999-01-05T08:00:00+08:00")
    found, not_counted = _checked([lab("c3", "0.95", "g/L", 1, low="0.9"), future])
    assert found == []
    assert [(i.line, i.column, i.check) for i in not_counted] == [(3, "collected_at", "future-date")]


def test_a_result_after_the_subject_left_raises_nothing(dataset: Callable[..., Path]) -> None:
    # MSC-002 left the study on 2008-04-01 (the base dataset): a result of May is after the end
    trial = TrialSource.directory(dataset(), settings=SETTINGS)
    before, after = (lab("c3", v, "g/L", m, subject="MSC-002", low="0.9") for v, m in (("0.95", 3), ("0.5", 5)))
    found, not_counted = _checked([before, after], trial=trial)
    assert ids(found, LOW_C) == []
    assert [(i.result_id, i.check) for i in not_counted] == [(after.result_id, "after-end")]
    assert "after the end of participation" in not_counted[0].reason
    # without the trial the end is unknown: the same row counts
    assert ids(flare_signals([before, after], settings=SETTINGS), LOW_C) == [after.result_id]


def test_a_signal_judged_past_a_doubtful_row_is_provisional() -> None:
    rows = [
        lab("c3", "0.95", "g/L", 1, low="0.9"),
        lab("c3", "-0.2", "g/L", 2, low="0.9"),  # refused: the previous value of month 3 may be missing
        lab("c3", "0.85", "g/L", 3, low="0.9"),
    ]
    [signal] = _checked(rows)[0]
    assert signal.result_id == rows[2].result_id and signal.compared_result_id == rows[0].result_id
    assert "labs.csv:3" in signal.provisional, signal
    definitions = load_flare_definitions(SETTINGS.pack)
    resource = signal_resource(signal, SETTINGS.pack, definitions, study="NCT00698191")
    assert resource["status"] == definitions.detected_issue.provisional_status
    # a doubtful row after the signal, or of another analyte, leaves it final
    later = [*rows[::2], lab("c3", "-1", "g/L", 4, low="0.9"), lab("c4", "-1", "g/L", 1, low="0.1")]
    [signal] = _checked(later)[0]
    assert signal.provisional == ""
    resource = signal_resource(signal, SETTINGS.pack, definitions, study="NCT00698191")
    assert resource["status"] == definitions.detected_issue.status


def test_a_refused_trial_row_makes_a_later_signal_provisional(dataset: Callable[..., Path]) -> None:
    def edit(rows: dict[str, list[dict[str, str]]]) -> None:
        rows["visits.csv"].append(dict(subject_id="MSC-001", visit_code="M02", visit_date="2008-03-05"))
        c3 = {**rows["labs.csv"][9], "visit_code": "M02", "collected_at": "2008-03-05T08:00:00+08:00"}
        rows["labs.csv"].append({**c3, "result_id": "L20", "value": "-0.5"})  # refused
        rows["labs.csv"].append({**c3, "result_id": "L21", "value": "0.5", "collected_at": "2008-03-06T08:00:00+08:00"})

    trial = TrialSource.directory(dataset(edit), settings=SETTINGS)
    [signal] = [s for s in flare_signals(trial=trial, settings=SETTINGS) if s.definition_id == LOW_C]
    assert signal.result_id == "L21" and "labs.csv:" in signal.provisional


def test_the_command_names_each_row_it_did_not_count(tmp_path: Path) -> None:
    rows = [lab("c3", "0.95", "g/L", 1, low="0.9"), lab("c3", "-0.85", "g/L", 2, low="0.9")]
    table = write_rows(rows, tmp_path / "pulled.csv", PulledLab)
    result = CliRunner().invoke(app, ["signals", "--table", str(table)])
    assert result.exit_code == 0, result.output
    assert f"not counted: {table}:3 (Observation/{rows[1].observation_id}): column value refused:" in result.output
    assert "0 signal(s); 1 pulled row(s) not counted" in result.output
