"""``fhir-lupus screen``: each screened candidate's verdict and every criterion with the data it was decided on."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fhir_lupus.cli._common import AllowRejects, DataDir, Mappings, console, exit_on_rejects, fail, load
from fhir_lupus.errors import FhirLupusError
from fhir_lupus.model._history_checks import MEDICATIONS, SCREENING
from fhir_lupus.screening import ScreenedCandidate, screen_trial, screening_findings

__all__ = ["screen"]

_out = Console(soft_wrap=True, highlight=False)
_STYLE = {"eligible": "green", "ineligible": "red", "incomplete": "yellow"}
_CSV_COLUMNS = ("subject_id", "enrolled", "verdict", "status", "criterion", "exclude", "decision", "data")


def screen(
    data_dir: DataDir,
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="Also write one row per candidate and criterion to this CSV file.")
    ] = None,
    allow_rejects: AllowRejects = False,
    mappings: Mappings = None,
) -> None:
    """Decide the eligibility criteria of the study file for every row of screening.csv (docs/csv-layout.md)."""
    data, report = load(data_dir, mappings)
    try:
        screened = screen_trial(data, mappings)
    except FhirLupusError as exc:
        fail(exc)
    if not data.screening and not report.read[SCREENING]:
        fail(ValueError(f"{data_dir / SCREENING}: no screened candidates (the file is missing or empty)"))
    for candidate in screened:
        _print(candidate)
    counts = {verdict: sum(c.result.verdict == verdict for c in screened) for verdict in _STYLE}
    _out.print(", ".join(f"{n} {verdict}" for verdict, n in counts.items()) + f" of {len(screened)} screened")
    for finding in screening_findings(data, screened):
        console.print(f"[yellow]note[/yellow] {finding}", highlight=False)
    for reject in report.rejects:
        if reject.file in (SCREENING, MEDICATIONS):
            console.print(f"[red]rejected[/red] {reject}", highlight=False)
    if csv_file is not None:
        _write_csv(csv_file, screened)
        console.print(f"wrote {csv_file}")
    exit_on_rejects(report, allow_rejects)


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


def _write_csv(path: Path, screened: list[ScreenedCandidate]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(_CSV_COLUMNS)
            for candidate in screened:
                result = candidate.result
                for item in result.criteria:
                    writer.writerow(
                        (
                            result.subject_id,
                            "yes" if candidate.enrolled else "no",
                            result.verdict,
                            result.status,
                            item.criterion.text,
                            "yes" if item.criterion.exclude else "no",
                            item.decision,
                            item.data,
                        )
                    )
    except OSError as exc:
        fail(ValueError(f"--csv {path}: {exc.strerror or exc}"))
