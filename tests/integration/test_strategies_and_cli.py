"""Batch and one-by-one writes on real servers, and the CLI commands end to end."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fhir_lupus import load_trial
from fhir_lupus.cli import app
from fhir_lupus.client import FhirClient, WriteStrategy
from fhir_lupus.journal import Journal
from fhir_lupus.pipeline import map_trial
from fhir_lupus.pull import pull_study
from fhir_lupus.pull._roundtrip import compare_round_trip
from fhir_lupus.push import PushOptions, dry_run_trial, push_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import LabCatalogue, load_pack

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.mark.parametrize("strategy", ["batch", "individual"])
def test_fallback_strategies_resolve_references_in_order(
    strategy: WriteStrategy,
    client: FhirClient,
    isolated_mappings: Path,
    isolated_settings: Settings,
    dataset: Callable[..., Path],
    tmp_path: Path,
) -> None:
    data, report = load_trial(dataset(), pack=isolated_settings.pack)
    expected = len(map_trial(TrialSource.loaded(data, report), settings=isolated_settings).resources)
    with Journal(tmp_path / "j.sqlite") as journal:
        pushed = push_trial(
            TrialSource.loaded(data, report),
            client,
            journal,
            source="t",
            settings=isolated_settings,
            options=PushOptions(strategy=strategy, chunk_size=7),
        )
        assert pushed.strategy == strategy and pushed.written == expected and pushed.complete, pushed.summary()
        state = dry_run_trial(TrialSource.loaded(data, report), client, settings=isolated_settings)
        assert state.counts == {"unchanged": expected}  # references were rewritten to the right server ids
        pulled = pull_study(client, journal, data.study, since=None, settings=isolated_settings)
    assert compare_round_trip(data, pulled.rows, LabCatalogue(load_pack(isolated_mappings))).exact


def test_cli_push_dry_run_pull(
    server_url: str, isolated_mappings: Path, isolated_settings: Settings, dataset: Callable[..., Path], tmp_path: Path
) -> None:
    data_dir = dataset()
    journal = tmp_path / "journal.sqlite"
    common = ["--server", server_url, "--journal", str(journal), "--mappings", str(isolated_mappings)]
    preview = runner.invoke(app, ["push", str(data_dir), "--dry-run", *common])
    assert preview.exit_code == 0, preview.output
    counts = re.search(
        r"dry run \(nothing written\): (\d+) create, (\d+) update, (\d+) unchanged, (\d+) conflict", preview.output
    )
    assert counts, preview.output
    create, update, unchanged, conflict = map(int, counts.groups())
    loaded, loaded_report = load_trial(data_dir, pack=isolated_settings.pack)
    expected = len(map_trial(TrialSource.loaded(loaded, loaded_report), settings=isolated_settings).resources)
    assert expected > 28  # the study, 2 subjects' records, the schedule and medications of the base rows
    assert (create, update, unchanged, conflict) == (expected, 0, 0, 0)
    first = runner.invoke(app, ["push", str(data_dir), "--chunk-size", "10", *common])
    assert first.exit_code == 0, first.output
    assert "0 conflicts, 0 held back, 0 refused, 0 skipped" in first.output
    assert "provenance: Provenance/" in first.output
    second = runner.invoke(app, ["push", str(data_dir), *common])
    assert "nothing changed since the last push: nothing was sent" in second.output
    out = tmp_path / "labs.csv"
    pulled = runner.invoke(app, ["pull", "--study", "NCT00698191", "-o", str(out), *common])
    assert pulled.exit_code == 0, pulled.output
    assert "pulled 12 new or changed lab rows of 2 subjects" in pulled.output  # 11 labs and 1 Treg
    assert len(out.read_text().splitlines()) == 13
    again = runner.invoke(app, ["pull", "--study", "NCT00698191", "-o", str(out), *common])
    assert "pulled 0 new or changed lab rows" in again.output  # --since auto: nothing new since the last pull
    assert "12 rows in" in again.output and len(out.read_text().splitlines()) == 13  # the earlier rows are kept


@pytest.mark.parametrize("server_url", ["medplum"], indirect=True)
def test_demo_against_a_running_server(server_url: str, tmp_path: Path) -> None:
    """The job `make demo` runs, in full (the whole example trial), on the server it starts by default."""
    result = runner.invoke(app, ["demo", "--server", server_url, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "round trip: 8527 of 8527 lab and Treg values identical" in result.output  # 8370 labs, 157 Treg
    assert (tmp_path / "labs.csv").exists()
    assert result.stdout.strip().splitlines()[-1] == str(tmp_path / "report.html")  # the demo ends with the report
    assert len(list((tmp_path / "report_figures").glob("subject-*.png"))) == 20


@pytest.mark.parametrize("server_url", ["hapi"], indirect=True)
def test_demo_on_hapi_with_a_few_subjects(
    server_url: str, subset: Callable[..., Path], isolated_mappings: Path, tmp_path: Path
) -> None:
    """`fhir-lupus demo --engine hapi` does the same job; three subjects show it (the whole trial takes HAPI about
    five minutes here). The mappings come from FHIR_LUPUS_MAPPINGS, as a user of a private pack would set them."""
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["demo", "--server", server_url, "--data", str(subset(3)), "--out", str(out)],
        env={"FHIR_LUPUS_MAPPINGS": str(isolated_mappings)},
    )
    assert result.exit_code == 0, result.output
    trip = re.search(r"round trip: (\d+) of (\d+) lab and Treg values identical", result.output)
    assert trip and trip[1] == trip[2] and int(trip[1]) > 300, result.output  # three subjects: ~400 values
    assert result.stdout.strip().splitlines()[-1] == str(out / "report.html")
    assert len(list((out / "report_figures").glob("subject-*.png"))) == 3
