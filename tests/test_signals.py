"""Flare signals (fhir_lupus.signals): every definition of mappings/signals/flares.yaml on hand-built series.

Each test builds a subject's series as pulled rows (``PulledLab``) or as a trial data directory (the ``dataset``
fixture) and checks which signals come out: a change proven both ways raises one, a censored value or a missing
previous value raises none, a pending result and a refused or queried row never count.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from fhir_lupus.cli import app
from fhir_lupus.client import FhirClient
from fhir_lupus.errors import SiteProfileError
from fhir_lupus.journal import Journal
from fhir_lupus.pull import PulledLab, write_rows
from fhir_lupus.settings import Settings
from fhir_lupus.signals import (
    COLUMNS,
    Signal,
    flare_signals,
    load_flare_definitions,
    publish_signals,
    read_pulled,
    signal_resource,
    write_signals,
)
from fhir_lupus.source import TrialSource
from fhir_lupus.validation import validate_resource
from tests.fakefhir import BASE, FakeFhir

SETTINGS = Settings.default()
_count = iter(range(1, 10_000))


def lab(
    analyte: str,
    value: str,
    unit: str,
    month: int,
    *,
    subject: str = "MSC-001",
    low: str = "",
    high: str = "",
    status: str = "final",
    rid: str | None = None,
) -> PulledLab:
    """One pulled row, collected on the 5th of month ``month`` of 2008 (month 1 is the baseline)."""
    number = next(_count)
    return PulledLab(
        result_id=rid or f"R{number}",
        subject_id=subject,
        visit_code=f"M{month:02d}",
        analyte=analyte,
        value=value,
        unit=unit,
        ref_low=low,
        ref_high=high,
        method="",
        collected_at=f"2008-{month:02d}-05T08:00:00+08:00",
        window="in-window",
        days_from_due="0",
        loinc="",
        reported_value=value,
        reported_unit=unit,
        observation_id=f"obs-{number}",
        last_updated="2008-12-01T00:00:00Z",
        status=status,
    )


def ids(signals: list[Signal], definition: str | None = None) -> list[str]:
    return [s.result_id for s in signals if definition is None or s.definition_id == definition]


LOW_C = "sledai-2k-low-complement"
PLT = "sledai-2k-thrombocytopenia"
WBC = "sledai-2k-leukopenia"
DNA = "sledai-2k-increased-dna-binding"
UP = "sledai-2k-proteinuria"
PROT = "kdigo-2012-proteinuric-relapse"
CREA = "kdigo-2012-nephritic-relapse"


class TestDescriptorChange:
    def test_low_complement_raised_when_it_appears(self) -> None:
        rows = [lab("c3", "0.95", "g/L", 1, low="0.9", high="1.8"), lab("c3", "0.85", "g/L", 2, low="0.9", high="1.8")]
        found = flare_signals(rows, settings=SETTINGS)
        assert ids(found) == [rows[1].result_id]
        signal = found[0]
        assert (signal.definition_id, signal.compared, signal.compared_value) == (LOW_C, "previous", "0.95")
        assert signal.compared_result_id == rows[0].result_id and signal.observation_id == rows[1].observation_id
        assert "Gladman" in signal.source and "lower reference limit" in signal.threshold

    def test_present_at_the_previous_value_raises_nothing(self) -> None:
        rows = [lab("c4", "0.08", "g/L", 1, low="0.1"), lab("c4", "0.05", "g/L", 2, low="0.1")]
        assert flare_signals(rows, settings=SETTINGS) == []

    def test_a_missing_previous_value_raises_nothing(self) -> None:
        rows = [lab("c3", "0.5", "g/L", 3, low="0.9"), lab("c4", "0.3", "g/L", 1, low="0.1")]
        assert flare_signals(rows, settings=SETTINGS) == []

    def test_c3_and_c4_are_compared_each_with_its_own_previous_value(self) -> None:
        rows = [lab("c4", "0.05", "g/L", 1, low="0.1"), lab("c3", "0.5", "g/L", 2, low="0.9")]
        assert flare_signals(rows, settings=SETTINGS) == []  # a low C4 before is no previous C3

    def test_thresholds_are_the_sledai_rule_converted_to_the_lab_unit(self) -> None:
        # 10*3/uL is 10*9/L: 95 is below 100 only once converted
        rows = [lab("platelets", "150", "10*3/uL", 1), lab("platelets", "95", "10^3/uL", 2)]
        assert ids(flare_signals(rows, settings=SETTINGS), PLT) == [rows[1].result_id]
        rows = [lab("wbc", "3500", "/uL", 1), lab("wbc", "2800", "/uL", 2)]  # 2.8 x 10^9/L
        assert ids(flare_signals(rows, settings=SETTINGS), WBC) == [rows[1].result_id]
        rows = [lab("wbc", "3500", "/uL", 1), lab("wbc", "3100", "/uL", 2)]
        assert flare_signals(rows, settings=SETTINGS) == []

    def test_censored_values_prove_only_what_their_bound_proves(self) -> None:
        # "<120" may be 110: no proof of < 100; "<90" is
        assert flare_signals([lab("platelets", "150", "10^9/L", 1), lab("platelets", "<120", "10^9/L", 2)]) == []
        rows = [lab("platelets", "150", "10^9/L", 1), lab("platelets", "<90", "10^9/L", 2)]
        assert ids(flare_signals(rows, settings=SETTINGS)) == [rows[1].result_id]
        # a previous ">2" may be 2.5 (leukopenia already): absence is not proven
        assert flare_signals([lab("wbc", ">2", "10^9/L", 1), lab("wbc", "2.5", "10^9/L", 2)], settings=SETTINGS) == []
        # anti-dsDNA "<10" is proven normal before, "150" above the reference
        rows = [lab("anti_dsdna", "<10", "IU/mL", 1, high="100"), lab("anti_dsdna", "150", "IU/mL", 2, high="100")]
        assert ids(flare_signals(rows, settings=SETTINGS), DNA) == [rows[1].result_id]
        # a ">50" now does not prove above 100
        rows = [lab("anti_dsdna", "20", "IU/mL", 1, high="100"), lab("anti_dsdna", ">50", "IU/mL", 2, high="100")]
        assert flare_signals(rows, settings=SETTINGS) == []

    def test_without_a_reference_limit_nothing_is_proven(self) -> None:
        rows = [lab("c3", "0.95", "g/L", 1, low="0.9"), lab("c3", "0.5", "g/L", 2)]
        assert flare_signals(rows, settings=SETTINGS) == []

    def test_proteinuria_uses_the_24_hour_measure(self) -> None:
        rows = [lab("urine_protein_24h", "0.4", "g/24h", 1), lab("urine_protein_24h", "600", "mg/24h", 2)]
        assert ids(flare_signals(rows, settings=SETTINGS), UP) == [rows[1].result_id]

    def test_a_preliminary_result_never_raises_a_signal(self) -> None:
        before = lab("c3", "0.95", "g/L", 1, low="0.9")
        pending = lab("c3", "0.7", "g/L", 2, low="0.9", status="preliminary")
        assert flare_signals([before, pending], settings=SETTINGS) == []
        final = lab("c3", "0.7", "g/L", 2, low="0.9", status="amended")
        assert ids(flare_signals([before, pending, final], settings=SETTINGS)) == [final.result_id]


class TestRiseFromNadir:
    def test_creatinine_rise_in_mg_dl_from_a_nadir_in_umol_l(self) -> None:
        # nadir 70 umol/L = 0.792 mg/dL; KDIGO: + 0.20 mg/dL -> 0.992 mg/dL = 87.7 umol/L
        base = [lab("creatinine", "120", "umol/L", 1), lab("creatinine", "70", "umol/L", 2)]
        met = lab("creatinine", "1.0", "mg/dL", 3)
        found = flare_signals([*base, met], settings=SETTINGS)
        assert ids(found, CREA) == [met.result_id]
        assert found[0].compared == "nadir" and found[0].compared_value == "70"
        assert flare_signals([*base, lab("creatinine", "0.95", "mg/dL", 3)], settings=SETTINGS) == []
        assert flare_signals([*base, lab("creatinine", "86", "umol/L", 3)], settings=SETTINGS) == []

    def test_the_band_follows_the_nadir(self) -> None:
        # nadir >= 2.0 mg/dL (177 umol/L) asks + 0.40 mg/dL (35.4 umol/L)
        base = [lab("creatinine", "300", "umol/L", 1), lab("creatinine", "200", "umol/L", 2)]
        assert flare_signals([*base, lab("creatinine", "230", "umol/L", 3)], settings=SETTINGS) == []
        assert len(flare_signals([*base, lab("creatinine", "236", "umol/L", 3)], settings=SETTINGS)) == 1

    def test_baseline_is_not_the_post_treatment_nadir(self) -> None:
        # the first (baseline) value 60 is before treatment: the nadir is 90 (month 2)
        rows = [lab("creatinine", "60", "umol/L", 1), lab("creatinine", "90", "umol/L", 2)]
        assert flare_signals([*rows, lab("creatinine", "100", "umol/L", 3)], settings=SETTINGS) == []

    def test_proteinuric_relapse_bands(self) -> None:
        # 24-h protein read as g/g: nadir 0.3 g -> 300 mg/g < 500: a rise to >= 1000 mg/g (from 2.5 g, not a
        # ten-fold fall, which the delta check would query)
        base = [lab("urine_protein_24h", "2.5", "g/24h", 1), lab("urine_protein_24h", "0.3", "g/24h", 2)]
        assert ids(flare_signals([*base, lab("urine_protein_24h", "0.9", "g/24h", 3)], settings=SETTINGS), PROT) == []
        met = lab("urine_protein_24h", "1.0", "g/24h", 3)
        assert ids(flare_signals([*base, met], settings=SETTINGS), PROT) == [met.result_id]
        # nadir 1.5 g (> 1000 mg/g): doubling
        base = [lab("urine_protein_24h", "3.0", "g/24h", 1), lab("urine_protein_24h", "1.5", "g/24h", 2)]
        assert ids(flare_signals([*base, lab("urine_protein_24h", "2.9", "g/24h", 3)], settings=SETTINGS), PROT) == []
        assert len(ids(flare_signals([*base, lab("urine_protein_24h", "3", "g/24h", 3)], settings=SETTINGS), PROT)) == 1
        # a protein/creatinine ratio in mg/mmol converts through creatinine's molar mass: 100 mg/mmol = 884 mg/g
        base = [lab("urine_pcr", "400", "mg/g", 1), lab("urine_pcr", "300", "mg/g", 2)]
        assert ids(flare_signals([*base, lab("urine_pcr", "100", "mg/mmol", 3)], settings=SETTINGS), PROT) == []
        met = lab("urine_pcr", "115", "mg/mmol", 3)  # 1017 mg/g
        assert ids(flare_signals([*base, met], settings=SETTINGS), PROT) == [met.result_id]

    def test_a_censored_value_never_proves_a_rise(self) -> None:
        base = [lab("creatinine", "120", "umol/L", 1), lab("creatinine", "70", "umol/L", 2)]
        assert flare_signals([*base, lab("creatinine", "<200", "umol/L", 3)], settings=SETTINGS) == []
        # a ">X" nadir proves no rise from it; the next uncensored value becomes the nadir
        rows = [lab("creatinine", "120", "umol/L", 1), lab("creatinine", ">70", "umol/L", 2)]
        assert flare_signals([*rows, lab("creatinine", "200", "umol/L", 3)], settings=SETTINGS) == []
        # a "<X" nadir is taken at X: the rise it proves is a lower bound
        rows = [lab("creatinine", "120", "umol/L", 1), lab("creatinine", "<50", "umol/L", 2)]
        assert len(flare_signals([*rows, lab("creatinine", "70", "umol/L", 3)], settings=SETTINGS)) == 1

    def test_a_standing_relapse_is_signalled_once(self) -> None:
        rows = [lab("creatinine", "120", "umol/L", 1), lab("creatinine", "70", "umol/L", 2)]
        rows += [lab("creatinine", "100", "umol/L", 3), lab("creatinine", "105", "umol/L", 4)]
        assert ids(flare_signals(rows, settings=SETTINGS)) == [rows[2].result_id]
        rows += [lab("creatinine", "75", "umol/L", 5), lab("creatinine", "101", "umol/L", 6)]
        assert ids(flare_signals(rows, settings=SETTINGS)) == [rows[2].result_id, rows[5].result_id]

    def test_a_missing_nadir_raises_nothing(self) -> None:
        assert flare_signals([lab("creatinine", "300", "umol/L", 1)], settings=SETTINGS) == []


# -- the trial's own data: the checks apply ---------------------------------------------------------------------


def _with_c3(value: str) -> Callable[[dict[str, list[dict[str, str]]]], None]:
    def edit(rows: dict[str, list[dict[str, str]]]) -> None:
        rows["visits.csv"].append(dict(subject_id="MSC-001", visit_code="M02", visit_date="2008-03-05"))
        row = {**rows["labs.csv"][9], "result_id": "L20", "visit_code": "M02", "value": value}
        rows["labs.csv"].append({**row, "collected_at": "2008-03-05T08:00:00+08:00"})

    return edit


class TestTrialData:
    def test_a_trial_row_raises_a_signal(self, dataset: Callable[..., Path]) -> None:
        trial = TrialSource.directory(dataset(_with_c3("0.85")), settings=SETTINGS)
        assert ids(flare_signals(trial=trial, settings=SETTINGS), LOW_C) == ["L20"]

    @pytest.mark.parametrize("value", ["0.01", "-0.1"])  # implausible (queried), impossible (refused)
    def test_queried_or_refused_rows_never_count(self, dataset: Callable[..., Path], value: str) -> None:
        trial = TrialSource.directory(dataset(_with_c3(value)), settings=SETTINGS)
        assert flare_signals(trial=trial, settings=SETTINGS) == []
        # nor does the same result pulled back from a server
        pulled = [lab("c3", "0.95", "g/L", 1, low="0.9"), lab("c3", "0.5", "g/L", 2, low="0.9", rid="L20")]
        trial = TrialSource.directory(dataset(_with_c3(value)), settings=SETTINGS)
        assert ids(flare_signals(pulled, trial=trial, settings=SETTINGS), LOW_C) == []


def _with_sledai(
    descriptors: str, total: str, *, c3: str | None = None
) -> Callable[[dict[str, list[dict[str, str]]]], None]:
    """A month-2 assessment of MSC-001 after totals of 2 (baseline, its CRF total) and 0 (month 1); ``c3``: a
    month-2 C3 row too."""

    def edit(rows: dict[str, list[dict[str, str]]]) -> None:
        rows["sledai.csv"][0]["reported_total"] = "2"  # the base rows' 13 -> 0 is itself a queried jump
        rows["visits.csv"].append(dict(subject_id="MSC-001", visit_code="M02", visit_date="2008-03-05"))
        base = rows["sledai.csv"][1]
        rows["sledai.csv"].append(
            {
                **base,
                "visit_code": "M02",
                "assessed_on": "2008-03-05",
                "descriptors": descriptors,
                "reported_total": total,
            }
        )
        if c3 is not None:
            row = {**rows["labs.csv"][9], "result_id": "L20", "visit_code": "M02", "value": c3}
            rows["labs.csv"].append({**row, "collected_at": "2008-03-05T08:00:00+08:00"})

    return edit


SFI = "selena-sfi-sledai-rise"
SFI_SEVERE = "selena-sfi-sledai-above-12"


class TestSledaiTotals:
    def test_a_rise_of_three_points_from_the_previous_total_raises_one(self, dataset: Callable[..., Path]) -> None:
        trial = TrialSource.directory(dataset(_with_sledai("arthritis", "4")), settings=SETTINGS)
        found = [s for s in flare_signals(trial=trial, settings=SETTINGS) if s.definition_id.startswith("selena")]
        assert [(s.definition_id, s.result_id, s.value, s.compared_value) for s in found] == [
            (SFI, "MSC-001/M02", "4", "0")
        ]
        assert found[0].result_system == "sledai" and "Petri" in found[0].source

    def test_a_rise_of_two_points_raises_nothing(self, dataset: Callable[..., Path]) -> None:
        trial = TrialSource.directory(dataset(_with_sledai("rash", "2")), settings=SETTINGS)
        assert ids(flare_signals(trial=trial, settings=SETTINGS), SFI) == []

    def test_a_total_the_checks_query_never_counts(self, dataset: Callable[..., Path]) -> None:
        # 0 -> 14 moves more than checks.yaml sledai_jump.max_change: queried, so neither definition may fire
        trial = TrialSource.directory(
            dataset(_with_sledai("arthritis;nephritis;rash;alopecia", "14")), settings=SETTINGS
        )
        found = flare_signals(trial=trial, settings=SETTINGS)
        assert ids(found, SFI) == [] and ids(found, SFI_SEVERE) == []

    def test_a_total_that_is_only_a_lower_bound_is_never_compared(self, dataset: Callable[..., Path]) -> None:
        # no CRF total and a refused C3 in the window: low complement is undecided, the total (6) a lower bound
        trial = TrialSource.directory(dataset(_with_sledai("arthritis;rash", "", c3="-0.1")), settings=SETTINGS)
        assert ids(flare_signals(trial=trial, settings=SETTINGS), SFI) == []
        # the same assessment with its C3 readable is final and does rise
        trial = TrialSource.directory(dataset(_with_sledai("arthritis;rash", "", c3="1.0")), settings=SETTINGS)
        assert ids(flare_signals(trial=trial, settings=SETTINGS), SFI) == ["MSC-001/M02"]

    def test_the_signal_implicates_the_assessment_observation_by_its_identifier(
        self, dataset: Callable[..., Path]
    ) -> None:
        trial = TrialSource.directory(dataset(_with_sledai("arthritis", "4")), settings=SETTINGS)
        signal = next(s for s in flare_signals(trial=trial, settings=SETTINGS) if s.definition_id == SFI)
        pack = SETTINGS.pack
        resource = signal_resource(signal, pack, load_flare_definitions(pack), study="NCT00698191")
        implicated = resource["implicated"] if isinstance(resource, dict) else resource.model_dump()["implicated"]
        systems = {ref["identifier"]["system"] for ref in implicated}
        assert systems == {pack.identifier_system("sledai", study="NCT00698191")}


# -- output, publishing, the command ----------------------------------------------------------------------------


def _on_server(fake: FakeFhir, signals: list[Signal]) -> None:
    """The Observations the signals implicate, as the server the table was pulled from holds them (each
    subject's Patient id is ``p-<subject>``)."""
    for signal in signals:
        for rid in (signal.observation_id, signal.compared_observation_id):
            subject = {"reference": f"Patient/p-{signal.subject_id}"}
            fake.store.setdefault("Patient", {})[f"p-{signal.subject_id}"] = {
                "resourceType": "Patient",
                "id": f"p-{signal.subject_id}",
            }
            fake.store.setdefault("Observation", {})[rid] = {
                "resourceType": "Observation",
                "id": rid,
                "subject": subject,
            }


def _signals() -> list[Signal]:
    rows = [lab("c3", "0.95", "g/L", 1, low="0.9"), lab("c3", "0.85", "g/L", 2, low="0.9")]
    rows += [
        lab("platelets", "150", "10^9/L", 1, subject="MSC-002"),
        lab("platelets", "80", "10^9/L", 3, subject="MSC-002"),
    ]
    return flare_signals(rows, settings=SETTINGS)


def test_write_signals_is_deterministic(tmp_path: Path) -> None:
    found = _signals()
    one, two = write_signals(found, tmp_path / "a.csv"), write_signals(list(reversed(found)), tmp_path / "b.csv")
    assert one.read_bytes() == two.read_bytes()
    lines = one.read_text(encoding="utf-8").splitlines()
    assert lines[0].split(",") == list(COLUMNS) and len(lines) == 1 + len(found) == 3


def test_the_resource_is_a_detected_issue_implicating_both_values() -> None:
    signal = _signals()[0]
    resource = signal_resource(signal, SETTINGS.pack, load_flare_definitions(SETTINGS.pack), study="NCT00698191")
    assert resource["resourceType"] == "DetectedIssue" and resource["code"]["coding"][0]["code"] == LOW_C
    assert resource["implicated"] == [
        {"reference": f"Observation/{signal.observation_id}"},
        {"reference": f"Observation/{signal.compared_observation_id}"},
    ]
    assert resource["identifier"][0]["value"] == signal.key and resource["reference"].startswith("https://")
    validate_resource(resource, "R4", validation="strict", pack=SETTINGS.pack)  # HAPI's $validate: no error either


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    opened = Journal(tmp_path / "journal.sqlite")
    yield opened
    opened.close()


def test_publish_is_idempotent_and_audited(fake: FakeFhir, journal: Journal, tmp_path: Path) -> None:
    found = _signals()
    _on_server(fake, found)
    audit = tmp_path / "audit.jsonl"
    with FhirClient(BASE) as client:
        first = publish_signals(client, found, settings=SETTINGS, study="NCT00698191", journal=journal, audit_log=audit)
        writes = fake.count("POST") + fake.count("PUT")
        second = publish_signals(
            client, found, settings=SETTINGS, study="NCT00698191", journal=journal, audit_log=audit
        )
    assert (len(first.created), first.written) == (2, 2)
    assert (second.written, len(second.unchanged)) == (0, 2)
    assert fake.count("POST") + fake.count("PUT") == writes  # the second publish wrote nothing
    assert len(fake.all("DetectedIssue")) == 2
    # each names the server's Patient of its subject, read from the Observation that raised it
    assert sorted(d["patient"]["reference"] for d in fake.all("DetectedIssue")) == [
        "Patient/p-MSC-001",
        "Patient/p-MSC-002",
    ]
    assert first.unresolved == []
    entries = [json.loads(line) for line in audit.read_text(encoding="utf-8").splitlines()]
    assert [(e["kind"], e["outcome"], e["counts"]["created"]) for e in entries] == [
        ("signals-publish", "complete", 2),
        ("signals-publish", "complete", 0),
    ]


def test_without_an_observation_the_patient_comes_from_the_research_subject(fake: FakeFhir, journal: Journal) -> None:
    found = [dataclasses.replace(s, observation_id="", compared_observation_id="") for s in _signals()]
    system = SETTINGS.pack.identifier_system("subject", study="NCT00698191")
    fake.store["ResearchSubject"] = {
        "rs1": {
            "resourceType": "ResearchSubject",
            "id": "rs1",
            "identifier": [{"system": system, "value": "MSC-001"}],
            "individual": {"reference": "Patient/p1"},
        }
    }
    fake.store["Patient"] = {"p1": {"resourceType": "Patient", "id": "p1"}}
    with FhirClient(BASE) as client:
        report = publish_signals(
            client, found, settings=SETTINGS, study="NCT00698191", journal=journal, audit_log=False
        )
    patients = {d["patient"]["display"]: d["patient"].get("reference") for d in fake.all("DetectedIssue")}
    assert patients == {"MSC-001": "Patient/p1", "MSC-002": None}  # MSC-002: named in words only
    assert report.unresolved == ["MSC-002"]


def test_a_changed_signal_is_updated_in_place(fake: FakeFhir, journal: Journal) -> None:
    found = _signals()
    _on_server(fake, found)
    with FhirClient(BASE) as client:
        publish_signals(client, found, settings=SETTINGS, study="NCT00698191", journal=journal, audit_log=False)
        changed = [Signal(**{**found[0].__dict__, "title": "reworded"}), found[1]]
        report = publish_signals(
            client, changed, settings=SETTINGS, study="NCT00698191", journal=journal, audit_log=False
        )
    assert (len(report.updated), len(report.unchanged)) == (1, 1) and len(fake.all("DetectedIssue")) == 2


def test_placeholder_systems_are_refused_off_loopback(journal: Journal, tmp_path: Path) -> None:
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(500)

    audit = tmp_path / "audit.jsonl"
    client = FhirClient("https://hospital.example/fhir", transport=httpx.MockTransport(answer))
    with client, pytest.raises(SiteProfileError):
        publish_signals(client, _signals(), settings=SETTINGS, study="NCT00698191", journal=journal, audit_log=audit)
    assert requests == []
    assert json.loads(audit.read_text(encoding="utf-8"))["outcome"] == "failed: SiteProfileError"


def test_the_command_prints_writes_and_publishes(fake: FakeFhir, tmp_path: Path) -> None:
    rows = [lab("c3", "0.95", "g/L", 1, low="0.9"), lab("c3", "0.85", "g/L", 2, low="0.9")]
    table = write_rows(rows, tmp_path / "labs.csv", PulledLab)
    _on_server(fake, flare_signals(rows, settings=SETTINGS))
    assert read_pulled(table) == rows
    out = tmp_path / "signals.csv"
    args = ["signals", "--table", str(table), "-o", str(out), "--journal", str(tmp_path / "j.sqlite")]
    result = CliRunner().invoke(app, [*args, "--publish", "--server", BASE])
    assert result.exit_code == 0, result.output
    assert "New low complement" in result.output and "1 created" in result.output
    assert len(out.read_text(encoding="utf-8").splitlines()) == 2
    again = CliRunner().invoke(app, [*args, "--publish", "--server", BASE])
    assert again.exit_code == 0 and "0 created" in again.output and "1 unchanged" in again.output
    assert len(fake.all("DetectedIssue")) == 1


def test_the_command_needs_an_input() -> None:
    result = CliRunner().invoke(app, ["signals"])
    assert result.exit_code == 2 and "--table" in result.output


# -- the report: a marker on the timeline -----------------------------------------------------------------------


def test_the_report_marks_each_signal_on_its_subjects_timeline(tmp_path: Path) -> None:
    from support import example_subset

    from fhir_lupus.model import load_trial
    from fhir_lupus.report import load_report_definition, write_report
    from fhir_lupus.report._figures import subject_figure
    from fhir_lupus.report._series import SignalMarker, collect_series
    from fhir_lupus.terminology import LabCatalogue

    data, _ = load_trial(example_subset(tmp_path / "data", 2, first=1))
    result = write_report(TrialSource.loaded(data), tmp_path / "r.html")
    expected = flare_signals(trial=TrialSource.loaded(data), settings=SETTINGS)
    assert expected and list(result.signals) == expected

    definition = load_report_definition()
    subjects, _ = collect_series(data, definition, LabCatalogue(SETTINGS.pack))
    c4_panel = next(i for i, s in enumerate(definition.series) if s.analyte == "c4")
    figure = subject_figure(subjects[0], definition, [SignalMarker(2.0, "c4"), SignalMarker(3.0, "platelets")])
    stars = [i for i, ax in enumerate(figure.axes) for line in ax.lines if line.get_marker() == "*"]
    assert stars == [0, c4_panel]  # platelets have no panel: the first one takes it
    assert not [
        line for ax in subject_figure(subjects[0], definition).axes for line in ax.lines if line.get_marker() == "*"
    ]
