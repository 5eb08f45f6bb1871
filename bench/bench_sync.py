"""Benchmark: push, re-push, dry run and pull of the example trial against a running FHIR server.

    .venv/bin/python bench/bench_sync.py http://127.0.0.1:18103/fhir [--chunk-size 500] [--subjects N]

Every run writes under identifier systems of its own (a copy of mappings/ with a unique canonical base), so
the first push creates everything even on a server that holds earlier runs; the journal is fresh, so the
first push also finds the server's Bundle size limits. Results are recorded in bench/README.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

from fhir_lupus import load_trial
from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.pull import pull_study
from fhir_lupus.push import PushOptions, dry_run_trial, push_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support import EXAMPLE, example_subset, isolated_mappings_copy  # noqa: E402


def isolated_mappings(scratch: Path) -> Path:
    """Every URI of ours, the study's identifier systems included, unique to this run."""
    return isolated_mappings_copy(scratch / "mappings", f"b/{uuid.uuid4().hex[:12]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("server")
    parser.add_argument("--chunk-size", type=int, default=500)
    parser.add_argument("--subjects", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        mappings = isolated_mappings(scratch)
        data_dir = EXAMPLE if args.subjects >= 20 else example_subset(scratch / "data", args.subjects)
        settings = Settings.from_mappings(mappings)
        data, report = load_trial(data_dir, pack=settings.pack)
        timings = []
        with FhirClient(args.server, timeout=600) as client, Journal(scratch / "journal.sqlite") as journal:

            def timed(name: str, step: object) -> None:
                started = time.perf_counter()
                detail = step() if callable(step) else step
                timings.append((name, time.perf_counter() - started, detail))

            push = dict(source="bench", options=PushOptions(chunk_size=args.chunk_size), settings=settings)
            timed(
                "push (all new)",
                lambda: push_trial(TrialSource.loaded(data, report), client, journal, **push).summary(),
            )
            timed(
                "push again (journal: nothing sent)",
                lambda: push_trial(TrialSource.loaded(data, report), client, journal, **push).summary(),
            )
            timed(
                "dry run (every key looked up)",
                lambda: dict(dry_run_trial(TrialSource.loaded(data, report), client, settings=settings).counts),
            )
            timed(
                "pull (all)",
                lambda: (lambda r: f"{r.total_rows} rows, {r.total_unmapped} set aside")(
                    pull_study(client, journal, data.study, since=None, settings=settings)
                ),
            )
            timed(
                "pull again (--since auto)",
                lambda: (lambda r: f"{len(r.rows)} new, {r.unchanged} fetched again unchanged")(
                    pull_study(client, journal, data.study, since="auto", settings=settings)
                ),
            )
    for name, seconds, detail in timings:
        print(f"{name:36s} {seconds:7.1f} s   {detail}")


if __name__ == "__main__":
    main()
