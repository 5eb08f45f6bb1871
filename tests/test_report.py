"""The investigator report (issue 11): cohort statistics and the responder engine on hand-built readings
(boundaries, censoring, missing data), the definitions file, series extraction and the written page."""

from __future__ import annotations

import base64
import re
import shutil
from datetime import UTC, datetime
from html import escape
from pathlib import Path

import pytest
import yaml
from support import example_subset
from typer.testing import CliRunner

from fhir_lupus import load_trial
from fhir_lupus.cli import app
from fhir_lupus.errors import MappingError
from fhir_lupus.report import load_report_definition, write_report
from fhir_lupus.report._definitions import ReportDefinition, ResponseDefinition
from fhir_lupus.report._series import collect_series
from fhir_lupus.report._stats import (
    NOT_EVALUABLE,
    Interval,
    Reading,
    classify,
    percent_change,
    quartiles,
    summarise_changes,
    tally_responses,
)
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import LabCatalogue, default_mappings_dir, load_pack

WHEN = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)  # the generation time every figure carries: the same for both runs


@pytest.fixture(scope="module")
def kdigo() -> ResponseDefinition:
    definition = load_report_definition()
    return next(r for r in definition.responses if r.key == "kdigo_2024_renal")


def renal(protein: tuple[Reading | None, Reading | None], egfr: tuple[Reading | None, Reading | None], month: int = 6):
    """Readings of one subject: (baseline, month) for proteinuria and eGFR; None leaves the visit out."""
    out: dict[str, dict[int, Reading]] = {"proteinuria": {}, "egfr": {}}
    for key, (base, there) in (("proteinuria", protein), ("egfr", egfr)):
        if base is not None:
            out[key][0] = base
        if there is not None:
            out[key][month] = there
    return out


# -- intervals --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reading", "op", "limit", "expected"),
    [
        (Reading(0.5), "<", 0.5, False),  # exactly the limit is not below it
        (Reading(0.49), "<", 0.5, True),
        (Reading(0.5), "<=", 0.5, True),
        (Reading(0.5, "<"), "<", 0.5, True),  # "<0.5" lies wholly below 0.5
        (Reading(0.5, "<="), "<", 0.5, None),  # "<=0.5" may be 0.5
        (Reading(0.8, "<"), "<", 0.5, None),  # "<0.8" may be on either side
        (Reading(0.3, "<"), ">=", 0.5, False),
        (Reading(10, ">"), ">", 10, True),
        (Reading(10, ">="), ">", 10, None),
        (Reading(10, ">="), ">=", 10, True),
        (Reading(3, ">"), "<", 3, False),
    ],
)
def test_interval_decides_only_what_the_reading_proves(reading: Reading, op: str, limit: float, expected: bool | None):
    assert reading.interval().holds(op, limit) is expected


def test_percent_change_of_a_censored_value_is_an_interval():
    change = percent_change(Reading(2.0), Reading(0.5, "<"))
    assert change is not None
    assert change.high == pytest.approx(-75.0) and change.high_open and change.low == float("-inf")
    assert change.holds("<=", -50) is True
    assert percent_change(Reading(10, "<"), Reading(5)) is None  # no change from an unknown baseline
    assert percent_change(Reading(0.0), Reading(5)) is None
    assert Interval(1, 1).holds(">=", 1) is True


# -- responder engine: KDIGO 2024 renal response -------------------------------------------------------------


def test_complete_response(kdigo: ResponseDefinition):
    result = classify(kdigo, "S", renal((Reading(3.0), Reading(0.4)), (Reading(100), Reading(90))), 6)
    assert result.category == "complete"


def test_exactly_half_a_gram_is_not_complete_but_partial(kdigo: ResponseDefinition):
    # 0.5 g is not < 0.5 g; from 3.0 g it is an 83 % fall to < 3 g: partial
    result = classify(kdigo, "S", renal((Reading(3.0), Reading(0.5)), (Reading(100), Reading(100))), 6)
    assert result.category == "partial"


def test_egfr_exactly_15_percent_down_is_stable(kdigo: ResponseDefinition):
    stable = classify(kdigo, "S", renal((Reading(3.0), Reading(0.2)), (Reading(100), Reading(85))), 6)
    assert stable.category == "complete"
    fallen = classify(kdigo, "S", renal((Reading(3.0), Reading(0.2)), (Reading(100), Reading(84.9))), 6)
    assert fallen.category == "none"  # not stable: neither complete nor partial


