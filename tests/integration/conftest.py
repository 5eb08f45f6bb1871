"""Real FHIR servers for the integration tests: HAPI FHIR JPA and Medplum's engine, on loopback.

When FHIR_LUPUS_HAPI_URL / FHIR_LUPUS_MEDPLUM_URL are set (``.ci/run`` starts the servers and sets them),
those servers are used; otherwise the fixture starts the server itself with ``fhir_lupus.devserver`` and stops
it at the end of the session. Each test isolates its data with a mapping pack whose identifier systems are
unique to the test, so tests never see each other's resources on a shared server.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import FAULT_RESULT, example_subset, isolated_mappings_copy

from fhir_lupus import devserver
from fhir_lupus.client import FhirClient
from fhir_lupus.settings import Settings
from fhir_lupus.terminology import load_pack

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


@pytest.fixture(scope="session")
def oidc_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The issuer URL of the oidc-provider authorization server (servers/oidc) for the SMART tests:
    FHIR_LUPUS_OIDC_URL when set, else one started here on a free port (npm ci on its first start)."""
    configured = os.environ.get("FHIR_LUPUS_OIDC_URL")
    if configured:
        yield configured.rstrip("/")
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handle = devserver.start("oidc", port, timeout=600, state_dir=tmp_path_factory.mktemp("oidc"))
    try:
        yield handle.url
    finally:
        devserver.stop(handle)


@pytest.fixture(scope="session")
def hapi_subscriptions_url() -> Iterator[str]:
    """HAPI with REST-hook subscriptions on (``scripts/fhir-server start hapi-subscriptions``, the same jar as
    ``hapi``): FHIR_LUPUS_HAPI_SUBSCRIPTIONS_URL when set (.ci/run), else started here for the session, as the
    other servers are (about 20 s and 600 MB more; only the few tests that need delivery ask for it)."""
    configured = os.environ.get("FHIR_LUPUS_HAPI_SUBSCRIPTIONS_URL")
    if configured:
        yield configured.rstrip("/")
        return
    handle = devserver.start("hapi-subscriptions", timeout=1800)
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
    """A copy of mappings/ whose every URI of ours (identifier systems, the MRN system, the project CodeSystem)
    is unique to this test, and whose study identifier systems (current and superseded) are ours too."""
    run = uuid.uuid4().hex[:12]
    target = isolated_mappings_copy(tmp_path / "mappings", f"t/{run}")
    pack = load_pack(target)
    systems = (pack.identifier_system("study", study=""), *pack.superseded_identifier_systems("study", study=""))
    assert all(s.startswith(f"https://fhir-lupus.example.org/t/{run}/") for s in systems), systems
    return target


@pytest.fixture
def isolated_settings(isolated_mappings: Path) -> Settings:
    """``Settings`` of the ``isolated_mappings`` pack (the same pack: it is read once per directory)."""
    return Settings.from_mappings(isolated_mappings)


@pytest.fixture
def subset(tmp_path: Path) -> Callable[..., Path]:
    """``subset(n)``: the example trial cut to its first ``n`` subjects (most cases need a few, not twenty)."""

    def make(subjects: int, first: int = 0) -> Path:
        return example_subset(tmp_path / f"example-{first}-{subjects}", subjects, first=first)

    return make


@pytest.fixture
def fault_result(record_property: Callable[[str, object], None]) -> Callable[[str], None]:
    """Record one line of the fault-injection summary (tests/conftest.py prints them at the end of the run: the
    line travels with the test's report, so it reaches the summary from a pytest-xdist worker too)."""
    return lambda line: record_property(FAULT_RESULT, line)
