"""The CDISC CORE tests run only under `make test-sdtm` (FHIR_LUPUS_SDTM_TESTS=1, after `make .venv-core`).

A full CORE run takes about a minute, so `make test` keeps its time: without the variable nothing here is
collected. With it, the tests are skipped, with the reason, when CORE's folder or Python is missing.
"""

from __future__ import annotations

import os

import pytest

from fhir_lupus.sdtm import CoreSetup, CoreUnavailable, core_settings

if os.environ.get("FHIR_LUPUS_SDTM_TESTS") != "1":
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def core_setup() -> CoreSetup:
    """CORE as `fhir-lupus sdtm --check` finds it: options unset, so the environment or the checkout's defaults."""
    try:
        return core_settings()
    except CoreUnavailable as exc:
        pytest.skip(str(exc))
