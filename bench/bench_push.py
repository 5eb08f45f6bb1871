"""Benchmark: push into a fresh HAPI JPA against the server's own limit, fhirpy's loop and a transaction per chunk.

    .venv/bin/pip install -e '.[bench]'     # fhirpy
    .venv/bin/python bench/bench_push.py --subjects 5,20 --repeat 3 [--port 18081] [--writers ours,limit]
    .venv/bin/python bench/bench_push.py --medplum http://127.0.0.1:18103/fhir --subjects 5,20   # ours, limit

Every measurement gets a HAPI FHIR JPA server of its own, started for it on ``--port`` (servers/hapi, as its
makers ship it, H2 in memory) and stopped after, so each writer starts from the same empty server. The same
subjects, mapped once, are written by:
- ``fhir_lupus``: ``push_trial`` as the CLI runs it (journal look-ups, batched server look-ups, new resources by
  PUT to key-derived ids, ``--concurrency`` subjects at once), then a second time with nothing changed;
- ``fhirpy``: fhirpy 2.3.1 ``SyncFHIRClient``, one ``resource.save()`` per resource in dependency order (PUT to
  the mapper's id; not idempotent against a server that holds the data under other ids);
- ``transaction``: one plain transaction POST per chunk of 500 conditional entries (``transaction_bundle``, what
  a script with our bundle writer would do), references to earlier chunks by the ids the server answered;
- ``limit``: what the server costs for exactly these resources when the client already knows everything (issue
  25): each entry a plain ``PUT Type/id`` (the mapper's ids, made unique to the run, references rewritten to
  them, all before the clock starts), transactions of 500, the study's group first and then each subject's
  group, three groups at a time in threads (our own concurrency), no look-up, no mapping, no validation.
With ``--medplum URL`` only ours and the limit run, alternating, against that running Medplum (never
restarted): every round under identifier systems and ids of its own, so each push is a first push. Medplum
takes at most 50 ``PUT`` entries in a transaction (servers/medplum/README.md), so the limit's transactions
are of 50 there; our push learns its own sizes from Medplum's refusals, as it would on any server.
For fhir_lupus, the client's share is measured two ways: the wall time during which no request was in flight
(the push waited for its own work), and its process CPU time against the wall time (on this machine the server
runs on the same two cores). Results go to bench/README.md and docs/benchmarks.md (bench/run_all.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from fhir_lupus import load_trial
from fhir_lupus.bundle import dependency_sorted, local_ref, rewrite_references, transaction_bundle
from fhir_lupus.client import FhirClient
from fhir_lupus.devserver import start, stop
from fhir_lupus.journal import Journal
from fhir_lupus.model import LoadReport, TrialData
from fhir_lupus.pipeline import stream_trial
from fhir_lupus.push import PushOptions, push_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import load_pack

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support import EXAMPLE, example_subset, isolated_mappings_copy  # noqa: E402

CHUNK = 500
MEDPLUM_PUTS = 50  # Medplum's cap on update (PUT) entries in one transaction (servers/medplum/README.md)
Groups = list[list[dict[str, Any]]]


@dataclass
class Requests:
    """Start and end of every HTTP request made through httpx, to find the time none was in flight."""

    spans: list[tuple[float, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        original = httpx.Client.send

        def send(client: httpx.Client, request: httpx.Request, **options: Any) -> httpx.Response:
            began = time.perf_counter()
            try:
                return original(client, request, **options)
            finally:
                with self.lock:
                    self.spans.append((began, time.perf_counter()))

        httpx.Client.send = send  # type: ignore[method-assign]
        try:
            yield
        finally:
            httpx.Client.send = original  # type: ignore[method-assign]

    def busy(self) -> float:
        """Seconds during which at least one request was in flight (the union of the spans)."""
        total, end = 0.0, float("-inf")
        for began, finished in sorted(self.spans):
            if began > end:
                total += finished - began
                end = finished
            elif finished > end:
                total += finished - end
                end = finished
        return total


@contextlib.contextmanager
def fresh_hapi(port: int, state: Path) -> Iterator[str]:
    """A HAPI started for one measurement; refuses a port already taken (that server would not be empty)."""
    with contextlib.closing(socket.socket()) as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise RuntimeError(f"port {port} is taken: stop what listens there, or pass another --port")
    handle = start("hapi", port, state_dir=state)
    try:
        yield handle.url
    finally:
        stop(handle)


def load(subjects: int, scratch: Path) -> tuple[TrialData, LoadReport, Path]:
    """The example's first ``subjects`` loaded under identifier systems of their own (a first push anywhere)."""
    mappings = isolated_mappings_copy(scratch / "mappings", f"b/{uuid.uuid4().hex[:12]}")
    data_dir = EXAMPLE if subjects >= 20 else example_subset(scratch / "data", subjects)
    data, report = load_trial(data_dir, pack=Settings.from_mappings(mappings).pack)
    return data, report, mappings


