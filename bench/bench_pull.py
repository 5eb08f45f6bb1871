"""Benchmark: ``pull_study`` against fhirpy ``fetch_all`` of the same labs, side by side on the same server.

    .venv/bin/pip install -e '.[bench]'     # fhirpy
    .venv/bin/python bench/bench_pull.py hapi=http://127.0.0.1:18080/fhir medplum=http://127.0.0.1:18103/fhir \\
        [--subjects 5,20] [--repeat 3] [--workers 1,3] [--scale 10]

For each server and subject count, the example trial's first N subjects are pushed once under identifier
systems of their own (a copy of mappings/ with a unique canonical base, as bench_sync.py does), so the run
sees only its own resources. Then, ``--repeat`` times and interleaved (pull, fhirpy, pull, ...), so that a
load change on the shared machine hits both alike:
- ``pull``: ``pull_study(since=None)`` with a fresh journal, writing labs.csv and labs.unmapped.csv: the
  study and subject searches, each subject's day-0 look-ups, the lab searches, reverse mapping, the SQLite
  store and the output files;
- ``fhirpy``: a plain ``SyncFHIRClient``, for each subject's Patient
  ``Observation?subject=...&category=laboratory&_count=1000`` and ``fetch_all()``: the same labs, fetched
  and parsed into fhirpy resources, nothing else (its fastest form: the same page size as pull).
Medians are printed with the rate (labs per second) and the ratio of pull's rate to fhirpy's.

``--scale 10`` also measures memory: the example's 20 subjects are pushed under systems of their own, every
lab Observation of theirs is copied ``scale - 1`` more times for the same patients (plain creates in batch
Bundles of 250, another identifier value each), and one ``pull_study`` in a child process reports its peak RSS.

``--cli`` measures what a user waits for (issue 25, item 4): per server, 20 subjects pushed as above, then
``--repeat`` rounds, each a new process per run, in an order that rotates every round: ``fhir-lupus pull --server
URL --since all -o ...`` (``python -m fhir_lupus.cli``, a fresh journal each run: start-up, imports, the pack,
every search, reverse mapping, the store, the files), fhirpy's loop above in a child process (start-up and
fhirpy's import included) and in this one; with ``--base-tree DIR`` (an unpacked older tree, e.g. ``git archive
main | tar -x -C DIR``) also that tree's CLI. Printed: each run's wall time, medians, ratios (fhirpy's time over
the CLI's: above 1, the CLI is faster) and the load average before and after.

From Python (bench/run_all.py): ``run(servers, subjects, repeat, workers)`` returns one row per server, size
and worker count; ``run_memory(url, copies)`` returns the memory measurement. ``main`` prints both.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fhir_lupus import load_trial
from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.model import load_study
from fhir_lupus.pull import pull_study
from fhir_lupus.pull._search_pass import DEFAULT_WORKERS
from fhir_lupus.pull._selection import lab_category as pack_lab_category
from fhir_lupus.push import push_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import load_pack

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support import EXAMPLE, example_subset, isolated_mappings_copy  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from bench_memory import own_peak_mib  # noqa: E402

PAGE = 1000


def lab_category(mappings: Path) -> str:
    return pack_lab_category(load_pack(mappings))


def patients(client: FhirClient, journal: Journal) -> list[str]:
    return sorted(
        f"Patient/{entry.server_id}"
        for entry in journal.entries(client.base_url).values()
        if entry.resource_type == "Patient" and entry.server_id
    )


def run_pull(url: str, nct_id: str, mappings: Path, scratch: Path, workers: int) -> tuple[float, int]:
    """One full pull with a fresh journal; (seconds, rows + set-aside results)."""
    run = scratch / f"pull-{uuid.uuid4().hex[:8]}"
    run.mkdir()
    settings = Settings.from_mappings(mappings)
    study = load_study(nct_id, settings.pack)
    started = time.perf_counter()
    with FhirClient(url, timeout=600) as client, Journal(run / "journal.sqlite") as journal:
        result = pull_study(
            client,
            journal,
            study,
            since=None,
            output=run / "labs.csv",
            settings=settings,
            audit_log=False,
            workers=workers,
        )
    return time.perf_counter() - started, result.total_rows + result.total_unmapped


def run_fhirpy(url: str, refs: list[str], category: str) -> tuple[float, int]:
    from fhirpy import SyncFHIRClient  # the bench extra: pip install -e '.[bench]'

    started = time.perf_counter()
    client = SyncFHIRClient(url, extra_headers={"Accept": "application/fhir+json"})
    found = 0
    for ref in refs:
        found += len(client.resources("Observation").search(subject=ref, category=category).limit(PAGE).fetch_all())
    return time.perf_counter() - started, found


def scale_up(client: FhirClient, refs: list[str], category: str, copies: int) -> int:
    """Write ``copies`` more of every lab Observation of ``refs`` (plain creates, batch Bundles of 250)."""
    written = 0
    entries: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal written
        if entries:
            client.transaction({"resourceType": "Bundle", "type": "batch", "entry": entries}, idempotent=False)
            written += len(entries)
            entries.clear()

    for ref in refs:
        labs = list(client.search("Observation", {"subject": ref, "category": category, "_count": str(PAGE)}))
        for copy in range(1, copies):
            for lab in labs:
                clone = {k: v for k, v in lab.items() if k not in ("id", "meta", "text")}
                clone["identifier"] = [{**i, "value": f"{i.get('value')}-x{copy}"} for i in lab.get("identifier", [])]
                entries.append({"resource": clone, "request": {"method": "POST", "url": "Observation"}})
                if len(entries) >= 250:
                    flush()
    flush()
    return written


def child_pull(url: str, nct_id: str, mappings: str, scratch: str, workers: str) -> None:
    """Run in a child process so that its peak RSS is the pull's alone."""
    seconds, found = run_pull(url, nct_id, Path(mappings), Path(scratch), int(workers))
    peak = own_peak_mib()  # VmHWM, not ru_maxrss, which would carry a large parent's size across exec
    print(json.dumps({"seconds": seconds, "results": found, "peak_mib": peak}))


def machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{platform.node()} {os.cpu_count()} CPUs, Python {platform.python_version()}, load average {load}"


def run(
    servers: dict[str, str],
    subjects: list[int],
    repeat: int,
    workers: list[int],
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Pull against fhirpy on each server (name -> URL) and size: one row per server, size and worker count.

    Each row: server, url, subjects, workers, labs, pull_s and fhirpy_s (medians of ``repeat`` interleaved
    runs), pull_runs and fhirpy_runs (every run), ratio (pull's rate over fhirpy's: above 1, pull is faster).
    ``on_row`` is called with each row as soon as it is measured.
    """
    rows: list[dict[str, Any]] = []
    for name, url in servers.items():
        for size in subjects:
            with tempfile.TemporaryDirectory() as scratch_dir:
                scratch = Path(scratch_dir)
                nct_id, mappings, refs, category = push_subjects(url, size, scratch)
                timings: dict[str, list[float]] = {}
                counts: dict[str, int] = {}
                for _ in range(repeat):
                    for count in workers:
                        seconds, counts[f"w{count}"] = run_pull(url, nct_id, mappings, scratch, count)
                        timings.setdefault(f"w{count}", []).append(seconds)
                    seconds, counts["fhirpy"] = run_fhirpy(url, refs, category)
                    timings.setdefault("fhirpy", []).append(seconds)
            fhirpy_s = statistics.median(timings["fhirpy"])
            for count in workers:
                pull_s = statistics.median(timings[f"w{count}"])
                labs = counts[f"w{count}"]
                rows.append(
                    {
                        "server": name,
                        "url": url,
                        "subjects": size,
                        "workers": count,
                        "labs": labs,
                        "pull_s": pull_s,
                        "fhirpy_s": fhirpy_s,
                        "pull_runs": timings[f"w{count}"],
                        "fhirpy_runs": timings["fhirpy"],
                        "fhirpy_labs": counts["fhirpy"],
                        "ratio": (labs / pull_s) / (counts["fhirpy"] / fhirpy_s),
                    }
                )
                if on_row is not None:
                    on_row(rows[-1])
    return rows


def run_memory(url: str, copies: int, workers: Sequence[int] = (DEFAULT_WORKERS,)) -> dict[str, Any]:
    """Peak RSS of a pull of the example's 20 subjects with every lab copied to ``copies`` times (a child each).

    Returns url, copies, added (labs written by the scale-up) and, for the first of ``workers``, workers,
    seconds, labs (rows and set-aside results pulled) and peak_mib; ``runs`` has one such dict per count.
    """
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        nct_id, mappings, refs, category = push_subjects(url, 20, scratch)
        with FhirClient(url, timeout=600) as client:
            added = scale_up(client, refs, category, copies)
        runs = [{"workers": count, **measure_child(url, nct_id, mappings, scratch, count)} for count in workers]
    return {"url": url, "copies": copies, "added": added, **runs[0], "runs": runs}


def push_subjects(url: str, subjects: int, scratch: Path) -> tuple[str, Path, list[str], str]:
    """The example's first ``subjects`` pushed under identifier systems of their own; (NCT id, mappings
    directory, Patient references, lab category token)."""
    mappings = isolated_mappings_copy(scratch / "mappings", f"b/{uuid.uuid4().hex[:12]}")
    data_dir = EXAMPLE if subjects >= 20 else example_subset(scratch / "data", subjects)
    settings = Settings.from_mappings(mappings)
    data, report = load_trial(data_dir, pack=settings.pack)
    with FhirClient(url, timeout=600) as client, Journal(scratch / "push.sqlite") as journal:
        push_trial(
            TrialSource.loaded(data, report), client, journal, source="bench", settings=settings, audit_log=False
        )
        refs = patients(client, journal)
    return data.study.nct_id, mappings, refs, lab_category(mappings)


def measure_child(url: str, nct_id: str, mappings: Path, scratch: Path, workers: int) -> dict[str, Any]:
    """One pull in a child process; its seconds, results and peak RSS (``child_pull``)."""
    child = subprocess.run(
        [sys.executable, __file__, "--child", url, nct_id, str(mappings), str(scratch), str(workers)],
        check=True,
        capture_output=True,
        text=True,
    )
    measured: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    return {"seconds": measured["seconds"], "labs": measured["results"], "peak_mib": measured["peak_mib"]}


def cli_pull(url: str, mappings: Path, scratch: Path, tree: Path = ROOT) -> tuple[float, int]:
    """One ``fhir-lupus pull --since all`` of ``tree``'s code in a new process with a fresh journal; (wall seconds,
    lines of the table and the unmapped file, headers excluded)."""
    run = scratch / f"cli-{uuid.uuid4().hex[:8]}"
    run.mkdir()
    output = run / "labs.csv"
    command = [sys.executable, "-m", "fhir_lupus.cli", "pull", "--server", url, "--since", "all", "-o", str(output)]
    command += ["--journal", str(run / "journal.sqlite"), "--mappings", str(mappings), "-q"]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=scratch, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    lines = sum(len(path.read_text(encoding="utf-8").splitlines()) - 1 for path in (output, run / "labs.unmapped.csv"))
    return seconds, lines


def fhirpy_child(url: str, refs: list[str], category: str) -> tuple[float, int]:
    """fhirpy's loop (``run_fhirpy``) in a new process: the wall time includes its start-up and imports."""
    started = time.perf_counter()
    child = subprocess.run(
        [sys.executable, __file__, "--fhirpy-child", url, category, ",".join(refs)],
        check=True,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    return seconds, int(json.loads(child.stdout.strip().splitlines()[-1])["results"])


def run_cli(
    servers: dict[str, str], repeat: int, base_tree: Path | None = None, on_run: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """The CLI's pull against fhirpy's loop (in a child and in process) on each server, 20 subjects, rotating.

    One row per server: server, labs, load_before, load_after, runs (variant -> wall seconds of every round),
    medians, and ratio_child / ratio_in_process (fhirpy's median over the CLI's: above 1, the CLI is faster);
    ``ratio_base`` (the base tree's CLI over this one's) with ``base_tree``.
    """
    rows: list[dict[str, Any]] = []
    for name, url in servers.items():
        with tempfile.TemporaryDirectory() as scratch_dir:
            scratch = Path(scratch_dir)
            _nct_id, mappings, refs, category = push_subjects(url, 20, scratch)
            variants: dict[str, Callable[[], tuple[float, int]]] = {
                "cli": functools.partial(cli_pull, url, mappings, scratch),
                "fhirpy_child": functools.partial(fhirpy_child, url, refs, category),
                "fhirpy_in_process": functools.partial(run_fhirpy, url, refs, category),
            }
            if base_tree is not None:
                variants["cli_base"] = functools.partial(cli_pull, url, mappings, scratch, base_tree)
            load_before = os.getloadavg()[0]
            runs: dict[str, list[float]] = {variant: [] for variant in variants}
            found: dict[str, int] = {}
            order = list(variants)
            for round_ in range(repeat):
                for variant in order[round_ % len(order) :] + order[: round_ % len(order)]:
                    seconds, found[variant] = variants[variant]()
                    runs[variant].append(seconds)
                    if on_run is not None:
                        on_run(f"{name} round {round_ + 1} {variant}: {seconds:.2f} s ({found[variant]} results)")
            medians = {variant: statistics.median(times) for variant, times in runs.items()}
            row = {
                "server": name,
                "labs": found["cli"],
                "fhirpy_labs": found["fhirpy_in_process"],
                "load_before": load_before,
                "load_after": os.getloadavg()[0],
                "runs": runs,
                "medians": medians,
                "ratio_child": medians["fhirpy_child"] / medians["cli"],
                "ratio_in_process": medians["fhirpy_in_process"] / medians["cli"],
            }
            if base_tree is not None:
                row["ratio_base"] = medians["cli_base"] / medians["cli"]
            rows.append(row)
    return rows


def print_cli_row(row: dict[str, Any]) -> None:
    for variant, times in row["runs"].items():
        print(
            f"{row['server']:8s} {variant:18s} median {row['medians'][variant]:5.2f} s "
            f"({', '.join(f'{t:.2f}' for t in times)})",
            flush=True,
        )
    ratios = "  ".join(
        f"{key} {row[key]:.2f}" for key in ("ratio_child", "ratio_in_process", "ratio_base") if key in row
    )
    print(
        f"{row['server']:8s} {row['labs']} rows, fhirpy {row['fhirpy_labs']} Observations  {ratios}  "
        f"load {row['load_before']:.2f} -> {row['load_after']:.2f}",
        flush=True,
    )


def print_row(row: dict[str, Any]) -> None:
    print(
        f"{row['server']:8s} {row['subjects']:3d} subjects  pull w{row['workers']} "
        f"median {row['pull_s']:6.2f} s ({', '.join(f'{r:.2f}' for r in row['pull_runs'])})  "
        f"fhirpy median {row['fhirpy_s']:6.2f} s ({', '.join(f'{r:.2f}' for r in row['fhirpy_runs'])})  "
        f"{row['labs']:6d} labs  {row['labs'] / row['pull_s']:7.0f}/s vs "
        f"{row['fhirpy_labs'] / row['fhirpy_s']:7.0f}/s  ratio {row['ratio']:.2f}",
        flush=True,
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_pull(*sys.argv[2:7])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--fhirpy-child":
        _seconds, found = run_fhirpy(sys.argv[2], sys.argv[4].split(","), sys.argv[3])
        print(json.dumps({"results": found}))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("servers", nargs="+", help="name=URL")
    parser.add_argument("--subjects", default="5,20")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--workers", default=str(DEFAULT_WORKERS), help="pull variants: subjects fetched at once, e.g. 1,3"
    )
    parser.add_argument("--cli", action="store_true", help="the CLI end to end against fhirpy (20 subjects) only")
    parser.add_argument("--base-tree", type=Path, help="--cli: also this unpacked tree's CLI")
    parser.add_argument("--scale", type=int, default=0, help="also copy the labs to SCALE times and measure RSS")
    args = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}  {machine()}", flush=True)
    servers = dict(server.partition("=")[::2] for server in args.servers)
    if args.cli:
        for row in run_cli(servers, args.repeat, args.base_tree, on_run=print):
            print_cli_row(row)
        print(f"done {time.strftime('%H:%M:%S')}  {machine()}")
        return
    subjects = [int(n) for n in args.subjects.split(",") if n]
    worker_counts = [int(w) for w in args.workers.split(",")]
    if subjects and args.repeat > 0:
        run(servers, subjects, args.repeat, worker_counts, on_row=print_row)
    if args.scale > 1:
        for name, url in servers.items():
            measured = run_memory(url, args.scale, worker_counts)
            for one in measured["runs"]:
                print(
                    f"{name:8s} x{args.scale} ({measured['added']} labs added)  pull w{one['workers']} "
                    f"{one['seconds']:.1f} s  {one['labs']} labs  peak RSS {one['peak_mib']:.0f} MiB",
                    flush=True,
                )
    print(f"done {time.strftime('%H:%M:%S')}  {machine()}")


if __name__ == "__main__":
    main()
