"""The Spark tests run only under `make test-spark` (FHIR_LUPUS_SPARK_TESTS=1, with the spark extra installed).

`make test` installs only `.[test]` and must not start a JVM: without the variable nothing here is collected,
and without PySpark the tests are skipped. One local Spark session serves every test of the folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_lupus.pipeline import stream_trial
from fhir_lupus.source import TrialSource
from fhir_lupus.streaming import write_ndjson

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nct00698191"

if os.environ.get("FHIR_LUPUS_SPARK_TESTS") != "1":
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    pytest.importorskip("pyspark")
    pytest.importorskip("pathling")
    from fhir_lupus.spark import local_session

    session = local_session("local[2]", app_name="fhir-lupus-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def example_ndjson(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole example trial as `fhir-lupus map --format ndjson` writes it."""
    folder = tmp_path_factory.mktemp("example-ndjson")
    write_ndjson(stream_trial(TrialSource.directory(EXAMPLE)), folder)
    return folder
