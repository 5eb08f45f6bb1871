"""Shared fixtures: a tiny, valid trial data directory that each test can spoil in one place."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import respx
from fakefhir import BASE, FakeFhir
from support import FAULT_RESULT

from fhir_lupus.client import FhirClient, RetryPolicy
from fhir_lupus.journal import Journal
from fhir_lupus.mappers._context import MappingContext
from fhir_lupus.model import StudyDefinition, load_study
from fhir_lupus.scoring import load_sledai_definition
from fhir_lupus.terminology import LabCatalogue, MappingPack, UnitConverter, load_pack

LAB = "Drum Tower Hospital Central Laboratory"
_fault_results: list[str] = []  # tests/integration/test_faults.py's lines, printed at the end of the run
INTEGRATION = "tests/integration/"


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook (the test extra installs it; make test runs -n 2)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """The integration tests as one unit of work, run in order by one worker, the unit tests shared out one by
    one: the integration tests share the servers, which two workers would fight over for the machine's cores,
    and their session fixtures start or reach the servers once. (pytest-xdist's ``loadgroup`` would say the
    same with marks, but it renames the tests' ids to do it, which pytest 9.2 no longer lets a plugin do.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ServersTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return INTEGRATION if nodeid.startswith(INTEGRATION) else nodeid

    return ServersTogether(config, log)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collect the fault-injection lines (``fault_result`` of tests/integration/conftest.py) from each report,
    in this process or, under pytest-xdist, as the workers' reports arrive. The teardown report is the last one
    of a test and carries every line its call recorded."""
    if report.when == "teardown":
        _fault_results.extend(str(v) for name, v in report.user_properties if name == FAULT_RESULT)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _fault_results:
        terminalreporter.section("fault injection: resources lost, duplicated, journal disagreeing with the server")
        for line in _fault_results:
            terminalreporter.write_line(line)


def base_rows() -> dict[str, list[dict[str, str]]]:
    """Two subjects, baseline and month 1, a few labs of each value kind, one SLEDAI, Treg and procedures."""
    subjects = [
        dict(
            subject_id="MSC-001",
            mrn="DT0000001",
            pseudonym="",
            sex="female",
            birth_date="1980-05-01",
            enrolled_on="2008-01-02",
            status="follow-up",
            off_study_on="",
            off_study_reason="",
            arm="AlloMSC",
        ),
        dict(
            subject_id="MSC-002",
            mrn="",
            pseudonym="P-0a1b2c3d",
            sex="male",
            birth_date="1975",
            enrolled_on="2008-02-01",
            status="withdrawn",
            off_study_on="2008-04-01",
            off_study_reason="moved away",
            arm="AlloMSC",
        ),
    ]
    visits = [
        dict(subject_id="MSC-001", visit_code="BL", visit_date="2008-01-05"),
        dict(subject_id="MSC-001", visit_code="M01", visit_date="2008-02-04"),
        dict(subject_id="MSC-002", visit_code="BL", visit_date="2008-02-03"),
    ]

    def lab(
        rid: str,
        subject: str,
        visit: str,
        analyte: str,
        value: str,
        unit: str = "",
        low: str = "",
        high: str = "",
        method: str = "",
        specimen: str = "serum",
        at: str = "2008-01-05T08:00:00+08:00",
        local: str = "",
    ) -> dict[str, str]:
        return dict(
            result_id=rid,
            subject_id=subject,
            visit_code=visit,
            analyte=analyte,
            value=value,
            unit=unit,
            ref_low=low,
            ref_high=high,
            method=method,
            specimen=specimen,
            collected_at=at,
            lab=LAB,
            local_code=local,
        )

    labs = [
        lab("L1", "MSC-001", "BL", "c3", "0.45", "g/L", "0.9", "1.8", local="DT-C3"),
        lab("L2", "MSC-001", "BL", "creatinine", "88", "µmol/L", "44", "133"),
        lab("L3", "MSC-001", "BL", "urea", "7.5", "mmol/L", "2.9", "8.2"),
        lab("L4", "MSC-001", "BL", "ana", "1:320", method="ifa"),
        lab("L5", "MSC-001", "BL", "urine_protein_dipstick", "2+", specimen="urine"),
        lab("L6", "MSC-001", "BL", "urine_protein_24h", "1.8", "g/24h", "", "0.15", specimen="urine-24h"),
        lab("L7", "MSC-001", "BL", "anti_dsdna", "<10", "IU/mL", "", "100"),
        lab("L8", "MSC-001", "BL", "egfr", "95", "mL/min/1.73m2", "90", "", method="ckd-epi-2009"),
        lab("L9", "MSC-001", "BL", "platelets", "85", "10^9/L", "125", "350", specimen="blood"),
        lab("L10", "MSC-001", "M01", "c3", "0.95", "g/L", "0.9", "1.8", at="2008-02-04T08:00:00+08:00"),
        lab("L11", "MSC-002", "BL", "c4", "0.05", "g/L", "0.1", "0.4", at="2008-02-03T08:00:00+08:00"),
    ]
    sledai = [
        dict(
            subject_id="MSC-001",
            visit_code="BL",
            assessed_on="2008-01-05",
            descriptors="arthritis;rash",
            window_days="10",
            reported_total="",
            assessor="WJ",
        ),
        dict(
            subject_id="MSC-001",
            visit_code="M01",
            assessed_on="2008-02-04",
            descriptors="",
            window_days="",
            reported_total="0",
            assessor="",
        ),
    ]
    treg = [
        dict(
            measurement_id="T1",
            subject_id="MSC-001",
            visit_code="BL",
            measured_at="2008-01-05T08:00:00+08:00",
            percent="2.5",
            lab=LAB,
        ),
    ]
    procedures = [
        dict(
            procedure_id="P1",
            subject_id="MSC-001",
            kind="cyclophosphamide_pretreatment",
            status="completed",
            started_at="2008-01-06T08:00:00+08:00",
            ended_at="2008-01-06T10:00:00+08:00",
            dose_mg="1400",
            dose_mg_per_m2="850",
            cells_per_kg="",
            route="intravenous",
            donor_id="",
        ),
        dict(
            procedure_id="P2",
            subject_id="MSC-001",
            kind="msc_infusion",
            status="completed",
            started_at="2008-01-07T08:00:00+08:00",
            ended_at="2008-01-07T09:00:00+08:00",
            dose_mg="",
            dose_mg_per_m2="",
            cells_per_kg="1000000",
            route="intravenous",
            donor_id="D-2008-01",
        ),
    ]
    return {
        "subjects.csv": subjects,
        "visits.csv": visits,
        "labs.csv": labs,
        "sledai.csv": sledai,
        "treg.csv": treg,
        "procedures.csv": procedures,
    }


def write_dataset(directory: Path, rows: dict[str, list[dict[str, str]]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "trial.txt").write_text("NCT00698191\n", encoding="utf-8")
    for name, records in rows.items():
        with (directory / name).open("w", newline="", encoding="utf-8") as handle:
            columns = list(records[0]) if records else ["subject_id"]
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(records)
    return directory


@pytest.fixture
def dataset(tmp_path: Path) -> Callable[..., Path]:
    """``dataset(edit)`` writes the base rows after ``edit(rows)`` had its way with them."""

    def build(edit: Callable[[dict[str, list[dict[str, str]]]], Any] | None = None) -> Path:
        rows = base_rows()
        if edit is not None:
            edit(rows)
        return write_dataset(tmp_path / "data", rows)

    return build


@pytest.fixture
def fake() -> Iterator[FakeFhir]:
    """The in-memory FHIR server of tests/fakefhir.py, answering every request to its base through respx."""
    server = FakeFhir()
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1", port=9).mock(side_effect=server)
        yield server


@pytest.fixture
def client() -> Iterator[FhirClient]:
    """A client of the ``fake`` server's base, whose retries do not sleep (a module may define its own)."""
    with FhirClient(BASE, retry=RetryPolicy(attempts=2, sleep=lambda _: None)) as fhir:
        yield fhir


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    """A fresh push/pull journal in the test's directory."""
    with Journal(tmp_path / "journal.sqlite") as book:
        yield book


@pytest.fixture(scope="session")
def pack() -> MappingPack:
    return load_pack()


@pytest.fixture(scope="session")
def study() -> StudyDefinition:
    return load_study("NCT00698191")


@pytest.fixture(scope="session")
def units(pack: MappingPack) -> UnitConverter:
    return UnitConverter(pack)


@pytest.fixture(scope="session")
def catalogue(pack: MappingPack, units: UnitConverter) -> LabCatalogue:
    return LabCatalogue(pack, units)


@pytest.fixture(scope="session")
def ctx(pack: MappingPack, study: StudyDefinition, units: UnitConverter) -> MappingContext:
    return MappingContext(study=study, pack=pack, units=units, sledai=load_sledai_definition())
