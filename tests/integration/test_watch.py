"""``fhir-lupus watch`` on Medplum as we run it: it lists Subscription but never activates one nor delivers, so
watch says it relies on polling, and a lab written on the server while watch runs reaches the table through
``--poll``; the Subscription is gone after SIGTERM. (HAPI's delivery is tested where its subscription switch is.)

No timed assertion: the test waits generously for each state, the pick-up time is a bench figure.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from support import hospital_lab

from fhir_lupus import TrialData, load_trial
from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.push import push_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
GENEROUS = 180.0


def _key(observation: dict[str, Any]) -> str:
    """The result id pull gives a hospital-written lab: its identifier, system|value."""
    identifier = observation["identifier"][0]
    return f"{identifier['system']}|{identifier['value']}"


def _result_ids(path: Path) -> set[str]:
    if not path.exists():
        return set()
    with path.open(encoding="utf-8", newline="") as handle:
        return {row["result_id"] for row in csv.DictReader(handle)}


def _until(condition: Callable[[], bool], what: str, watch: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + GENEROUS
    while not condition():
        if watch.poll() is not None:
            raise AssertionError(f"watch ended ({watch.returncode}) before {what}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {GENEROUS:.0f} s:\n{log.read_text()}")
        time.sleep(0.5)


@dataclass
class Watched:
    """One subject pushed under this test's systems, and ``fhir-lupus watch`` running on it as a subprocess."""

    data: TrialData
    patient: str
    table: Path
    log: Path
    process: subprocess.Popen[bytes]

    def until(self, condition: Callable[[], bool], what: str) -> None:
        _until(condition, what, self.process, self.log)

    def hospital_creatinine(self, client: FhirClient, label: str) -> dict[str, Any]:
        """A creatinine the hospital's lab system writes for the subject, three months after baseline."""
        baseline = next(v.record.visit_date for v in self.data.visits if v.record.visit_code == "BL")
        when = self.data.study.due_date(baseline, 3) + timedelta(days=1)
        return client.create(hospital_lab(f"Patient/{self.patient}", "creatinine", 1.2, "mg/dL", when, label=label))

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=GENEROUS)


def _watch(
    client: FhirClient, mappings: Path, settings: Settings, subset: Callable[..., Path], tmp_path: Path, *extra: str
) -> Watched:
    """Push one subject, start watch on it (``extra``: more options) and wait for its first pull."""
    data_dir = subset(1)
    data, report = load_trial(data_dir, pack=settings.pack)
    journal_path = tmp_path / "journal.sqlite"
    with Journal(journal_path) as journal:
        push_trial(TrialSource.loaded(data, report), client, journal, source="test", settings=settings)
        patient = next(e.server_id for e in journal.entries(client.base_url).values() if e.resource_type == "Patient")
    table, log = tmp_path / "labs.csv", tmp_path / "watch.log"
    args = [sys.executable, "-m", "fhir_lupus.cli", "watch", str(data_dir), "--server", client.base_url]
    args += ["-o", str(table), "--journal", str(journal_path), "--mappings", str(mappings)]
    args += ["--listen", "127.0.0.1:0", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with log.open("wb") as sink:
        process = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    watched = Watched(data, str(patient), table, log, process)
    try:
        ours = len(data.labs) + len(data.treg)
        watched.until(lambda: len(_result_ids(table)) >= ours, "first pull")
    except BaseException:
        watched.stop()
        raise
    return watched


def _tagged(client: FhirClient, settings: Settings, data: TrialData) -> list[dict[str, Any]]:
    """The Subscriptions on the server with this test's watch tag (its system is this test's alone)."""
    tag = settings.pack.identifier_system("watch", study=data.study.nct_id)
    return [
        r
        for r in client.search("Subscription")
        if any(t.get("system") == tag for t in (r.get("meta") or {}).get("tag", []))
    ]


@pytest.mark.parametrize("server_url", ["medplum"], indirect=True)
def test_watch_polls_medplum_picks_up_a_new_lab_and_removes_its_subscription(
    client: FhirClient,
    isolated_mappings: Path,
    isolated_settings: Settings,
    subset: Callable[..., Path],
    tmp_path: Path,
) -> None:
    options = ("--poll", "2", "--activation-timeout", "3")
    watched = _watch(client, isolated_mappings, isolated_settings, subset, tmp_path, *options)
    try:
        watched.until(lambda: "relying on the periodic pull" in watched.log.read_text(), "polling note")
        key = _key(watched.hospital_creatinine(client, "WATCH"))
        watched.until(lambda: key in _result_ids(watched.table), "new lab in the table")
    finally:
        code = watched.stop()
    assert code == 0, watched.log.read_text()
    assert _tagged(client, isolated_settings, watched.data) == []
    assert "Subscription/" in watched.log.read_text() and "removed" in watched.log.read_text()


def test_watch_on_hapi_is_notified_of_a_new_lab_and_of_its_deletion(
    hapi_subscriptions_url: str,
    isolated_mappings: Path,
    isolated_settings: Settings,
    subset: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """HAPI with its REST-hook subscriptions on (servers/hapi, hapi.subscriptions=rest-hook): watch registers,
    HAPI activates the Subscription, a hospital-written lab reaches the table through a notification of its
    subject (``--poll`` is far beyond the wait, so only a notification can bring it), its deletion is notified
    too and removes the row, and the Subscription is gone after SIGTERM."""
    with FhirClient(hapi_subscriptions_url, timeout=120) as client:
        options = ("--poll", "3600", "--signals", str(tmp_path / "signals.csv"))
        watched = _watch(client, isolated_mappings, isolated_settings, subset, tmp_path, *options)
        try:
            active = lambda: any(r.get("status") == "active" for r in _tagged(client, isolated_settings, watched.data))  # noqa: E731
            watched.until(active, "an active Subscription")
            lab = watched.hospital_creatinine(client, "WATCH-HAPI")
            key = _key(lab)
            watched.until(lambda: key in _result_ids(watched.table), "new lab in the table")
            # the notification named its subject (the pull's line follows its table by a moment)
            watched.until(lambda: "pull of 1 subject(s)" in watched.log.read_text(), "the pull of that subject")
            client.delete("Observation", lab["id"])
            watched.until(lambda: key not in _result_ids(watched.table), "deleted lab removed from the table")
            assert "removed" in watched.log.read_text()
        finally:
            code = watched.stop()
        assert code == 0, watched.log.read_text()
        assert _tagged(client, isolated_settings, watched.data) == []  # the Subscription is gone
        assert (tmp_path / "signals.csv").exists()