def mapped_groups(data: TrialData, mappings: Path) -> Groups:
    """The groups push_trial sends: the study's resources, then one group per subject, in dependency order."""
    batches = stream_trial(TrialSource.loaded(data), settings=Settings.from_mappings(mappings))
    return [dependency_sorted(batch.resources) for batch in batches]


def own_ids(groups: Groups) -> Groups:
    """The groups with every id made unique to this call and every reference rewritten to it: a server that
    holds an earlier run's resources (the shared Medplum) sees only new ones, as a first push does."""
    run = uuid.uuid4()
    targets = {local_ref(r): f"{r['resourceType']}/{uuid.uuid5(run, local_ref(r))}" for g in groups for r in g}
    return [
        [{**rewrite_references(r, targets), "id": targets[local_ref(r)].split("/")[1]} for r in group]
        for group in groups
    ]


def limit_bundles(group: Sequence[dict[str, Any]], chunk: int) -> list[bytes]:
    """One group as transaction bodies of ``chunk`` plain ``PUT Type/id`` entries, in the group's order (every
    reference is to a resource of an earlier transaction or of the same one: HAPI and Medplum resolve both)."""
    return [
        orjson.dumps(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {"resource": r, "request": {"method": "PUT", "url": local_ref(r)}}
                    for r in group[begin : begin + chunk]
                ],
            }
        )
        for begin in range(0, len(group), chunk)
    ]


def run_limit(url: str, groups: Groups, chunk: int = CHUNK, concurrency: int = 3) -> float:
    """The limit writer (module docstring): its bodies are built before the clock starts; seconds to write."""
    bodies = [limit_bundles(group, chunk) for group in own_ids(groups)]
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(timeout=600, headers=headers, limits=limits) as client:

        def write(group: list[bytes]) -> None:
            for body in group:
                response = client.post(url, content=body)
                if response.status_code >= 300:
                    raise RuntimeError(f"the limit's transaction was refused: {response.status_code} {response.text}")

        started = time.perf_counter()
        write(bodies[0])  # the study's resources: every subject refers to them
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(write, bodies[1:]))
        return time.perf_counter() - started


def run_fhir_lupus(
    url: str, data: TrialData, report: LoadReport, mappings: Path, journal: Path, concurrency: int
) -> dict[str, float]:
    requests, settings = Requests(), Settings.from_mappings(mappings)
    with FhirClient(url, timeout=600) as client, Journal(journal) as book, requests.recording():
        cpu, started = time.process_time(), time.perf_counter()
        first = push_trial(
            TrialSource.loaded(data, report),
            client,
            book,
            source="bench",
            settings=settings,
            audit_log=False,
            options=PushOptions(concurrency=concurrency, workers=None),  # as the CLI: one validation worker per CPU
        )
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        idle = wall - requests.busy()
        started = time.perf_counter()
        second = push_trial(
            TrialSource.loaded(data, report), client, book, source="bench", settings=settings, audit_log=False
        )
        again = time.perf_counter() - started
    if not (first.complete and first.created == first.total and second.written == 0):
        raise RuntimeError(f"unexpected push outcome: {first.summary()} / {second.summary()}")
    return {"seconds": wall, "idle": idle, "cpu": cpu, "again": again, "resources": first.total}


