"""Where the mappings come from (FHIR_LUPUS_MAPPINGS, the checkout, the wheel's copy), what needs a checkout, and
what the install holds: plotting only in the report extra, every dependency bounded."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import os
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from support import REPO
from typer.testing import CliRunner

from fhir_lupus import devserver
from fhir_lupus.cli import app
from fhir_lupus.errors import ExtraMissing, MappingError
from fhir_lupus.report import require_plotting
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import _locate, default_mappings_dir

runner = CliRunner()


@pytest.fixture
def installed_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The package as a wheel installs it: site-packages/fhir_lupus/_mappings, no pyproject.toml or mappings/."""
    site = tmp_path / "site-packages"
    (site / "fhir_lupus" / "_mappings").mkdir(parents=True)
    monkeypatch.delenv("FHIR_LUPUS_MAPPINGS", raising=False)
    monkeypatch.setattr(_locate, "__file__", str(site / "fhir_lupus" / "terminology" / "_locate.py"))
    monkeypatch.setattr(importlib.resources, "files", lambda package: site / package)
    return site


def test_from_a_checkout_the_top_level_mappings_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FHIR_LUPUS_MAPPINGS", raising=False)
    assert default_mappings_dir() == REPO / "mappings"


def test_without_a_checkout_the_packaged_copy_is_used(installed_layout: Path) -> None:
    assert _locate.checkout_mappings_dir() is None
    assert default_mappings_dir() == installed_layout / "fhir_lupus" / "_mappings"


def test_a_mappings_dir_beside_site_packages_is_not_taken_for_a_checkout(installed_layout: Path) -> None:
    (installed_layout / "mappings").mkdir()  # some other distribution's top-level "mappings": no pyproject.toml
    assert default_mappings_dir() == installed_layout / "fhir_lupus" / "_mappings"


def test_the_environment_wins(installed_layout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_LUPUS_MAPPINGS", str(tmp_path / "own"))
    assert default_mappings_dir() == tmp_path / "own"


def test_a_change_of_the_environment_within_one_process_is_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loaders cache by the directory they resolved, not by "the default": a process that reads the checkout's
    pack and then sets FHIR_LUPUS_MAPPINGS to its own must get its own (a stale pack once mixed another run's
    identifier systems into the demo's push)."""
    from support import isolated_mappings_copy

    from fhir_lupus.bundle import load_matching_rules
    from fhir_lupus.terminology import load_pack

    monkeypatch.delenv("FHIR_LUPUS_MAPPINGS", raising=False)
    checkout = load_pack()
    rules = load_matching_rules()
    own = isolated_mappings_copy(tmp_path / "own", "t/own")
    monkeypatch.setenv("FHIR_LUPUS_MAPPINGS", str(own))
    assert load_pack().root == own.resolve() != checkout.root
    assert load_pack().identifier_system("study", study="") != checkout.identifier_system("study", study="")
    assert load_matching_rules() is not rules and load_matching_rules() == load_matching_rules(load_pack(own))
    monkeypatch.delenv("FHIR_LUPUS_MAPPINGS")
    assert load_pack() is checkout  # still read once per directory


def test_a_packaged_copy_inside_a_zip_is_refused_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "fhir_lupus.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("fhir_lupus/_mappings/project.yaml", "{}")
    monkeypatch.setattr(importlib.resources, "files", lambda package: zipfile.Path(archive, f"{package}/"))
    with pytest.raises(MappingError, match="pass --mappings DIR or set FHIR_LUPUS_MAPPINGS"):
        _locate.packaged_mappings_dir()


def test_demo_outside_a_checkout_says_what_it_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_LUPUS_ROOT", str(tmp_path))
    result = runner.invoke(app, ["demo", "--server", "http://127.0.0.1:9/fhir"])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "needs a checkout of the repository (examples/nct00698191 not found" in message
    assert "--server URL --data DIR" in message
    result = runner.invoke(app, ["demo", "--data", str(tmp_path)])
    assert result.exit_code == 2
    assert "(servers not found" in " ".join(result.output.split())


def test_starting_a_server_outside_a_checkout_fails_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FHIR_LUPUS_ROOT", str(tmp_path))
    with pytest.raises(devserver.CheckoutMissing, match=r"servers/hapi/run\.sh not found"):
        devserver.start("hapi")
    assert list(tmp_path.iterdir()) == []
    assert devserver.main(["start", "medplum"]) == 2


# -- install what you use: plotting is the report extra (issue 22, item 7) ------------------------------------------


def _requirements() -> dict[str, list[Requirement]]:
    """pyproject.toml's dependencies ("" key) and each extra's, parsed."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    groups = {"": project["dependencies"], **project["optional-dependencies"]}
    return {name: [Requirement(text) for text in texts] for name, texts in groups.items()}


def test_plotting_is_the_report_extra_and_the_tests_pull_it() -> None:
    groups = _requirements()
    assert "matplotlib" not in {r.name for r in groups[""]}
    assert [r.name for r in groups["report"]] == ["matplotlib"]
    assert any(r.name == "fhir-lupus" and r.extras == {"report"} for r in groups["test"])


def test_every_dependency_has_an_upper_bound_that_admits_what_is_installed() -> None:
    for group, requirements in _requirements().items():
        for requirement in requirements:
            if requirement.name == "fhir-lupus":
                continue  # the package's own extra
            operators = {spec.operator for spec in requirement.specifier}
            assert operators & {"<", "=="}, f"{group or 'dependencies'}: {requirement} has no upper bound"
            try:
                installed = importlib.metadata.version(requirement.name)
            except importlib.metadata.PackageNotFoundError:
                continue  # an extra this venv does not hold (bench)
            assert requirement.specifier.contains(installed, prereleases=True), f"{requirement} excludes {installed}"


@pytest.fixture
def no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """matplotlib as a lean install has it: every import of it fails."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)


@pytest.mark.usefixtures("no_matplotlib")
def test_report_without_the_extra_exits_2_naming_it(dataset: Callable[..., Path], tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["report", str(dataset()), "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "pip install 'fhir-lupus[report]'" in " ".join(result.output.split())
    assert "Traceback" not in result.output and not out.exists() and not (tmp_path / "report_figures").exists()
    with pytest.raises(ExtraMissing, match=r"matplotlib.*fhir-lupus\[report\]"):
        require_plotting()
    assert issubclass(ExtraMissing, ImportError)


@pytest.mark.usefixtures("no_matplotlib")
def test_demo_without_the_extra_skips_the_report_with_a_note(
    dataset: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fhir_lupus.cli._demo import _report

    out = tmp_path / "demo"
    out.mkdir()
    _report(TrialSource.directory(dataset()), out, Settings.default())  # the demo's last step, after push and pull
    said = " ".join(capsys.readouterr().err.split())
    assert "investigator report skipped" in said and "pip install 'fhir-lupus[report]'" in said
    assert list(out.iterdir()) == []


def test_nothing_but_the_drawing_imports_matplotlib() -> None:
    """Every module of the package imports with matplotlib blocked, but the one that draws (in a fresh
    interpreter: this one has long imported it)."""
    probe = """
import importlib, pkgutil, sys
sys.modules["matplotlib"] = None
import fhir_lupus, fhir_lupus.cli
drawing = "fhir_lupus.report._figures"
for module in pkgutil.walk_packages(fhir_lupus.__path__, "fhir_lupus."):
    if module.name != drawing and not module.name.endswith("__main__"):
        importlib.import_module(module.name)
try:
    importlib.import_module(drawing)
except ImportError:
    print("blocked")
"""
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["blocked"]  # the block holds: the drawing module does need it
