"""The CDISC CORE runner without the engine: where CORE is found, how its JSON report is read, and what the
runner does with the process (a stand-in core.py). tests/sdtm/ runs the real engine (`make test-sdtm`).

tests/data/core-report.json is a real report (engine 0.17.1), trimmed: synthetic DM/LB (no EX) with an
orphan USUBJID, a 9-character LBTESTCD, RFSTDTC after RFENDTC, and a VS file the schema refused.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from fhir_lupus.cli._exit import exit_code
from fhir_lupus.sdtm import (
    CoreExample,
    CoreReport,
    CoreSetup,
    CoreUnavailable,
    core_settings,
    read_core_report,
    run_core,
)

REPORT = Path(__file__).parent / "data" / "core-report.json"


def core_folder(path: Path) -> Path:
    (path / "engine").mkdir(parents=True)
    (path / "engine" / "core.py").write_text("", encoding="utf-8")
    (path / "cache").mkdir()
    (path / "cache" / "rules.pkl").write_bytes(b"")
    return path


def a_python(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(sys.executable)  # as in a venv: resolving it would leave the venv
    return path


@pytest.fixture
def nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No environment variable and no checkout (FHIR_LUPUS_ROOT names a folder without Makefile)."""
    monkeypatch.delenv("FHIR_LUPUS_CORE_DIR", raising=False)
    monkeypatch.delenv("FHIR_LUPUS_CORE_PYTHON", raising=False)
    monkeypatch.setenv("FHIR_LUPUS_ROOT", str(tmp_path / "not-a-checkout"))
    return tmp_path


