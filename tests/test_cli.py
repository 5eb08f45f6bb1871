"""The CLI in-process: exit codes, outputs, summary counts and quarantine."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from fhir_lupus.cli import app

runner = CliRunner()

# the schedule of activities: 42 PlanDefinitions (protocol + 41 visits) and 8 ActivityDefinitions
SOA = 42 + 8
MEDICATION = 1  # the cyclophosphamide pretreatment P1 as a MedicationAdministration too


def test_map_writes_a_transaction_bundle(dataset: Callable[..., Path], tmp_path: Path) -> None:
    out = tmp_path / "out" / "bundle.json"
    result = runner.invoke(app, ["map", str(dataset()), "-o", str(out)])
    assert result.exit_code == 0, result.output
    bundle = json.loads(out.read_text(encoding="utf-8"))
    assert bundle["type"] == "transaction" and len(bundle["entry"]) == 5 + 4 + 3 + 2 + 11 + 2 + 1 + SOA + MEDICATION
    assert f"mapped FHIR R4: {28 + SOA + MEDICATION} resources" in result.output


def test_map_ndjson_r5(dataset: Callable[..., Path], tmp_path: Path) -> None:
    out = tmp_path / "ndjson"
    result = runner.invoke(app, ["map", str(dataset()), "-o", str(out), "--format", "ndjson", "--fhir-version", "R5"])
    assert result.exit_code == 0, result.output
    subjects = [json.loads(line) for line in (out / "ResearchSubject.ndjson").read_text().splitlines()]
    assert len(subjects) == 2 and all("progress" in s for s in subjects)
    observations = (out / "Observation.ndjson").read_text().splitlines()
    assert len(observations) == 11 + 2 + 1


def test_rejects_give_exit_1_quarantine_and_a_located_message(dataset: Callable[..., Path], tmp_path: Path) -> None:
    def spoil(rows: dict[str, list[dict[str, str]]]) -> None:
        rows["labs.csv"][2]["unit"] = "furlongs"

    data_dir = dataset(spoil)
    quarantine = tmp_path / "q"
    result = runner.invoke(app, ["validate", str(data_dir), "--quarantine", str(quarantine)])
    assert result.exit_code == 1
    assert "labs.csv:4: column unit:" in result.output
    assert (quarantine / "labs.csv.rejected.csv").exists()
    allowed = runner.invoke(app, ["map", str(data_dir), "-o", str(tmp_path / "b.json"), "--allow-rejects"])
    assert allowed.exit_code == 0
    bundle = json.loads((tmp_path / "b.json").read_text())
    assert len(bundle["entry"]) == 27 + SOA + MEDICATION  # the rejected lab alone is missing


def test_configuration_error_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "not a directory" in result.output


def test_summary_counts_rows(dataset: Callable[..., Path]) -> None:
    result = runner.invoke(app, ["validate", str(dataset())])
    assert result.exit_code == 0
    rows = {}
    for line in result.output.splitlines():
        cells = [cell.strip() for cell in line.split("│") if cell.strip()]
        if len(cells) == 4:
            rows[cells[0]] = cells[1:]
    assert rows["labs.csv"] == ["11", "11", "0"]
    assert rows["total"] == ["21", "21", "0"]