def run_fhirpy(url: str, resources: list[dict[str, Any]]) -> float:
    from fhirpy import SyncFHIRClient  # the bench extra: pip install -e '.[bench]'

    client = SyncFHIRClient(url, extra_headers={"Accept": "application/fhir+json"})
    started = time.perf_counter()
    for item in resources:
        client.resource(item["resourceType"], **item).save()
    return time.perf_counter() - started


def run_transactions(url: str, resources: list[dict[str, Any]], mappings: Path) -> float:
    from fhir_lupus.bundle import load_matching_rules

    rules = load_matching_rules(load_pack(mappings))
    with FhirClient(url) as fhir:
        capabilities = fhir.capabilities()
    known: dict[str, str] = {}
    with httpx.Client(timeout=600, headers={"Content-Type": "application/fhir+json"}) as client:
        started = time.perf_counter()
        for begin in range(0, len(resources), CHUNK):
            chunk = resources[begin : begin + CHUNK]
            bundle = transaction_bundle(chunk, external=known, rules=rules)
            for entry in bundle["entry"]:  # HAPI cannot search AdverseEvent by identifier: PUT to our id instead
                kind, _, query = entry["request"]["url"].partition("?")
                if query and not capabilities.searches(kind, query.split("=")[0]):
                    our_id = entry["fullUrl"].removeprefix("urn:uuid:")
                    entry["request"] = {"method": "PUT", "url": f"{kind}/{our_id}"}
                    entry["resource"]["id"] = our_id
            response = client.post(url, json=bundle)
            if response.status_code >= 300:
                raise RuntimeError(f"the transaction was refused: {response.status_code} {response.text[:600]}")
            for item, answer in zip(chunk, response.json()["entry"], strict=True):
                location = answer["response"]["location"].split("/_history")[0]
                known[local_ref(item)] = "/".join(location.split("/")[-2:])
        return time.perf_counter() - started


WRITERS = ("ours", "limit", "fhirpy", "transaction")


def measure(writer: str, url: str, size: int, scratch: Path, concurrency: int, chunk: int) -> dict[str, float]:
    """One writer's first push in this process (``--child``): the subjects loaded (and, for the others than ours,
    mapped) before the clock starts; ours maps and validates as it pushes, as the CLI does."""
    data, report, mappings = load(size, scratch)
    if writer == "ours":
        return run_fhir_lupus(url, data, report, mappings, scratch / "journal.sqlite", concurrency)
    groups = mapped_groups(data, mappings)
    if writer == "limit":
        return {"seconds": run_limit(url, groups, chunk, concurrency)}
    resources = dependency_sorted(r for group in groups for r in group)
    if writer == "fhirpy":
        return {"seconds": run_fhirpy(url, resources)}
    return {"seconds": run_transactions(url, resources, mappings)}


def in_child(writer: str, url: str, size: int, scratch: Path, concurrency: int, chunk: int) -> dict[str, float]:
    """``measure`` in a new process: no round inherits a warm interpreter from the one before."""
    scratch.mkdir(parents=True)
    argv = [sys.executable, __file__, "--child", writer, url, str(size), str(scratch)]
    argv += ["--concurrency", str(concurrency), "--chunk", str(chunk)]
    child = subprocess.run(argv, capture_output=True, text=True)
    if child.returncode:
        raise RuntimeError(f"{writer} failed:\n{child.stderr[-3000:]}")
    result: dict[str, float] = json.loads(child.stdout.strip().splitlines()[-1])
    return result