@pytest.fixture
def checkout(nowhere: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout at work/repo with ../shared/cdisc-core beside it, as on the project's machine."""
    repo = nowhere / "work" / "repo"
    repo.mkdir(parents=True)
    (repo / "Makefile").write_text("", encoding="utf-8")
    (repo / "pyproject.toml").write_text("", encoding="utf-8")
    core_folder(nowhere / "work" / "shared" / "cdisc-core")
    monkeypatch.setenv("FHIR_LUPUS_ROOT", str(repo))
    return repo


class TestCoreSettings:
    def test_in_a_checkout_the_defaults_are_the_shared_folder_and_the_makefiles_venv(self, checkout: Path) -> None:
        python = a_python(checkout / ".venv-core" / "bin" / "python")
        setup = core_settings()
        assert setup == CoreSetup(core_dir=(checkout.parent / "shared" / "cdisc-core").resolve(), python=python)
        assert setup.engine == setup.core_dir / "engine" and setup.cache == setup.core_dir / "cache"
        assert setup.python.is_symlink()

    def test_a_checkout_without_the_venv_says_how_to_make_it(self, checkout: Path) -> None:
        with pytest.raises(CoreUnavailable) as caught:
            core_settings()
        message = str(caught.value)
        assert "make .venv-core" in message and str(checkout / ".venv-core" / "bin" / "python") in message
        assert "the checkout's default" in message and "CORE folder" not in message

    def test_environment_variables_beat_the_checkout(self, checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        a_python(checkout / ".venv-core" / "bin" / "python")
        folder = core_folder(checkout.parent / "elsewhere")
        python = a_python(checkout.parent / "py312" / "python")
        monkeypatch.setenv("FHIR_LUPUS_CORE_DIR", str(folder))
        monkeypatch.setenv("FHIR_LUPUS_CORE_PYTHON", str(python))
        assert core_settings() == CoreSetup(folder.resolve(), python)

    def test_options_beat_the_environment(
        self, checkout: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("FHIR_LUPUS_CORE_DIR", str(tmp_path / "missing"))
        monkeypatch.setenv("FHIR_LUPUS_CORE_PYTHON", str(tmp_path / "missing" / "python"))
        folder = core_folder(tmp_path / "given")
        python = a_python(tmp_path / "given-python")
        assert core_settings(folder, python) == CoreSetup(folder.resolve(), python)

    def test_relative_paths_are_made_absolute(self, nowhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        core_folder(nowhere / "core")
        a_python(nowhere / "python")
        monkeypatch.chdir(nowhere)
        setup = core_settings(Path("core"), Path("python"))
        assert setup.core_dir == (nowhere / "core").resolve() and setup.python == nowhere / "python"

    def test_outside_a_checkout_nothing_is_guessed(self, nowhere: Path) -> None:
        with pytest.raises(CoreUnavailable) as caught:
            core_settings()
        message = str(caught.value)
        for named in ("--core-dir", "FHIR_LUPUS_CORE_DIR", "--core-python", "FHIR_LUPUS_CORE_PYTHON"):
            assert named in message
        assert exit_code(caught.value) == 2  # configuration

    def test_a_folder_without_the_engine_or_the_cache_is_named(
        self, nowhere: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        python = a_python(nowhere / "python")
        (nowhere / "core").mkdir()
        with pytest.raises(CoreUnavailable, match=r"has no engine/core\.py or cache/rules\.pkl: .*--core-dir"):
            core_settings(nowhere / "core", python)
        monkeypatch.setenv("FHIR_LUPUS_CORE_DIR", str(nowhere / "core"))
        with pytest.raises(CoreUnavailable, match=r"\(FHIR_LUPUS_CORE_DIR\) has no"):
            core_settings(core_python=python)


@pytest.fixture(scope="module")
def report() -> CoreReport:
    return read_core_report(REPORT)


class TestTheReport:
    def test_datasets_with_their_record_counts_and_the_nameless_file(self, report: CoreReport) -> None:
        assert report.datasets == {"DM": 3, "LB": 4} and report.unnamed == 1
        assert (report.engine_version, report.standard, report.ct_version) == (
            "0.17.1",
            "SDTMIG V3.4",
            "sdtmct-2015-12-18",
        )
        assert report.define_xml_version is None and report.path == REPORT

    def test_issues_are_folded_per_rule_and_dataset(self, report: CoreReport) -> None:
        assert [(i.rule, i.dataset, i.count) for i in report.issues] == [
            ("CORE-000201", "LB", 1),
            ("CORE-000220", "LB", 1),
            ("CORE-000334", "DM", 1),
            ("CORE-000334", "LB", 1),
            ("CORE-000701", "LB", 4),
            ("CORE-000711", "DM", 1),
            ("CORE-000739", "STUDY", 3),  # the engine repeats a study-level issue: kept as it says
        ]
        assert report.rules_with_issues == {i.rule for i in report.issues}

    def test_a_few_examples_with_the_flagged_values(self, report: CoreReport) -> None:
        epoch = next(i for i in report.issues if i.rule == "CORE-000701")
        assert epoch.variables == ("EPOCH",) and epoch.message.startswith("EPOCH is missing")
        assert [(e.usubjid, e.row, e.seq) for e in epoch.examples] == [
            ("STUDY1-001", 1, 1),
            ("STUDY1-002", 2, 1),
            ("STUDY1-009", 3, 1),
        ]
        assert epoch.examples[0].values == {"EPOCH": "Not in dataset"}
        dates = next(i for i in report.issues if i.rule == "CORE-000711")
        assert dates.examples == (
            CoreExample("STUDY1-003", 3, None, {"RFSTDTC": "2009-05-01", "RFENDTC": "2009-01-01"}),
        )

    def test_a_dataset_level_issue_has_no_record(self, report: CoreReport) -> None:
        expected = next(i for i in report.issues if (i.rule, i.dataset) == ("CORE-000334", "DM"))
        assert expected.variables == ("$dataset_variables", "$expected_variables")
        (example,) = expected.examples
        assert (example.usubjid, example.row, example.seq) == ("", None, None)
        assert "ARMNRS" in (example.values["$expected_variables"] or "")

    def test_execution_errors_are_kept_apart_from_issues(self, report: CoreReport) -> None:
        assert report.rules_not_executed == {"CORE-000334", "CORE-000867", "CORE-000929", "CORE-001081"}
        by_place = {(e.rule, e.dataset) for e in report.execution_errors}
        assert ("CORE-000334", "") in by_place and ("CORE-000929", "DM") in by_place
        define = [e for e in report.execution_errors if e.rule == "CORE-000929" and e.dataset == "DM"]
        assert define[0].message.startswith("rule evaluation error") and "define.xml" in define[0].detail
        assert not any(i.message.startswith("rule evaluation error") for i in report.issues)

    def test_rule_outcomes_and_the_skipped_rules(self, report: CoreReport) -> None:
        assert report.skipped == ("CORE-000001", "CORE-000002", "CORE-000003")
        assert report.rule_status["CORE-000201"] == "ISSUE REPORTED"
        assert report.rule_status["CORE-000006"] == "SUCCESS"
        assert report.rule_status["CORE-000334"] == "EXECUTION ERROR"  # issues in DM and LB, failed on VS

    def test_a_failed_rule_without_a_detail_row_is_still_an_execution_error(self) -> None:
        document: dict[str, Any] = json.loads(REPORT.read_text(encoding="utf-8"))
        document["Rules_Report"].append({"core_id": "CORE-009999", "message": "made up", "status": "EXECUTION ERROR"})
        parsed = CoreReport.from_json(document)
        assert "CORE-009999" in parsed.rules_not_executed and parsed.path is None

    def test_problems_name_every_missing_or_miscounted_dataset(self, report: CoreReport) -> None:
        assert report.problems({"DM": 3, "LB": 4, "VS": 2}) == [
            "VS: not in the report, 2 record(s) written",
            "1 dataset file(s) the engine read as nameless and empty (schema refused?)",
        ]
        assert report.problems({"dm": 2, "lb": 4})[0] == "DM: 3 record(s) in the report, 2 written"
        clean = CoreReport.from_json({**json.loads(REPORT.read_text(encoding="utf-8")), "Dataset_Details": []})
        assert clean.problems({}) == [] and clean.problems({"DM": 0}) == ["DM: not in the report, 0 record(s) written"]

    def test_the_summary_line(self, report: CoreReport) -> None:
        assert report.summary == (
            "CDISC CORE 0.17.1, SDTMIG V3.4 sdtmct-2015-12-18: 2 dataset(s), 12 issue(s) from 6 rule(s), "
            "4 rule(s) not executed, 3 not applicable"
        )

    @pytest.mark.parametrize("text", ["{truncated", "[]", '{"Issue_Details": []}'])
    def test_a_file_that_is_not_a_report_is_refused(self, tmp_path: Path, text: str) -> None:
        (tmp_path / "r.json").write_text(text, encoding="utf-8")
        with pytest.raises(CoreUnavailable, match=r"r\.json"):
            read_core_report(tmp_path / "r.json")


# -- the process: a stand-in core.py that records how it was run and acts as FAKE_CORE says ------------------

FAKE_ENGINE = """
import json, os, pathlib, shutil, sys, time
args = sys.argv[1:]
out = pathlib.Path(args[args.index("-o") + 1])
mode = os.environ["FAKE_CORE"]
seen = {"argv": args, "cwd": os.getcwd(), "pythonpath": os.environ.get("PYTHONPATH")}
(out.parent / "seen.json").write_text(json.dumps(seen))
if mode == "report":
    shutil.copy(os.environ["FAKE_REPORT"], str(out) + ".json")
elif mode == "fail":
    print("Traceback (most recent call last):", file=sys.stderr)
    print("ModuleNotFoundError: No module named 'cdisc_rules_engine'", file=sys.stderr)
    sys.exit(1)
elif mode == "sleep":
    time.sleep(30)
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CoreSetup:
    folder = core_folder(tmp_path / "core")
    (folder / "engine" / "core.py").write_text(FAKE_ENGINE, encoding="utf-8")
    monkeypatch.setenv("FAKE_CORE", "report")
    monkeypatch.setenv("FAKE_REPORT", str(REPORT))
    monkeypatch.setenv("PYTHONPATH", "/somewhere/with/python311/code")
    return CoreSetup(folder, Path(sys.executable))


@pytest.fixture
def datasets(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / "data" / "dm.json", tmp_path / "data" / "lb.json"]
    for path in paths:
        path.parent.mkdir(exist_ok=True)
        path.write_text("{}", encoding="utf-8")
    return paths


def seen(out: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((out / "seen.json").read_text(encoding="utf-8"))
    return result


class TestRunCore:
    def test_the_command_the_engine_gets_and_the_report_it_wrote(
        self, fake: CoreSetup, datasets: list[Path], tmp_path: Path
    ) -> None:
        out = tmp_path / "out"
        define = datasets[0].with_name("define.xml")
        define.write_text("<ODM/>", encoding="utf-8")
        result = run_core(fake, datasets, out, define)
        assert result == CoreReport.from_json(json.loads(REPORT.read_text(encoding="utf-8")), out / "core-report.json")
        run = seen(out)
        assert run["cwd"] == str(fake.engine) and run["pythonpath"] is None
        assert run["argv"] == [  # no -ct beside define.xml: CORE takes the CT package from its def:Standards
            "validate",
            *("-ca", str(fake.cache), "-s", "sdtmig", "-v", "3-4"),
            *("-dp", str(datasets[0]), "-dp", str(datasets[1]), "-dxp", str(define)),
            *("-of", "JSON", "-o", str(out / "core-report"), "-ps", "1", "-p", "disabled"),
        ]

    def test_relative_dataset_paths_reach_the_engine_absolute(
        self, fake: CoreSetup, datasets: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        run_core(fake, [Path("data/dm.json")], Path("out"))
        assert seen(tmp_path / "out")["argv"][9:11] == ["-dp", str(datasets[0])]
        assert "-dxp" not in seen(tmp_path / "out")["argv"]
        assert seen(tmp_path / "out")["argv"][7:9] == ["-ct", "sdtmct-2015-12-18"]  # without define.xml: named

    def test_a_failed_run_says_what_the_engine_said_and_no_old_report_survives(
        self, fake: CoreSetup, datasets: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        out = tmp_path / "out"
        out.mkdir()
        (out / "core-report.json").write_text(REPORT.read_text(encoding="utf-8"), encoding="utf-8")
        monkeypatch.setenv("FAKE_CORE", "fail")
        with pytest.raises(
            CoreUnavailable, match=r"(?s)exit 1, no report.*No module named 'cdisc_rules_engine'"
        ) as caught:
            run_core(fake, datasets, out)
        assert not (out / "core-report.json").exists() and ".venv-core" in str(caught.value)

    def test_a_run_that_writes_no_report_fails(
        self, fake: CoreSetup, datasets: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("FAKE_CORE", "silent")
        with pytest.raises(CoreUnavailable, match=r"exit 0, no report"):
            run_core(fake, datasets, tmp_path / "out")

    def test_a_run_past_its_timeout_fails(
        self, fake: CoreSetup, datasets: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("FAKE_CORE", "sleep")
        with pytest.raises(CoreUnavailable, match=r"did not finish within 1 s"):
            run_core(fake, datasets, tmp_path / "out", timeout=1.0)

    def test_a_python_that_cannot_start(self, fake: CoreSetup, datasets: list[Path], tmp_path: Path) -> None:
        with pytest.raises(CoreUnavailable, match="could not start"):
            run_core(CoreSetup(fake.core_dir, tmp_path / "no-python"), datasets, tmp_path / "out")

    def test_inputs_are_checked_before_the_engine_runs(
        self, fake: CoreSetup, datasets: list[Path], tmp_path: Path
    ) -> None:
        with pytest.raises(FileNotFoundError, match=r"gone\.json"):
            run_core(fake, [*datasets, tmp_path / "gone.json"], tmp_path / "out")
        with pytest.raises(FileNotFoundError, match=r"define\.xml"):
            run_core(fake, datasets, tmp_path / "out", tmp_path / "define.xml")
        with pytest.raises(ValueError, match="at least one dataset"):
            run_core(fake, [], tmp_path / "out")
        assert not (tmp_path / "out").exists()
