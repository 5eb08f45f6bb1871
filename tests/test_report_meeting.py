"""The report as shown at a meeting (issue 22, item 6): what it says about itself (generation time, data cut-off,
tool and mapping versions, open queries) on the page and in every PNG, and the adverse-event summary, counted on a
hand-built trial and marked preliminary when an adverse_events.csv row was refused or has an open query."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

import fhir_lupus
from fhir_lupus.cli import app
from fhir_lupus.errors import MappingError
from fhir_lupus.model import load_trial
from fhir_lupus.model._queries import query_id
from fhir_lupus.report import data_cut_off, load_report_definition, report_statistics, write_report
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import default_mappings_dir, load_pack

Rows = dict[str, list[dict[str, str]]]


def ae(event_id: str, subject: str, grade: int, onset: str, **cells: str) -> dict[str, str]:
    """One adverse_events.csv row: not serious, recovered, related to nothing, unless ``cells`` says otherwise."""
    row = dict(
        event_id=event_id,
        subject_id=subject,
        term=f"event {event_id}",
        meddra_code="",
        ctcae_term="",
        ctcae_code="",
        grade=str(grade),
        serious="no",
        seriousness_criteria="",
        outcome="recovered",
        onset_on=onset,
        resolved_on="",
        related_to="none",
        causality="",
        reporter="",
        recorded_on="",
    )
    return {**row, **cells}


# MSC-001 had cyclophosphamide on 2008-01-06 and the MSC infusion on 2008-01-07 (tests/conftest.py)
EVENTS = [
    ae("AE-1", "MSC-001", 3, "2008-01-10", resolved_on="2008-01-12"),  # grade 3, not related
    ae("AE-2", "MSC-001", 3, "2008-01-11", resolved_on="2008-01-14", related_to="msc_infusion", causality="possible"),
    ae("AE-3", "MSC-001", 1, "2008-01-08", outcome="recovering", related_to="both", causality="probable"),
    ae(
        "AE-4",
        "MSC-001",
        2,
        "2008-01-09",
        resolved_on="2008-01-20",
        related_to="cyclophosphamide",
        causality="unlikely",
    ),
    ae(  # serious; entered long after the cut-off, which recorded_on does not move
        "AE-5",
        "MSC-002",
        2,
        "2008-02-10",
        serious="yes",
        seriousness_criteria="hospitalization",
        resolved_on="2008-03-01",
        recorded_on="2008-06-01",
    ),
]
# fatal without a date of death: a query on its own row (death-date-inexact) and on MSC-001's (death-disagreement)
FATAL = ae("AE-6", "MSC-001", 5, "2008-02-20", serious="yes", seriousness_criteria="death", outcome="fatal")
AE_LINE = {row["event_id"]: index + 2 for index, row in enumerate([*EVENTS, FATAL])}
WHEN = datetime(2026, 12, 6, 9, 30, tzinfo=timezone(timedelta(hours=8)))  # 01:30 UTC


def with_events(*extra: dict[str, str]) -> Callable[[Rows], None]:
    def edit(rows: Rows) -> None:
        rows["adverse_events.csv"] = [*EVENTS, *extra]

    return edit


def by_key(counts: tuple[object, ...]) -> dict[str, int]:
    return {c.key: c.count for c in counts}  # type: ignore[attr-defined]


# -- the adverse-event summary ----------------------------------------------------------------------------------


def test_adverse_events_are_counted_by_grade_seriousness_relatedness_and_subject(dataset: Callable[..., Path]) -> None:
    data, report = load_trial(dataset(with_events()))
    assert report.rejects == [] and len(data.adverse_events) == 5
    summary = report_statistics(data, report=report).adverse_events
    assert summary.events == 5 and summary.subjects == 2
    assert by_key(summary.by_grade) == {"1": 1, "2": 2, "3": 2, "4": 0, "5": 0}
    assert by_key(summary.serious_by_grade) == {"1": 0, "2": 1, "3": 0, "4": 0, "5": 0}
    assert by_key(summary.by_seriousness) == {"yes": 1, "no": 4}
    # AE-3 (both) counts under each treatment; AE-4's "unlikely" is not related (related_causality)
    assert by_key(summary.by_relatedness) == {"msc_infusion": 2, "cyclophosphamide": 1, "not related": 3}
    assert by_key(summary.per_subject) == {"any": 2, "serious": 1, "severe": 1, "related": 1}
    assert summary.final and summary.caveat() is None


def test_the_labels_come_from_the_report_mappings(dataset: Callable[..., Path]) -> None:
    data, report = load_trial(dataset(with_events()))
    summary = report_statistics(data, report=report).adverse_events
    labels = yaml.safe_load((default_mappings_dir() / "report" / "report.yaml").read_text(encoding="utf-8"))
    words = labels["adverse_events"]
    assert [c.label for c in summary.by_grade] == [words["grades"][g] for g in (1, 2, 3, 4, 5)]
    assert [c.label for c in summary.by_seriousness] == [words["seriousness"]["yes"], words["seriousness"]["no"]]
    assert [c.label for c in summary.by_relatedness] == [*words["related"].values(), words["not_related"]]
    assert f">= {words['severe_grade']}" in summary.per_subject[2].label


def test_a_refused_adverse_event_row_makes_the_summary_preliminary(dataset: Callable[..., Path]) -> None:
    spoilt = ae("AE-7", "MSC-002", 3, "2008-02-12", serious="yes")  # serious without a criterion: refused
    data, report = load_trial(dataset(with_events(spoilt)))
    assert [r.file for r in report.rejects] == ["adverse_events.csv"]
    stats = report_statistics(data, report=report)
    summary = stats.adverse_events
    assert summary.events == 5 and not summary.final
    assert summary.incomplete == ("adverse_events.csv:7",)
    assert [line for line in stats.preliminary if "adverse-event summary" in line and "adverse_events.csv:7" in line]


def test_an_open_query_on_an_adverse_event_row_makes_the_summary_preliminary(dataset: Callable[..., Path]) -> None:
    data, report = load_trial(dataset(with_events(FATAL)))
    assert report.rejects == []
    summary = report_statistics(data, report=report).adverse_events
    assert summary.events == 6 and not summary.final
    assert summary.incomplete == (f"adverse_events.csv:{AE_LINE['AE-6']}",)  # the subjects.csv query is not its
    assert by_key(summary.per_subject)["severe"] == 1 and by_key(summary.by_grade)["5"] == 1


def test_without_adverse_events_csv_the_summary_is_unknown_not_zero(dataset: Callable[..., Path]) -> None:
    data, report = load_trial(dataset())
    summary = report_statistics(data, report=report).adverse_events
    assert summary.absent == "missing" and not summary.final
    assert "unknown, not zero" in (summary.caveat() or "")


def test_labels_must_name_every_key_of_the_terminology(tmp_path: Path) -> None:
    shutil.copytree(default_mappings_dir(), tmp_path, dirs_exist_ok=True)
    path = tmp_path / "report" / "report.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    del data["adverse_events"]["related"]["cyclophosphamide"]
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(MappingError, match=r"report\.yaml: adverse_events\.related .*cyclophosphamide"):
        load_report_definition(load_pack(tmp_path))


# -- the data cut-off --------------------------------------------------------------------------------------------


def test_the_cut_off_is_the_latest_date_of_the_trial(dataset: Callable[..., Path]) -> None:
    data, _ = load_trial(dataset(with_events()))
    cut = data_cut_off(data)
    # MSC-002 left on 2008-04-01, after every visit, lab and event; AE-5's recorded_on 2008-06-01 does not count
    assert cut is not None and (cut.day, cut.field) == (date(2008, 4, 1), "subjects.csv off_study_on")


def test_a_timestamp_counts_by_the_day_written_in_it(dataset: Callable[..., Path]) -> None:
    def late_lab(rows: Rows) -> None:
        with_events()(rows)
        rows["labs.csv"][9]["collected_at"] = "2008-04-20T23:30:00-05:00"  # 2008-04-21 in UTC

    data, _ = load_trial(dataset(late_lab))
    cut = data_cut_off(data)
    assert cut is not None and (cut.day, cut.field) == (date(2008, 4, 20), "labs.csv collected_at")


# -- the page and the PNGs -----------------------------------------------------------------------------------------


@pytest.fixture
def written(dataset: Callable[..., Path], tmp_path: Path):  # type: ignore[no-untyped-def]
    """The report of the hand-built trial with the fatal event, one of whose three queries the site closed."""
    data_dir = dataset(with_events(FATAL))
    _, report = load_trial(data_dir)
    closed = next(q for q in report.queries if q.kind == "death-disagreement")
    with (data_dir / "query_responses.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["query_id", "response", "confirmed_value", "responded_by", "responded_on"])
        writer.writerow([query_id(closed), "confirmed", closed.value, "WJ", "2008-05-01"])
    trial = TrialSource.directory(data_dir)
    return write_report(trial, tmp_path / "out" / "report.html", generated_at=WHEN), len(report.queries)


def test_the_metadata_values(written) -> None:  # type: ignore[no-untyped-def]
    result, raised = written
    meta = dict(result.metadata.items())
    assert meta == {
        "Generated (UTC)": "2026-12-06T01:30:00Z",
        "Data cut-off": "2008-04-01",
        "Tool version": f"fhir-lupus {fhir_lupus.__version__}",
        "Mapping version": load_pack().project.mapping_version,
        "Open queries": str(raised - 1),  # the confirmed one is closed
    }
    page = result.html.read_text(encoding="utf-8")
    for label, value in meta.items():
        assert f"<dt>{label}</dt><dd>{value}" in page
    assert "subjects.csv off_study_on" in page and "adverse_events.csv resolved_on" in page  # which fields count


def test_the_page_marks_the_summary_preliminary(written) -> None:  # type: ignore[no-untyped-def]
    result, _ = written
    page = result.html.read_text(encoding="utf-8")
    section = page[page.index('id="adverse-events"') : page.index('id="subjects"')]
    assert "Not final." in section and f"adverse_events.csv:{AE_LINE['AE-6']}" in section
    assert section.count('class="prelim"') == 5 + 2 + 3 + 4  # every count of the four tables
    assert "Related to the MSC infusion" in section and "Grade 5 (death)" in section


def test_every_png_carries_the_metadata(written) -> None:  # type: ignore[no-untyped-def]
    result, _ = written
    assert "cohort-adverse-events.png" in {f.name for f in result.figures}
    for figure in result.figures:
        with Image.open(figure) as image:
            text = dict(image.text)  # type: ignore[attr-defined]
        assert {k: text.get(k) for k, _ in result.metadata.items()} == dict(result.metadata.items()), figure.name
        assert text["Creation Time"] == "2026-12-06T01:30:00Z"


def test_the_generation_time_must_say_its_zone(dataset: Callable[..., Path], tmp_path: Path) -> None:
    data, _ = load_trial(dataset())
    with pytest.raises(ValueError, match="timezone-aware"):
        write_report(TrialSource.loaded(data), tmp_path / "r.html", generated_at=datetime(2026, 12, 6))
    assert not (tmp_path / "r.html").exists()


def test_the_default_generation_time_is_now_in_utc(dataset: Callable[..., Path], tmp_path: Path) -> None:
    data, _ = load_trial(dataset())
    before = datetime.now(UTC).replace(microsecond=0)
    result = write_report(TrialSource.loaded(data), tmp_path / "r.html")
    assert result.metadata is not None and result.metadata.generated_at.tzinfo == UTC
    assert before <= result.metadata.generated_at <= datetime.now(UTC)


def test_the_cli_prints_the_metadata_and_the_preliminary_summary(dataset: Callable[..., Path], tmp_path: Path) -> None:
    spoilt = ae("AE-7", "MSC-002", 3, "2008-02-12", serious="yes")  # refused: a serious event names a criterion
    data_dir = dataset(with_events(spoilt))
    out = tmp_path / "page.html"
    refused = CliRunner().invoke(app, ["report", str(data_dir), "-o", str(out)])
    assert refused.exit_code == 1 and not out.exists()
    run = CliRunner().invoke(app, ["report", str(data_dir), "-o", str(out), "--allow-rejects"])
    assert run.exit_code == 0, run.output
    said = " ".join(run.output.split())
    assert "Data cut-off 2008-04-01" in said and "Mapping version" in said and "Open queries" in said
    assert "preliminary adverse-event summary: preliminary: 1 adverse_events.csv row(s)" in said
    assert "adverse_events.csv:7" in said
