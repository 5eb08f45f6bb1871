"""Push and pull against real FHIR servers (HAPI FHIR JPA, Medplum), each test on its own identifiers."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fhir_lupus import load_trial
from fhir_lupus.client import FhirClient
from fhir_lupus.model import TrialData
from fhir_lupus.pipeline import map_trial
from fhir_lupus.sync import Journal, dry_run, dry_run_trial, pull_study, push_resources, push_trial
from fhir_lupus.sync.roundtrip import compare_round_trip
from fhir_lupus.terminology import LabCatalogue, load_pack

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nct00698191"
pytestmark = pytest.mark.integration


def load(mappings: Path) -> tuple[TrialData, object]:
    data, report = load_trial(EXAMPLE, mappings_dir=mappings)
    assert report.rejects == []
    return data, report


def test_push_is_idempotent_and_pull_returns_what_was_pushed(
    client: FhirClient, isolated_mappings: Path, tmp_path: Path
) -> None:
    data, report = load(isolated_mappings)
    expected = len(map_trial(data, report, mappings_dir=isolated_mappings).resources)

    before = dry_run_trial(data, report, client, mappings_dir=isolated_mappings)
    assert before.counts["create"] >= expected - 1  # everything new (the shared project CodeSystem may exist)
    assert before.counts["conflict"] == 0

    with Journal(tmp_path / "journal.sqlite") as journal:
        first = push_trial(data, report, client, journal, source="test", mappings_dir=isolated_mappings)
        assert first.conflicts == [] and first.written == expected and first.provenance
        after = dry_run_trial(data, report, client, mappings_dir=isolated_mappings)
        assert after.counts == {"unchanged": expected}, [i for i in after.items if i.action != "unchanged"][:3]

        second = push_trial(data, report, client, journal, source="test", mappings_dir=isolated_mappings)
        assert second.written == 0 and second.unchanged == expected and second.provenance is None

        pulled = pull_study(client, journal, data.study, since=None, mappings_dir=isolated_mappings)
        trip = compare_round_trip(data, pulled.rows, LabCatalogue(load_pack(isolated_mappings)))
        assert trip.exact, (trip.missing[:5], trip.different[:5], trip.extra[:5])
        assert trip.matched == len(data.labs) == 8091
        assert pulled.subjects == 20
        treg = [u for u in pulled.unmapped if "treg-percent" in u.codes]
        assert len(treg) == len(data.treg)  # not a catalogue LOINC: kept aside, not dropped
        assert {r.visit_code for r in pulled.rows if r.window == "in-window"} >= {"BL", "M01", "M12", "M24"}

        incremental = pull_study(client, journal, data.study, since="auto", mappings_dir=isolated_mappings)
        assert incremental.rows == [] and incremental.since == pulled.high_water


def test_changed_value_is_the_only_thing_sent_and_pulled_again(
    client: FhirClient, isolated_mappings: Path, tmp_path: Path
) -> None:
    data, report = load(isolated_mappings)
    with Journal(tmp_path / "journal.sqlite") as journal:
        push_trial(data, report, client, journal, source="test", mappings_dir=isolated_mappings)
        pull_study(client, journal, data.study, since=None, mappings_dir=isolated_mappings)

        changed = tmp_path / "changed"
        changed.mkdir()
        for source in EXAMPLE.iterdir():
            text = source.read_text(encoding="utf-8")
            if source.name == "labs.csv":
                text = text.replace("L-MSC-001-BL-C3,MSC-001,BL,c3,0.53,", "L-MSC-001-BL-C3,MSC-001,BL,c3,0.55,")
            (changed / source.name).write_text(text, encoding="utf-8")
        data2, report2 = load_trial(changed, mappings_dir=isolated_mappings)
        time.sleep(1.1)  # _lastUpdated is compared at the server's precision
        third = push_trial(data2, report2, client, journal, source="test", mappings_dir=isolated_mappings)
        # only the C3 result changed: 0.55 g/L is still below the range, so the BL SLEDAI stays the same
        assert third.written == 1 and third.updated == 1
        delta = pull_study(client, journal, data2.study, since="auto", mappings_dir=isolated_mappings)
        assert [(r.result_id, r.value, r.unit) for r in delta.rows] == [("L-MSC-001-BL-C3", "0.55", "g/L")]


def test_push_killed_midway_resumes_without_loss_or_duplicates(
    server_url: str, client: FhirClient, isolated_mappings: Path, tmp_path: Path
) -> None:
    journal_path = tmp_path / "journal.sqlite"
    command = [
        sys.executable,
        "-m",
        "fhir_lupus.cli",
        "push",
        str(EXAMPLE),
        "--server",
        server_url,
        "--journal",
        str(journal_path),
        "--chunk-size",
        "300",
        "--mappings",
        str(isolated_mappings),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    recorded = 0
    while time.monotonic() < deadline and process.poll() is None:
        recorded = _journal_rows(journal_path)
        if recorded >= 600:  # two chunks confirmed: kill it in the middle of the rest
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the push finished before it could be killed"
    data, report = load(isolated_mappings)
    expected = len(map_trial(data, report, mappings_dir=isolated_mappings).resources)
    partial = _journal_rows(journal_path)
    assert 600 <= partial < expected

    with Journal(journal_path) as journal:
        assert [status for _, status, _ in journal.pushes(client.base_url)] == ["running"]
        resumed = push_trial(data, report, client, journal, source="test", mappings_dir=isolated_mappings)
        assert resumed.unchanged == partial and resumed.written == expected - partial
        assert [status for _, status, _ in journal.pushes(client.base_url)] == ["running", "completed"]
    state = dry_run_trial(data, report, client, mappings_dir=isolated_mappings)
    assert state.counts == {"unchanged": expected}  # each identifier once on the server: nothing lost or doubled


def test_dry_run_writes_nothing(client: FhirClient, isolated_mappings: Path) -> None:
    data, report = load(isolated_mappings)
    first = dry_run_trial(data, report, client, mappings_dir=isolated_mappings)
    second = dry_run_trial(data, report, client, mappings_dir=isolated_mappings)
    assert first.counts == second.counts and first.counts["create"] >= 9000


def test_multiple_matches_are_reported_with_server_ids_and_held_back(
    client: FhirClient, isolated_mappings: Path, tmp_path: Path
) -> None:
    pack = load_pack(isolated_mappings)
    system = pack.identifier_system("organization", study="NCT00698191")
    twins = []
    for _ in range(2):
        created = client.create(
            {"resourceType": "Organization", "identifier": [{"system": system, "value": "dup"}], "name": "twin"}
        )
        twins.append(created["id"])
    org = {
        "resourceType": "Organization",
        "id": "o-1",
        "identifier": [{"system": system, "value": "dup"}],
        "name": "ours",
    }
    location = {
        "resourceType": "Location",
        "id": "l-1",
        "identifier": [{"system": system, "value": "loc"}],
        "name": "ward",
        "managingOrganization": {"reference": "Organization/o-1"},
    }
    other = {
        "resourceType": "Organization",
        "id": "o-2",
        "identifier": [{"system": system, "value": "solo"}],
        "name": "fine",
    }
    preview = dry_run([org, location, other], client)
    assert {(i.business_key.split("|")[1], i.action) for i in preview.items} == {
        ("dup", "conflict"),
        ("loc", "create"),
        ("solo", "create"),
    }
    assert sorted(next(i for i in preview.items if i.action == "conflict").server_ids) == sorted(twins)
    with Journal(tmp_path / "journal.sqlite") as journal:
        report = push_resources([org, location, other], client, journal, source="test", mapping_version="t")
    reasons = {business_key_value(c.business_key): c for c in report.conflicts}
    assert sorted(reasons["dup"].server_ids) == sorted(twins)
    assert reasons["loc"].reason == "refers to a resource held back"
    assert report.created == 1  # only the unrelated organization
    names = [r["name"] for r in client.search("Organization", {"identifier": f"{system}|dup"})]
    assert sorted(names) == ["twin", "twin"]  # neither twin was overwritten


def business_key_value(key: str) -> str:
    return key.split("|", 1)[1]


def _journal_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM resource").fetchone()[0])
    except sqlite3.Error:
        return 0