def test_partial_needs_half_and_below_three(kdigo: ResponseDefinition):
    half = classify(kdigo, "S", renal((Reading(4.0), Reading(2.0)), (Reading(100), Reading(100))), 6)
    assert half.category == "partial"  # exactly -50 %
    short = classify(kdigo, "S", renal((Reading(4.0), Reading(2.01)), (Reading(100), Reading(100))), 6)
    assert short.category == "none"
    high = classify(kdigo, "S", renal((Reading(8.0), Reading(3.0)), (Reading(100), Reading(100))), 6)
    assert high.category == "none"  # -62.5 % but not below 3 g


def test_missing_baseline_or_month_is_not_evaluable(kdigo: ResponseDefinition):
    no_base = classify(kdigo, "S", renal((Reading(3.0), Reading(0.2)), (None, Reading(90))), 6)
    assert no_base.category == NOT_EVALUABLE and "no egfr at baseline" in no_base.reason
    no_visit = classify(kdigo, "S", renal((Reading(3.0), None), (Reading(100), Reading(90))), 6)
    assert no_visit.category == NOT_EVALUABLE and "no proteinuria at month 6" in no_visit.reason


def test_a_missing_value_that_cannot_change_the_answer_does_not_block(kdigo: ResponseDefinition):
    # eGFR fell 30 %: no category can hold whatever the proteinuria was, so the subject is a non-responder
    result = classify(kdigo, "S", renal((Reading(3.0), None), (Reading(100), Reading(70))), 6)
    assert result.category == "none"


def test_censored_values(kdigo: ResponseDefinition):
    below = classify(kdigo, "S", renal((Reading(3.0), Reading(0.1, "<")), (Reading(100), Reading(100))), 6)
    assert below.category == "complete"  # "<0.1" proves < 0.5
    straddles = classify(kdigo, "S", renal((Reading(3.0), Reading(0.8, "<")), (Reading(100), Reading(100))), 6)
    assert straddles.category == NOT_EVALUABLE  # "<0.8" may or may not be < 0.5
    censored_base = classify(kdigo, "S", renal((Reading(3.0), Reading(0.2)), (Reading(60, ">"), Reading(90))), 6)
    assert censored_base.category == NOT_EVALUABLE


def test_tally_counts_not_evaluable(kdigo: ResponseDefinition):
    cohort = {
        "A": renal((Reading(3.0), Reading(0.2)), (Reading(100), Reading(100))),
        "B": renal((Reading(3.0), None), (Reading(100), Reading(100))),
        "C": renal((Reading(3.0), Reading(2.9)), (Reading(100), Reading(100))),
    }
    six = next(t for t in tally_responses(kdigo, cohort) if t.month == 6)
    assert (six.count("complete"), six.count("partial"), six.count("none"), six.count(NOT_EVALUABLE)) == (1, 0, 1, 1)
    assert six.evaluable == 2
    twelve = next(t for t in tally_responses(kdigo, cohort) if t.month == 12)
    assert twelve.count(NOT_EVALUABLE) == 3  # nobody has a month-12 value


# -- change from baseline ---------------------------------------------------------------------------------------


def test_quartiles_inclusive_method():
    assert quartiles([1.0, 2.0, 3.0, 4.0]) == (1.75, 3.25)
    assert quartiles([5.0]) == (5.0, 5.0)
    assert quartiles([]) is None


def test_change_from_baseline_counts_what_is_left_out():
    readings = {
        "A": {0: Reading(10), 3: Reading(4)},  # -6
        "B": {0: Reading(10), 3: Reading(8)},  # -2
        "C": {0: Reading(10), 3: Reading(11)},  # +1
        "D": {0: Reading(10), 3: Reading(10)},  # 0
        "E": {3: Reading(1)},  # no baseline
        "F": {0: Reading(10)},  # no month 3
        "G": {0: Reading(10), 3: Reading(10, "<")},  # censored: not a number
    }
    [three, six] = summarise_changes(readings, [3, 6])
    assert three.changes == (-6.0, -2.0, 1.0, 0.0) and three.n == 4
    assert three.median == -1.0
    assert three.iqr == (-3.0, 0.25)
    assert (three.missing_baseline, three.missing_visit, three.censored) == (("E",), ("F",), ("G",))
    assert six.n == 0 and six.median is None and six.iqr is None
    assert len(six.missing_visit) == 6


