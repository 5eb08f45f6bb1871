"""Benchmark: pull by search against pull --bulk (patient and system level) on a HAPI started for it.

    .venv/bin/python bench/bench_bulk.py --subjects 5,20 --repeat 3 [--port 18081] [--poll-wait 1]

For each subject count, a HAPI FHIR JPA server (servers/hapi as shipped, H2 in memory) is started empty on
``--port``, the example trial's first N subjects are pushed once, and the three pulls are run in turn, each
with a journal of its own (a full pull, ``since=None``), ``--repeat`` times, interleaved. The tables are
compared each time: a pull that differs from the search pull stops the bench. HAPI 8.8 answers every poll with
``Retry-After: 120``; ``--poll-wait`` is what the bulk pulls honour of it (``--poll-max-wait`` of the CLI), so
the bulk times include up to that much waiting after the job is done. Results: bench/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench_push import fresh_hapi

from fhir_lupus import load_trial
from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.pull import BulkOptions, pull_study
from fhir_lupus.push import push_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support import EXAMPLE, example_subset, isolated_mappings_copy  # noqa: E402


def run(subjects: list[int], repeat: int, port: int, poll_wait: float) -> list[dict[str, Any]]:
    rows = []
    for count in subjects:
        with tempfile.TemporaryDirectory() as scratch_name:
            scratch = Path(scratch_name)
            mappings = isolated_mappings_copy(scratch / "mappings", f"b/{uuid.uuid4().hex[:12]}")
            data_dir = EXAMPLE if count >= 20 else example_subset(scratch / "data", count)
            settings = Settings.from_mappings(mappings)
            data, report = load_trial(data_dir, pack=settings.pack)
            with fresh_hapi(port, scratch / "hapi") as url, FhirClient(url, timeout=600) as client:
                with Journal(scratch / "push.sqlite") as journal:
                    push_trial(TrialSource.loaded(data, report), client, journal, source="bench", settings=settings)
                ways: dict[str, BulkOptions | None] = {
                    "search": None,
                    "bulk, patient level": BulkOptions(max_poll_wait=poll_wait),
                    "bulk, system level": BulkOptions(level="system", max_poll_wait=poll_wait),
                }
                times: dict[str, list[float]] = {name: [] for name in ways}
                waited: dict[str, list[float]] = {name: [] for name in ways}
                for turn in range(repeat):
                    reference: str | None = None
                    for name, bulk in ways.items():
                        output = scratch / f"{turn}-{len(times[name])}-{name.replace(' ', '')}.csv"
                        started = time.perf_counter()
                        with Journal(output.with_suffix(".sqlite")) as journal:
                            result = pull_study(
                                client, journal, data.study, since=None, output=output, settings=settings, bulk=bulk
                            )
                        times[name].append(time.perf_counter() - started)
                        waited[name].append(result.bulk.waited if result.bulk else 0.0)
                        table = output.read_text(encoding="utf-8")
                        reference = reference or table
                        if table != reference:
                            raise SystemExit(f"{name}: the table differs from the search pull's ({count} subjects)")
                for name in ways:
                    rows.append(
                        {
                            "subjects": count,
                            "rows": result.total_rows,
                            "way": name,
                            "median_s": statistics.median(times[name]),
                            "runs": times[name],
                            "waited_s": statistics.median(waited[name]),
                        }
                    )
                    print(rows[-1], flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| subjects | lab rows | pull | median wall time | of which polling waits | runs |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        runs = ", ".join(f"{value:.1f}" for value in row["runs"])
        lines.append(
            f"| {row['subjects']} | {row['rows']:,} | {row['way']} | {row['median_s']:.1f} s | "
            f"{row['waited_s']:.0f} s | {runs} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", default="5,20", help="comma list of subject counts (20 = the whole example)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--port", type=int, default=18081, help="where the bench's own HAPI server listens")
    parser.add_argument("--poll-wait", type=float, default=1.0, help="seconds of Retry-After honoured per poll")
    args = parser.parse_args()
    rows = run([int(n) for n in args.subjects.split(",")], args.repeat, args.port, args.poll_wait)
    print(table(rows))


if __name__ == "__main__":
    main()
