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
from fhir_lupus.cli._output import outcome
from fhir_lupus.errors import FhirLupusError, RejectedRows
from fhir_lupus.registry import KEY_ENV, RegistryKey, load_key
from fhir_lupus.sdtm import sdtm_trial

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
    quarantine: Quarantine = None,
    allow_rejects: AllowRejects = False,
    mappings: Mappings = None,
    site: SiteFile = None,
) -> None:
    """Write DATA_DIR's enrolled subjects as SDTMIG 3.4 datasets, one file per domain."""
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
