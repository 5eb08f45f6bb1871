"""Benchmark: how soon ``fhir-lupus watch`` picks up a new lab written on HAPI, and that a restart loses nothing.

    scripts/fhir-server start hapi-subscriptions        # HAPI with REST-hook subscriptions on (18083)
    .venv/bin/python bench/bench_watch.py [--server URL] [--subjects 3] [--gap 1.0] [--poll 120] [--settle 310]

The example trial is pushed under identifier systems of its own (a copy of mappings/ with a unique canonical
base, as bench_sync.py does), then ``fhir-lupus watch`` runs beside this script as a user runs it (a
subprocess, REST-hook Subscription with the Observation as payload, ``--poll`` as the net). Once the push is
``--settle`` seconds old (out of the incremental pull's overlap window: the steady state), for the ``--subjects``
subjects still in follow-up the longest (the last by their last visit), the script writes a month of new results
as the hospital's lab system would (its own identifier system, the LOINC code and UCUM unit of
mappings/terminology/labs.yaml, a reference range), one result every ``--gap`` seconds, and for each one records
when its row appears in watch's table: the pick-up time. Then watch is killed (SIGKILL: no clean-up at all),
another month is written while it is down, and watch is started again: its first pull must bring every one of
them. Last, the table is checked for duplicate observation ids, and the signals watch wrote are compared with
``flare_signals`` over the final table (the same definitions, run here).

Prints one JSON object: pick-up times (median, max), rows caught up after the restart, signals, duplicates.
Nothing here is a test: the numbers go to bench/README.md by hand.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

from fhir_lupus import load_trial
from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.pull import DEFAULT_OVERLAP_SECONDS
from fhir_lupus.push import push_trial
from fhir_lupus.settings import Settings
from fhir_lupus.signals import flare_signals, read_pulled
from fhir_lupus.source import TrialSource

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support import EXAMPLE, hospital_lab, isolated_mappings_copy  # noqa: E402

# A month of results: analyte, value, unit, reference range; values chosen so that some definitions may fire
# (a low C3, fewer platelets, more protein), against whatever the subject had before.
MONTH = (
    ("c3", 0.62, "g/L", (0.9, 1.8)),
    ("c4", 0.08, "g/L", (0.1, 0.4)),
    ("platelets", 88, "10*9/L", (125, 350)),
    ("wbc", 3.6, "10*9/L", (3.5, 9.5)),
    ("creatinine", 1.9, "mg/dL", (0.5, 1.1)),
    ("urine_protein_24h", 1.4, "g/(24.h)", (0, 0.15)),
)


def table_ids(path: Path) -> list[str]:
    """The observation ids in watch's table (it is replaced atomically, so a read never sees half of it)."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            return [row["observation_id"] for row in csv.DictReader(handle)]
    except FileNotFoundError:
        return []


