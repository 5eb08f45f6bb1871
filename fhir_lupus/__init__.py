"""fhir_lupus: FHIR interoperability adapter for the NCT00698191 MSC-for-refractory-SLE trial.

This is the whole public surface (docs/api.md, with an example for each use: push, pull, registry); a test
pins it. Everything else is reached through the packages (``fhir_lupus.model``, ``fhir_lupus.push``, ...),
whose modules are private.

    with TrialSource.directory(Path("examples/nct00698191"), command="push") as trial:
        trial.check()                                        # every CSV read and checked once
        with FhirClient(server) as client, Journal(path) as journal:
            push_trial(trial, client, journal, source="site export")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhir_lupus._exports import lazy_exports
from fhir_lupus._version import __version__ as __version__

if TYPE_CHECKING:
    from fhir_lupus._resource import Resource
    from fhir_lupus.bundle import dumps, transaction_bundle
    from fhir_lupus.client import BasicAuth, BearerAuth, Connection, FhirClient, RetryPolicy, SmartBackendAuth
    from fhir_lupus.errors import (
        FhirHttpError,
        FhirLupusError,
        InputError,
        MappingError,
        Outcome,
        RejectedRows,
        ResourceInvalidError,
        TerminologyError,
        UnitError,
    )
    from fhir_lupus.journal import Journal
    from fhir_lupus.mappers import MappingContext
    from fhir_lupus.model import LoadReport, StudyDefinition, TrialData, load_study, load_trial, write_quarantine
    from fhir_lupus.pipeline import MapResult, map_trial
    from fhir_lupus.pull import BulkOptions, PullResult, pull_study
    from fhir_lupus.push import DryRunReport, PushOptions, PushReport, dry_run_trial, push_trial
    from fhir_lupus.registry import PackageResult, RegistryKey, SubmitResult, load_key, package_trial, submit_package
    from fhir_lupus.sdtm import SdtmResult, check_output, core_settings, sdtm_trial
    from fhir_lupus.settings import Settings
    from fhir_lupus.signals import PublishReport, Signal, flare_signals, publish_signals, write_signals
    from fhir_lupus.source import TrialSource
    from fhir_lupus.validation import check_invariants, validate_resource
    from fhir_lupus.watch import WatchOptions, WatchReport, watch

# Where each public name lives. ``import fhir_lupus`` imports none of them: a name is imported when first used
# (PEP 562), so ``fhir-lupus --help`` or a pull (whose modules import ``fhir_lupus.x`` and so run this file) does
# not pay for the mappers, SDTM, the report or the registry (tests/test_cli_imports.py).
_HOMES: dict[str, tuple[str, ...]] = {
    "fhir_lupus._resource": ("Resource",),
    "fhir_lupus.bundle": ("dumps", "transaction_bundle"),
    "fhir_lupus.client": ("BasicAuth", "BearerAuth", "Connection", "FhirClient", "RetryPolicy", "SmartBackendAuth"),
    "fhir_lupus.errors": (
        "FhirHttpError",
        "FhirLupusError",
        "InputError",
        "MappingError",
        "Outcome",
        "RejectedRows",
        "ResourceInvalidError",
        "TerminologyError",
        "UnitError",
    ),
    "fhir_lupus.journal": ("Journal",),
    "fhir_lupus.mappers": ("MappingContext",),
    "fhir_lupus.model": ("LoadReport", "StudyDefinition", "TrialData", "load_study", "load_trial", "write_quarantine"),
    "fhir_lupus.pipeline": ("MapResult", "map_trial"),
    "fhir_lupus.pull": ("BulkOptions", "PullResult", "pull_study"),
    "fhir_lupus.push": ("DryRunReport", "PushOptions", "PushReport", "dry_run_trial", "push_trial"),
    "fhir_lupus.registry": (
        "PackageResult",
        "RegistryKey",
        "SubmitResult",
        "load_key",
        "package_trial",
        "submit_package",
    ),
    "fhir_lupus.sdtm": ("SdtmResult", "check_output", "core_settings", "sdtm_trial"),
    "fhir_lupus.settings": ("Settings",),
    "fhir_lupus.signals": ("PublishReport", "Signal", "flare_signals", "publish_signals", "write_signals"),
    "fhir_lupus.source": ("TrialSource",),
    "fhir_lupus.validation": ("check_invariants", "validate_resource"),
    "fhir_lupus.watch": ("WatchOptions", "WatchReport", "watch"),
}
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)

__all__ = [
    "BasicAuth",
    "BearerAuth",
    "BulkOptions",
    "Connection",
    "DryRunReport",
    "FhirClient",
    "FhirHttpError",
    "FhirLupusError",
    "InputError",
    "Journal",
    "LoadReport",
    "MapResult",
    "MappingContext",
    "MappingError",
    "Outcome",
    "PackageResult",
    "PublishReport",
    "PullResult",
    "PushOptions",
    "PushReport",
    "RegistryKey",
    "RejectedRows",
    "Resource",
    "ResourceInvalidError",
    "RetryPolicy",
    "SdtmResult",
    "Settings",
    "Signal",
    "SmartBackendAuth",
    "StudyDefinition",
    "SubmitResult",
    "TerminologyError",
    "TrialData",
    "TrialSource",
    "UnitError",
    "WatchOptions",
    "WatchReport",
    "check_invariants",
    "check_output",
    "core_settings",
    "dry_run_trial",
    "dumps",
    "flare_signals",
    "load_key",
    "load_study",
    "load_trial",
    "map_trial",
    "package_trial",
    "publish_signals",
    "pull_study",
    "push_trial",
    "sdtm_trial",
    "submit_package",
    "transaction_bundle",
    "validate_resource",
    "watch",
    "write_quarantine",
    "write_signals",
]
