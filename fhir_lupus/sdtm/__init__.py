"""SDTM output and its conformance check: CDISC CORE run offline as a separate Python 3.12 process.

The check needs only the standard library here; the engine lives in its own venv (``make .venv-core``).
"""

from __future__ import annotations

from fhir_lupus.sdtm._core import (
    CORE_CT_PACKAGE,
    CoreExample,
    CoreExecutionError,
    CoreIssue,
    CoreReport,
    CoreSetup,
    CoreUnavailable,
    core_settings,
    read_core_report,
    run_core,
)

__all__ = [
    "CORE_CT_PACKAGE",
    "CoreExample",
    "CoreExecutionError",
    "CoreIssue",
    "CoreReport",
    "CoreSetup",
    "CoreUnavailable",
    "core_settings",
    "read_core_report",
    "run_core",
]
