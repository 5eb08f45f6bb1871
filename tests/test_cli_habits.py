"""The CLI's habits (issue 22, item 5): ``--version``, ``-v``/``-q`` on every command and ``-vv``'s redacted request
log, help that shows every default whole in a narrow terminal, and results as tables that a pipe does not cut or
as CSV and JSON (``--format``)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path

import httpx
import pytest
import respx
import typer
import yaml
from fakefhir import BASE, FakeFhir
from support import REPO, example_subset
from typer.testing import CliRunner

from fhir_lupus._version import __version__
from fhir_lupus.audit import append_event, read_entries
from fhir_lupus.cli import app
from fhir_lupus.client import RetryPolicy

runner = CliRunner()


def commands() -> Iterator[tuple[list[str], typer.core.TyperCommand]]:
    """Every command of ``fhir-lupus`` with its path (``["registry", "submit"]``)."""

    def walk(group: typer.core.TyperGroup, path: list[str]) -> Iterator[tuple[list[str], typer.core.TyperCommand]]:
        for name, command in group.commands.items():
            if isinstance(command, typer.core.TyperGroup):
                yield from walk(command, [*path, name])
            else:
                yield [*path, name], command

    root = typer.main.get_command(app)
    assert isinstance(root, typer.core.TyperGroup)
    return walk(root, [])


ALL = sorted(" ".join(path) for path, _ in commands())


def test_version_names_the_tool_and_the_mapping_pack() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    pack = yaml.safe_load((REPO / "mappings" / "project.yaml").read_text(encoding="utf-8"))
    assert result.output.splitlines() == [
        f"fhir-lupus {__version__}",
        f"mapping pack {pack['mapping_version']} ({REPO / 'mappings'})",
    ]


@pytest.mark.parametrize("path", ALL)
def test_every_command_takes_verbose_and_quiet(path: str) -> None:
    (command,) = [command for names, command in commands() if " ".join(names) == path]
    options = {option for parameter in command.params for option in parameter.opts}
    assert {"-v", "--verbose", "-q", "--quiet"} <= options


# -- -q, -v, -vv -----------------------------------------------------------------------------------------------


def test_quiet_leaves_only_errors_and_the_final_result(dataset: Callable[..., Path]) -> None:
    clean = dataset()
    normal = runner.invoke(app, ["validate", str(clean)])
    quiet = runner.invoke(app, ["validate", str(clean), "-q"])
    assert normal.exit_code == quiet.exit_code == 0
    assert "Rows" in normal.output and len(normal.output.splitlines()) > 5
    assert quiet.output.splitlines() == [f"{clean}: 21 rows read, 0 rejected; open queries: 1"]
    assert quiet.output.splitlines()[-1] == normal.output.splitlines()[-1]

    def spoil(rows: dict[str, list[dict[str, str]]]) -> None:
        rows["labs.csv"][2]["unit"] = "furlongs"

    rejected = runner.invoke(app, ["validate", str(dataset(spoil)), "--quiet"])
    assert rejected.exit_code == 1
    lines = rejected.output.splitlines()
    assert "Rows" not in rejected.output
    assert lines[0].startswith("rejected labs.csv:4: column unit:") and lines[-1].startswith("1 row(s) rejected")


def test_quiet_push_prints_its_summary_alone(dataset: Callable[..., Path], tmp_path: Path, fake: FakeFhir) -> None:
    result = runner.invoke(app, ["push", str(dataset()), "--server", BASE, "--journal", str(tmp_path / "j"), "-q"])
    assert result.exit_code == 0, result.output
    (line,) = result.output.splitlines()
    assert line.startswith("push ") and f" to {BASE}/: " in line and "created" in line


def test_verbose_shows_the_server_the_read_the_retries_and_the_time(
    dataset: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RetryPolicy, "backoff", lambda self, attempt: 0.0)
    fake = FakeFhir()
    busy = [httpx.Response(503, json={"resourceType": "OperationOutcome", "issue": []})]

    def first_busy(request: httpx.Request) -> httpx.Response:
        return busy.pop() if busy and request.url.path.endswith("/metadata") else fake(request)

    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1", port=9).mock(side_effect=first_busy)
        result = runner.invoke(app, ["push", str(dataset()), "--server", BASE, "--journal", str(tmp_path / "j"), "-v"])
    assert result.exit_code == 0, result.output
    assert f"INFO fhir_lupus.client._retry: GET {BASE}/metadata: 503; attempt 2 of 5 in 0.0 s" in result.output
    assert f"{BASE}/ speaks FHIR R4 (CapabilityStatement in" in result.output
    assert re.search(r"read and checked .* in \d+\.\d s", result.output)
    assert re.search(r"^took \d+\.\d s$", result.output, re.MULTILINE)
    assert "DEBUG" not in result.output  # the request log is -vv's


def test_vv_adds_the_request_log_with_identifiers_redacted(
    dataset: Callable[..., Path], tmp_path: Path, fake: FakeFhir
) -> None:
    result = runner.invoke(app, ["push", str(dataset()), "--server", BASE, "--journal", str(tmp_path / "j"), "-vv"])
    assert result.exit_code == 0, result.output
    log = [line for line in result.output.splitlines() if line.startswith("DEBUG fhir_lupus.client._client: ")]
    assert any(re.fullmatch(r"DEBUG \S+: GET /metadata -> 200 \(\d+ ms\)", line) for line in log)
    assert any("identifier=[redacted]" in line for line in log)
    assert "DT0000001" not in result.output and "P-0a1b2c3d" not in result.output  # the MRN and the pseudonym
    quiet_again = runner.invoke(app, ["validate", str(dataset())])  # the next command logs nothing
    assert "DEBUG" not in quiet_again.output and "took" not in quiet_again.output


# -- help -------------------------------------------------------------------------------------------------------


def _default_text(value: object) -> str:
    return str(value.value if isinstance(value, Enum) else value)


@pytest.mark.parametrize("path", ["", *ALL])
def test_help_in_a_narrow_terminal_shows_every_default_whole(
    path: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    code = app([*path.split(), "--help"], standalone_mode=False, prog_name="fhir-lupus")
    assert code in (0, None)
    shown = capsys.readouterr().out
    assert "…" not in shown and shown.strip()
    text = re.sub(r"(?<=\w)- (?=\w)", "-", " ".join(shown.split()))  # a word wrapped at its hyphen, joined again
    for names, command in commands():
        if " ".join(names) != path:
            continue
        for parameter in command.params:
            default = parameter.default
            if default in (None, False) or getattr(parameter, "count", False) or not parameter.show_default:
                continue
            assert f"default: {_default_text(default)}" in text, parameter.name
    if path == "spark-labs":
        assert "pip install 'fhir_lupus[spark]'" in text  # not eaten as markup


# -- results: tables a pipe does not cut, csv and json ------------------------------------------------------------


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "j.audit.jsonl"
    server = "https://a-hospital-with-a-long-name.example.org/fhir/r4/tenants/rheumatology-department/" + "x" * 40
    for outcome in ("complete", "incomplete"):
        append_event(path, "push", server=server, counts={"created": 3}, content_hash="ab" * 32, outcome=outcome)
    return path


def test_audit_show_table_piped_is_whole(log: Path) -> None:
    result = runner.invoke(app, ["audit", "show", str(log)])
    assert result.exit_code == 0
    server = read_entries(log)[0]["server"]
    assert server in result.stdout and "…" not in result.stdout and "created 3" in result.stdout


def test_audit_show_as_csv_and_json(log: Path) -> None:
    entries = read_entries(log)
    as_csv = runner.invoke(app, ["audit", "show", str(log), "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [row["outcome"] for row in rows] == ["complete", "incomplete"]
    assert rows[0]["content_hash"] == "ab" * 32 and rows[0]["server"] == entries[0]["server"]
    as_json = runner.invoke(app, ["audit", "show", str(log), "--format", "json"])
    assert json.loads(as_json.stdout) == entries


@pytest.fixture(scope="module")
def trial(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return example_subset(tmp_path_factory.mktemp("trial"), 3)


def test_schedule_as_csv_json_and_a_whole_table(trial: Path) -> None:
    subjects = [row["subject_id"] for row in csv.DictReader((trial / "subjects.csv").open(encoding="utf-8"))]
    table = runner.invoke(app, ["schedule", str(trial)])
    as_csv = runner.invoke(app, ["schedule", str(trial), "--format", "csv"])
    as_json = runner.invoke(app, ["schedule", str(trial), "--format", "json"])
    assert table.exit_code == as_csv.exit_code == as_json.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    document = json.loads(as_json.stdout)
    assert [row["subject_id"] for row in rows] == [item["subject_id"] for item in document] == subjects
    for row, item in zip(rows, document, strict=True):
        assert int(row["done"]) == item["done"] and row["day_0"] == item["day_0"]
        missing = "; ".join(f"{analyte} {count}" for analyte, count in item["analytes_missing"].items())
        assert row["analytes_missing"] == missing
        whole = ", ".join(f"{analyte} ({count})" for analyte, count in item["analytes_missing"].items())
        assert whole in table.stdout  # the table's last column, whole although piped
    assert "…" not in table.stdout


def test_safety_as_csv_and_json(trial: Path) -> None:
    events = list(csv.DictReader((trial / "adverse_events.csv").open(encoding="utf-8")))
    as_csv = runner.invoke(app, ["safety", str(trial), "--format", "csv"])
    as_json = runner.invoke(app, ["safety", str(trial), "--format", "json"])
    assert as_csv.exit_code == as_json.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert rows[0] == {"dimension": "total", "value": "", "events": str(len(events))}
    document = json.loads(as_json.stdout)
    assert document["events"] == len(events) == sum(document["by_grade"].values())
    serious = [event["event_id"] for event in events if event["serious"] == "yes"]
    assert [event["event_id"] for event in document["serious_events"]] == sorted(serious)


def test_screen_csv_is_what_csv_writes_and_json_each_candidate(trial: Path, tmp_path: Path) -> None:
    written = tmp_path / "screen.csv"
    as_csv = runner.invoke(app, ["screen", str(trial), "--format", "csv", "--csv", str(written)])
    as_json = runner.invoke(app, ["screen", str(trial), "--format", "json"])
    assert as_csv.exit_code == as_json.exit_code == 0
    assert list(csv.reader(io.StringIO(as_csv.stdout))) == list(csv.reader(written.open(encoding="utf-8")))
    document = json.loads(as_json.stdout)
    screened = list(csv.DictReader((trial / "screening.csv").open(encoding="utf-8")))
    assert [c["subject_id"] for c in document] == [row["subject_id"] for row in screened]
    assert sum(len(c["criteria"]) for c in document) == len(list(csv.DictReader(io.StringIO(as_csv.stdout))))
