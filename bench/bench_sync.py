"""Benchmark: push, re-push, dry run and pull of the example trial against a running FHIR server.

    .venv/bin/python bench/bench_sync.py http://127.0.0.1:18103/fhir [--chunk-size 500]

Uses a fresh journal, so the first push sends everything. Results are recorded in bench/README.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from fhir_lupus import load_trial
from fhir_lupus.client import FhirClient
from fhir_lupus.sync import Journal, dry_run_trial, pull_study, push_trial

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "nct00698191"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("server")
    parser.add_argument("--chunk-size", type=int, default=500)
    args = parser.parse_args()
    data, report = load_trial(EXAMPLE)
    with (
        tempfile.TemporaryDirectory() as scratch,
        FhirClient(args.server, timeout=600) as client,
        Journal(Path(scratch) / "journal.sqlite") as journal,
    ):
        timings = []
        started = time.perf_counter()
        first = push_trial(data, report, client, journal, source="bench", chunk_size=args.chunk_size)
        timings.append(("push (all new or matched)", time.perf_counter() - started, first.summary()))
        started = time.perf_counter()
        second = push_trial(data, report, client, journal, source="bench", chunk_size=args.chunk_size)
        timings.append(("push again (journal: nothing sent)", time.perf_counter() - started, second.summary()))
        started = time.perf_counter()
        preview = dry_run_trial(data, report, client)
        timings.append(("dry run", time.perf_counter() - started, dict(preview.counts)))
        started = time.perf_counter()
        pulled = pull_study(client, journal, data.study, since=None)
        timings.append(
            ("pull", time.perf_counter() - started, f"{len(pulled.rows)} rows, {len(pulled.unmapped)} unmapped")
        )
    for name, seconds, detail in timings:
        print(f"{name:36s} {seconds:7.1f} s   {detail}")


if __name__ == "__main__":
    main()
