"""``fhir-lupus screen``: each screened candidate's verdict and every criterion with the data it was decided on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from fhir_lupus._scratch import write_csv
from fhir_lupus.cli._common import (
    AllowRejects,
    DataDir,
    Mappings,
    exit_on_rejects,
    fail,
    load,
    refuse_rejects,
    settings_of,
)
from fhir_lupus.cli._output import Format, FormatOption, console, emit_csv, emit_json, outcome
from fhir_lupus.model import MEDICATIONS, SCREENING
from fhir_lupus.study import ScreenedCandidate

__all__ = ["screen"]

_out = Console(soft_wrap=True, highlight=False)
_STYLE = {"eligible": "green", "ineligible": "red", "incomplete": "yellow"}
_CSV_COLUMNS = ("subject_id", "enrolled", "verdict", "status", "criterion", "exclude", "decision", "data")
_SCREENING_QUERIES = ("enrolled-not-eligible", "not-screened", "eligibility-incomplete")  # printed above


def screen(
    data_dir: DataDir,
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="Also write one row per candidate and criterion to this CSV file.")
    ] = None,
    output_format: FormatOption = Format.table,
    allow_rejects: AllowRejects = False,
    mappings: Mappings = None,
) -> None:
    """Decide the eligibility criteria of the study file for every row of screening.csv (docs/csv-layout.md),
    as of each candidate's screening date. With rejected rows --csv is not written (exit 1) unless
    --allow-rejects; a criterion a rejected row could have decided is then unknown. --format csv prints the
    rows --csv writes, --format json each candidate with its criteria, on standard output."""
    # screened as it loads: the verdicts and their queries are kept
    trial = load(data_dir, settings_of(mappings), "screen")
    report, screened = trial.report, trial.screened
    counts = {verdict: sum(c.result.verdict == verdict for c in screened) for verdict in _STYLE}
    if output_format is Format.json:
        emit_json([_candidate(candidate) for candidate in screened])
    elif output_format is Format.csv:
        emit_csv(_CSV_COLUMNS, _rows(screened))
    else:
        for candidate in screened:
            _print(candidate)
        _out.print(", ".join(f"{n} {verdict}" for verdict, n in counts.items()) + f" of {len(screened)} screened")
    for finding in trial.screening_findings:
        console.print(f"[magenta]{finding.severity}[/magenta] {finding}", highlight=False)
    for finding in report.findings:
        if finding.file in (SCREENING, MEDICATIONS) and finding.kind not in _SCREENING_QUERIES:
            console.print(f"[yellow]{finding.severity}[/yellow] {finding}", highlight=False)
    for reject in report.rejects:
        if reject.file in (SCREENING, MEDICATIONS):
            outcome.print(f"[red]rejected[/red] {reject}", highlight=False)
    if csv_file is not None:
        refuse_rejects(report, allow_rejects, str(csv_file))
        _write_csv(csv_file, screened)
        console.print(f"wrote {csv_file}")
    exit_on_rejects(report, allow_rejects)


def _candidate(candidate: ScreenedCandidate) -> dict[str, Any]:
    """A candidate as JSON: the verdict, the status it gives, and every criterion with the data it was decided on."""
    result = candidate.result
    return {
        "subject_id": result.subject_id,
        "enrolled": candidate.enrolled,
        "line": candidate.row.line,
        "verdict": result.verdict,
        "status": result.status,
        "criteria": [
            {
                "criterion": item.criterion.text,
                "exclude": item.criterion.exclude,
                "decision": item.decision,
                "data": item.data,
            }
            for item in result.criteria
        ],
    }


def _print(candidate: ScreenedCandidate) -> None:
    result = candidate.result
    enrolled = "enrolled" if candidate.enrolled else "not enrolled"
    style = _STYLE[result.verdict]
    _out.print(
        f"[bold]{result.subject_id}[/bold] ({enrolled}, {SCREENING}:{candidate.row.line}): "
        f"[{style}]{result.verdict}[/{style}] -> ResearchSubject status {result.status}"
    )
    for item in result.criteria:
        kind = "exclusion" if item.criterion.exclude else "inclusion"
        _out.print(f"  {kind:9} {item.decision:8} {item.criterion.text}: {item.data}")


def _rows(screened: list[ScreenedCandidate]) -> list[tuple[str, ...]]:
    """One row per candidate and criterion (_CSV_COLUMNS)."""
    return [
        (
            candidate.result.subject_id,
            "yes" if candidate.enrolled else "no",
            candidate.result.verdict,
            candidate.result.status,
            item.criterion.text,
            "yes" if item.criterion.exclude else "no",
            item.decision,
            item.data,
        )
        for candidate in screened
        for item in candidate.result.criteria
    ]


def _write_csv(path: Path, screened: list[ScreenedCandidate]) -> None:
    try:
        write_csv(path, [_CSV_COLUMNS, *_rows(screened)], lineterminator="\r\n")  # as csv.writer writes by default
    except OSError as exc:
        fail(ValueError(f"--csv {path}: {exc.strerror or exc}"))
