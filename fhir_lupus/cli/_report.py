"""``fhir-lupus report``: the investigator report (one self-contained HTML page and PNG figures for slides)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fhir_lupus.cli._common import AllowRejects, DataDir, Mappings, fail, load, refuse_rejects, settings_of
from fhir_lupus.cli._output import console
from fhir_lupus.errors import FhirLupusError
from fhir_lupus.report import require_plotting, write_report

__all__ = ["report"]


def report(
    data_dir: DataDir,
    out: Annotated[Path, typer.Option("-o", "--out", help="The HTML page to write.")] = Path("report.html"),
    figures: Annotated[
        Path | None,
        typer.Option("--figures", help="Directory for the PNG figures (default: <page stem>_figures/ beside it)."),
    ] = None,
    allow_rejects: AllowRejects = False,
    mappings: Mappings = None,
) -> None:
    """Subject timelines around the MSC infusion, change from baseline and responders
    (definitions: mappings/report/report.yaml), as one HTML page that needs no network.

    With rejected rows nothing is written (exit 1) unless --allow-rejects: then every statistic that a rejected
    row or a preliminary SLEDAI-2K total could change is marked preliminary on the page. The page and every PNG
    say when they were made, the data cut-off, the tool and mapping versions and the open queries.

    Needs matplotlib, the package's report extra: without it, exit 2 before any data is read, with the pip
    command that installs it."""
    try:
        require_plotting()
    except FhirLupusError as exc:
        fail(exc)
    settings = settings_of(mappings)
    trial = load(data_dir, settings, "report")
    refuse_rejects(trial.report, allow_rejects, f"the report {out}")
    try:
        result = write_report(trial, out, figures_dir=figures, settings=settings)
    except FhirLupusError as exc:
        fail(exc)
    console.print(
        f"{result.subjects} subjects, {result.values} values drawn, {len(result.censored)} censored, "
        f"{len(result.set_aside)} set aside; {len(result.figures)} figures in {result.figures[0].parent}",
        highlight=False,
    )
    if result.metadata is not None:
        console.print("; ".join(f"{label} {value}" for label, value in result.metadata.items()), highlight=False)
    for item in result.set_aside:
        console.print(f"[yellow]set aside[/yellow] {item.where}: {item.series} {item.reported}: {item.reason}")
    for line in result.preliminary:
        console.print(f"[yellow]preliminary[/yellow] {line}", highlight=False)
    typer.echo(str(result.html))
