"""Real FHIR servers for the integration tests: HAPI FHIR JPA and Medplum's engine, on loopback.

When FHIR_LUPUS_HAPI_URL / FHIR_LUPUS_MEDPLUM_URL are set (``.ci/run`` starts the servers and sets them),
those servers are used; otherwise the fixture starts the server itself with ``fhir_lupus.devserver`` and stops
it at the end of the session. Each test isolates its data with a mapping pack whose identifier systems are
unique to the test, so tests never see each other's resources on a shared server.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhir_lupus import devserver
from fhir_lupus.client import FhirClient

REPO = Path(__file__).resolve().parents[2]
SERVER_NAMES = ("hapi", "medplum")


@pytest.fixture(scope="session", params=SERVER_NAMES)
def server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    name: str = request.param
    configured = os.environ.get(f"FHIR_LUPUS_{name.upper()}_URL")
    if configured:
        yield configured
        return
    handle = devserver.start(name, timeout=1800)
    try:
        yield handle.url
    finally:
        devserver.stop(handle)


@pytest.fixture
def client(server_url: str) -> Iterator[FhirClient]:
    with FhirClient(server_url, timeout=120) as fhir:
        yield fhir


@pytest.fixture
def isolated_mappings(tmp_path: Path) -> Path:
    """A copy of mappings/ whose every identifier system (and the MRN system) is unique to this test."""
    run = uuid.uuid4().hex[:12]
    target = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", target)
    project = target / "project.yaml"
    text = project.read_text(encoding="utf-8")
    text = text.replace(
        "canonical_base: https://fhir-lupus.example.org/fhir", f"canonical_base: https://fhir-lupus.example.org/t/{run}"
    )
    text = text.replace("  study: https://clinicaltrials.gov", '  study: "{base}/sid/nct"')
    project.write_text(text, encoding="utf-8")
    study = target / "studies" / "NCT00698191.yaml"
    study.write_text(
        study.read_text(encoding="utf-8").replace("/sid/njdth-mrn", f"/sid/njdth-mrn-{run}"), encoding="utf-8"
    )
    return target