def start_watch(work: Path, server: str, mappings: Path, poll: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FHIR_LUPUS_WATCH_SECRET": secrets.token_hex(16)}
    command = [sys.executable, "-m", "fhir_lupus.cli", "watch", str(EXAMPLE), "--server", server]
    command += ["-o", str(work / "labs.csv"), "--signals", str(work / "signals.csv"), "--poll", str(poll)]
    command += ["--journal", str(work / "journal.sqlite"), "--mappings", str(mappings)]
    log = (work / "watch.log").open("ab")
    return subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for(path: Path, wanted: set[str], timeout: float) -> dict[str, float]:
    """When each of ``wanted`` first appeared in the table (monotonic clock), within ``timeout`` seconds."""
    seen: dict[str, float] = {}
    end = time.monotonic() + timeout
    while len(seen) < len(wanted) and time.monotonic() < end:
        now = time.monotonic()
        for oid in set(table_ids(path)) & wanted:
            seen.setdefault(oid, now)
        time.sleep(0.05)
    return seen


def quiet(log: Path, seconds: float) -> None:
    """Wait until watch has started no pull for ``seconds``: HAPI matches writes against a Subscription from a
    backlog, so the push just made arrives as a flood of notifications once ours is active (coalesced into a
    few pulls); the pick-up time is measured after it."""
    last, size = time.monotonic(), -1
    while time.monotonic() - last < seconds:
        text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        if text.count("pull of") != size or "active" not in text:
            last, size = time.monotonic(), text.count("pull of")
        time.sleep(0.5)


def follow_up_patients(client: FhirClient, settings: Settings, count: int) -> list[tuple[str, str, date]]:
    """(subject id, Patient reference, last visit) of the ``count`` subjects whose last visit is latest (the
    Patient read from the server: the ResearchSubject's individual)."""
    data, _ = load_trial(EXAMPLE, pack=settings.pack)
    last: dict[str, date] = {}
    for visit in data.visits:
        subject = visit.record.subject_id
        last[subject] = max(last.get(subject, visit.record.visit_date), visit.record.visit_date)
    system = settings.pack.identifier_system("subject", study=data.study.nct_id)
    chosen = []
    for subject in sorted(last, key=lambda s: last[s])[-count:]:
        found = next(client.search("ResearchSubject", {"identifier": f"{system}|{subject}"}), {})
        chosen.append((subject, (found.get("individual") or {}).get("reference", ""), last[subject]))
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="http://127.0.0.1:18083/fhir")
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between two new results")
    parser.add_argument("--poll", type=float, default=120.0, help="watch's --poll")
    parser.add_argument(
        "--settle",
        type=float,
        default=DEFAULT_OVERLAP_SECONDS + 10,
        help="seconds after the push before the first new result (0: measure inside the overlap window)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-watch-") as scratch:
        work = Path(scratch)
        mappings = isolated_mappings_copy(work / "mappings", uuid.uuid4().hex[:8])
        settings = Settings.from_mappings(mappings)
        client = FhirClient(args.server)
        with Journal(work / "journal.sqlite") as journal:
            data, report = load_trial(EXAMPLE, pack=settings.pack)
            started = time.monotonic()
            push_trial(TrialSource.loaded(data, report), client, journal, source="bench", settings=settings)
            push_seconds = time.monotonic() - started
            pushed_at = time.monotonic()
            chosen = follow_up_patients(client, settings, args.subjects)
        missing = [s for s, ref, _ in chosen if not ref]
        if missing:
            raise SystemExit(f"no ResearchSubject with a Patient on the server for {missing}")
        watcher = start_watch(work, args.server, mappings, args.poll)
        table = work / "labs.csv"
        end = time.monotonic() + 300
        while not table.exists() and time.monotonic() < end:
            time.sleep(0.2)
        quiet(work / "watch.log", 15)
        # steady state: an incremental pull asks again for the last DEFAULT_OVERLAP_SECONDS before its mark (and
        # reads the deletions of that span), so until the push is that old every pull re-reads all of it
        settle = pushed_at + args.settle - time.monotonic()
        if settle > 0:
            time.sleep(settle)
        pickups: list[float] = []
        for month in (1, 2):
            if month == 2:
                watcher.send_signal(signal.SIGKILL)
                watcher.wait()
            written: dict[str, float] = {}
            for _subject, patient, last in chosen:
                for analyte, value, unit, ref in MONTH:
                    day = last + timedelta(days=30 * month)
                    created = client.create(hospital_lab(patient, analyte, value, unit, day, ref=ref, label="BENCH"))
                    written[created["id"]] = time.monotonic()
                    if month == 1:
                        seen = wait_for(table, {created["id"]}, 60)
                        if created["id"] in seen:
                            pickups.append(seen[created["id"]] - written[created["id"]])
                        time.sleep(args.gap)
            if month == 2:
                down = time.monotonic()
                watcher = start_watch(work, args.server, mappings, args.poll)
                caught = wait_for(table, set(written), 300)
                catch_up_seconds = max(caught.values(), default=down) - down
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(timeout=60)
        ids = table_ids(table)
        rows = read_pulled(table)
        trial = TrialSource.loaded(*load_trial(EXAMPLE, pack=settings.pack))  # watch reads the trial too
        expected = {s.key for s in flare_signals(rows, trial=trial, settings=settings)}
        with (work / "signals.csv").open(encoding="utf-8", newline="") as handle:
            written_signals = {
                f"{r['definition_id']}/{r['subject_id']}/{r['result_id']}" for r in csv.DictReader(handle)
            }
        result = {
            "server": args.server,
            "push_seconds": round(push_seconds, 1),
            "subjects": [s for s, _, _ in chosen],
            "new_results": len(pickups),
            "pickup_median_s": round(statistics.median(pickups), 2) if pickups else None,
            "pickup_max_s": round(max(pickups), 2) if pickups else None,
            "pickups_s": [round(p, 2) for p in pickups],
            "settle_s": args.settle,
            "poll_s": args.poll,
            "caught_up_after_restart": f"{len(caught)}/{len(written)}",
            "catch_up_seconds": round(catch_up_seconds, 1),
            "duplicate_rows": len(ids) - len(set(ids)),
            "signals_written": len(written_signals),
            "signals_expected": len(expected),
            "signals_agree": written_signals == expected,
            "watch_exit": watcher.returncode,
        }
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
