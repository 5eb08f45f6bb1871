"""Where the mappings come from (FHIR_LUPUS_MAPPINGS, the checkout, the wheel's copy) and what needs a checkout."""

from __future__ import annotations

import importlib.resources
import zipfile
from pathlib import Path

import pytest
from support import REPO
from typer.testing import CliRunner

from fhir_lupus import devserver
from fhir_lupus.cli import app
from fhir_lupus.errors import MappingError
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