# -- definitions -------------------------------------------------------------------------------------------------


def test_definitions_name_their_source():
    definition = load_report_definition()
    assert {s.key for s in definition.series} >= {"sledai", "anti_dsdna", "c3", "c4", "proteinuria", "egfr"}
    assert definition.summary_months == (3, 6, 12, 24)
    for response in definition.responses:
        assert "KDIGO" in response.source and response.verified


def test_a_criterion_on_an_unknown_series_is_refused(tmp_path: Path):
    data = yaml.safe_load((default_mappings_dir() / "report" / "report.yaml").read_text(encoding="utf-8"))
    data["responses"][0]["categories"][0]["all_of"][0]["series"] = "upcr"
    shutil.copytree(default_mappings_dir(), tmp_path, dirs_exist_ok=True)  # a whole pack, with this report.yaml
    (tmp_path / "report" / "report.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(MappingError, match=r"report\.yaml.*unknown series 'upcr'"):
        load_report_definition(load_pack(tmp_path))


# -- series and the page -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_subjects(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return example_subset(tmp_path_factory.mktemp("report") / "data", 2, first=1)  # MSC-002 has censored dsDNA


def test_values_that_cannot_be_converted_are_set_aside(two_subjects: Path):
    data, _ = load_trial(two_subjects)
    definition = load_report_definition()
    series = [s.model_copy(update={"unit": "mL/min"}) if s.key == "c3" else s for s in definition.series]
    odd = ReportDefinition.model_validate({**definition.model_dump(), "series": [s.model_dump() for s in series]})
    subjects, set_aside = collect_series(data, odd, LabCatalogue(load_pack()))
    c3_rows = sum(1 for lab in data.labs if lab.record.lab.analyte == "c3")
    assert len(set_aside) == c3_rows > 0
    assert all(a.series == "c3" and "cannot convert" in a.reason and a.where.startswith("labs.csv:") for a in set_aside)
    assert all("c3" not in s.points for s in subjects)
    censored = [p for s in subjects for p in s.points["anti_dsdna"] if p.reading.censored]
    assert censored and all(p.reading.comparator == "<" and p.reported.startswith("<") for p in censored)


def test_the_page_embeds_every_figure_written(two_subjects: Path, tmp_path: Path):
    data, _ = load_trial(two_subjects)
    result = write_report(TrialSource.loaded(data), tmp_path / "r.html", generated_at=WHEN)
    assert result.subjects == 2 and len(result.figures) == 2 + 1 + 1 + 1  # two subjects, change, response, AEs
    assert all(f.parent == tmp_path / "r_figures" for f in result.figures)
    page = result.html.read_text(encoding="utf-8")
    embedded = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert sorted(base64.b64decode(e) for e in embedded) == sorted(f.read_bytes() for f in result.figures)
    assert not re.search(r"(src|href)=\"(https?:|//)", page)  # nothing to fetch
    assert result.censored and all(f"{escape(p.reported)}</td>" in page and p.where in page for p in result.censored)
    assert "KDIGO 2024" in page and "mappings/report/report.yaml" in page
    again = write_report(
        TrialSource.loaded(data), tmp_path / "again.html", figures_dir=tmp_path / "figs", generated_at=WHEN
    )
    assert [p.read_bytes() for p in again.figures] == [p.read_bytes() for p in result.figures]  # deterministic
    assert b"Software" not in result.figures[0].read_bytes()[:200]


def test_cli_report_prints_the_page_path(two_subjects: Path, tmp_path: Path):
    out = tmp_path / "page.html"
    run = CliRunner().invoke(app, ["report", str(two_subjects), "-o", str(out), "--figures", str(tmp_path / "f")])
    assert run.exit_code == 0, run.output
    assert run.stdout.strip().splitlines()[-1] == str(out)
    assert len(list((tmp_path / "f").glob("*.png"))) == 5
