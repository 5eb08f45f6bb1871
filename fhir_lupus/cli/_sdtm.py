"""``fhir-lupus sdtm``: the trial as SDTM datasets (docs/sdtm.md)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from fhir_lupus.cli._common import (
    AllowRejects,
    DataDir,
    Mappings,
    Quarantine,
    SiteFile,
    fail,
    open_trial,
    report_load,
    settings_of,
)
from fhir_lupus.cli._exit import stop
from fhir_lupus.cli._output import console, outcome
from fhir_lupus.errors import FhirLupusError, RejectedRows
from fhir_lupus.registry import KEY_ENV, RegistryKey, load_key
from fhir_lupus.sdtm import Conformance, check_output, core_settings, sdtm_trial

__all__ = ["sdtm_command"]


class SdtmFormat(StrEnum):
    xpt = "xpt"
    json = "json"
    both = "both"


def sdtm_command(
    data_dir: DataDir,
    output: Annotated[Path, typer.Option("-o", "--output", help="Directory of the datasets (replaced whole).")],
    output_format: Annotated[
        SdtmFormat, typer.Option("--format", help="xpt (SAS transport v5), json (Dataset-JSON 1.1) or both.")
    ] = SdtmFormat.both,
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key-file",
            help=f"De-identify as `registry package` does with this key (or {KEY_ENV}): pseudonymous USUBJID, "
            "dates moved by the subject's keyed offset.",
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Run CDISC CORE (SDTMIG 3.4, CT 2015-12-18) on the output; its report goes beside the datasets.",
        ),
    ] = False,
    core_dir: Annotated[
        Path | None,
        typer.Option(
            "--core-dir",
            envvar="FHIR_LUPUS_CORE_DIR",
            help="The CORE engine and rules cache (in a checkout: ../shared/cdisc-core).",
        ),
    ] = None,
    core_python: Annotated[
        Path | None,
        typer.Option(
            "--core-python",
            envvar="FHIR_LUPUS_CORE_PYTHON",
            help="Python 3.12 with cdisc-rules-engine 0.17.1 (in a checkout: .venv-core/bin/python, make .venv-core).",
        ),
    ] = None,
    quarantine: Quarantine = None,
    allow_rejects: AllowRejects = False,
    mappings: Mappings = None,
    site: SiteFile = None,
) -> None:
    """Write DATA_DIR's enrolled subjects as SDTMIG 3.4 datasets, one file per domain (--check: and check them)."""
    setup = None
    if check:  # before anything is read or written: a missing engine is said at once
        try:
            setup = core_settings(core_dir, core_python)
        except FhirLupusError as exc:
            fail(exc)
    key: RegistryKey | None = None
    if key_file is not None:
        try:
            key = load_key(key_file)
        except FhirLupusError as exc:
            fail(exc)
    trial = open_trial(data_dir, settings_of(mappings, site=site), "sdtm")
    with trial:
        try:
            result = sdtm_trial(
                trial,
                output,
                settings=trial.settings,
                output=output_format.value,
                key=key,
                allow_rejects=allow_rejects,
            )
        except RejectedRows as exc:  # nothing was written
            report_load(trial.report, quarantine, verbose_findings=False)
            fail(exc)
        except FhirLupusError as exc:
            fail(exc)
        report_load(trial.report, quarantine, verbose_findings=False)
    counts = ", ".join(f"{name} {count}" for name, count in result.datasets.items())
    outcome.print(f"wrote {output}: {counts}", highlight=False)
    if setup is not None:
        try:
            verdict = check_output(setup, output, result.datasets, trial.settings.pack, output / "define.xml")
        except FhirLupusError as exc:
            fail(exc)
        _render(verdict)
        if not verdict.passed:
            stop("check-failed")


def _render(verdict: Conformance) -> None:
    report = verdict.report
    outcome.print(f"{report.summary} ({report.path})", highlight=False)
    for problem in verdict.count_problems:
        outcome.print(f"[red]dataset[/red] {problem}", highlight=False)
    for issue in verdict.unexplained:
        outcome.print(
            f"[red]issue[/red] {issue.rule} {issue.dataset} ({issue.count}): {issue.message}", highlight=False
        )
    for rule in verdict.not_executed:
        outcome.print(f"[red]not executed[/red] {rule}", highlight=False)
    for issue, why in verdict.explained:
        console.print(f"explained {issue.rule} {issue.dataset} ({issue.count}): {why}", highlight=False)
    if verdict.passed:
        outcome.print("conformance: no unexplained issue, every rule executed, every record read", highlight=False)