def run(
    subjects: list[int],
    repeat: int,
    port: int = 18081,
    concurrency: int = 3,
    writers: Sequence[str] = WRITERS,
    medplum: str | None = None,
) -> list[dict[str, Any]]:
    """One row per size: medians of ``repeat`` rounds, the writers alternating, each on a HAPI started for it
    (or all on the running Medplum ``medplum``, each round under systems and ids of its own)."""
    chunk = MEDPLUM_PUTS if medplum else CHUNK
    rows = []
    for size in subjects:
        timings: dict[str, list[float]] = {}
        loads: list[str] = []
        with tempfile.TemporaryDirectory() as scratch_dir:
            scratch = Path(scratch_dir)
            for round_number in range(repeat):
                loads.append(load_average())
                for writer in writers:
                    place = scratch / f"{writer}-{round_number}"
                    with contextlib.nullcontext(medplum) if medplum else fresh_hapi(port, scratch) as url:
                        result = in_child(writer, url, size, place, concurrency, chunk)
                    for name, value in result.items():
                        timings.setdefault(writer if name == "seconds" else name, []).append(value)
                print(
                    f"  {size} subjects, round {round_number + 1} (load {loads[-1]}): "
                    + ", ".join(f"{name} {values[-1]:.1f}" for name, values in timings.items() if name != "resources"),
                    flush=True,
                )
        median = {name: statistics.median(values) for name, values in timings.items()}
        row: dict[str, Any] = {
            "server": "Medplum" if medplum else "HAPI (fresh)",
            "subjects": size,
            "repeat": repeat,
            "concurrency": concurrency,
            "limit_chunk": chunk,
            "loads": loads,
            "runs": timings,
        }
        names = ["push" if writer == "ours" else writer for writer in writers]  # the keys run_all.py reads
        row |= {f"{name}_s": median[writer] for name, writer in zip(names, writers, strict=True)}
        if "ours" in writers:
            count = row["resources"] = int(median["resources"])
            row |= {"again_s": median["again"], "idle_share": median["idle"] / median["ours"]}
            row["cpu_share"] = median["cpu"] / median["ours"]
            row |= {f"{name}_rate": count / row[f"{name}_s"] for name in names}
        rows.append(row)
    return rows


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def limit_table(rows: list[dict[str, Any]]) -> str:
    """Ours against the server's limit (issue 25): medians, the ratio of the rates, the load at each round."""
    lines = [
        "| server | subjects | resources | `push_trial` (ours) | the limit | ours / limit | load average per round |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['server']} | {row['subjects']} | {row['resources']:,} | {row['push_s']:.1f} s "
            f"| {row['limit_s']:.1f} s ({row['limit_chunk']} a transaction) | **{row['limit_s'] / row['push_s']:.2f}** "
            f"| {'; '.join(row['loads'])} |"
        )
    return "\n".join(lines)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| subjects | resources | fhir_lupus push | fhirpy loop | transaction per chunk | push / fhirpy rate "
        "| second push / first | client idle share | client CPU / wall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['subjects']} | {row['resources']:,} | {row['push_s']:.1f} s ({row['push_rate']:.0f}/s) "
            f"| {row['fhirpy_s']:.1f} s ({row['fhirpy_rate']:.0f}/s) "
            f"| {row['transaction_s']:.1f} s ({row['transaction_rate']:.0f}/s) "
            f"| {row['push_rate'] / row['fhirpy_rate']:.2f} | {row['again_s']:.2f} s "
            f"({row['again_s'] / row['push_s']:.1%}) | {row['idle_share']:.1%} | {row['cpu_share']:.0%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", default="5,20", help="comma list of subject counts (20 = the whole example)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--port", type=int, default=18081, help="where the bench's own HAPI servers listen")
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--writers", help=f"comma list of {', '.join(WRITERS)} (default: all; ours,limit on Medplum)")
    parser.add_argument("--medplum", help="a running Medplum's base URL: ours and the limit there, not on HAPI")
    parser.add_argument("--child", nargs=4, metavar=("WRITER", "URL", "SUBJECTS", "SCRATCH"), help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, default=CHUNK, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        writer, url, size, scratch = args.child
        print(json.dumps(measure(writer, url, int(size), Path(scratch), args.concurrency, args.chunk)))
        return
    writers = args.writers.split(",") if args.writers else ["ours", "limit"] if args.medplum else list(WRITERS)
    subjects = [int(n) for n in args.subjects.split(",")]
    rows = run(subjects, args.repeat, args.port, args.concurrency, writers, args.medplum)
    print(json.dumps(rows))
    if {"ours", "limit"} <= set(writers):
        print(limit_table(rows))
    if set(WRITERS) <= set(writers):
        print(table(rows))


if __name__ == "__main__":
    main()
