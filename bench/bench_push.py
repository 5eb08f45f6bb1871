"""Benchmark: push into a fresh HAPI JPA against fhirpy's per-resource loop and one transaction POST per chunk.

    .venv/bin/pip install -e '.[bench]'     # fhirpy
    .venv/bin/python bench/bench_push.py --subjects 5,20 --repeat 3 [--port 18081]

Every measurement gets a HAPI FHIR JPA server of its own, started for it on ``--port`` (servers/hapi, as its
makers ship it, H2 in memory) and stopped after, so each writer starts from the same empty server. The same
subjects, mapped once, are written by:
- ``fhir_lupus``: ``push_trial`` as the CLI runs it (journal look-ups, batched server look-ups, new resources by
  PUT to key-derived ids, ``--concurrency`` subjects at once), then a second time with nothing changed;
- ``fhirpy``: fhirpy 2.3.1 ``SyncFHIRClient``, one ``resource.save()`` per resource in dependency order (PUT to
  the mapper's id; not idempotent against a server that holds the data under other ids);
- ``transaction``: one plain transaction POST per chunk of 500 conditional entries (``transaction_bundle``, what
  a script with our bundle writer would do), references to earlier chunks by the ids the server answered.
For fhir_lupus, the client's share is measured two ways: the wall time during which no request was in flight
(the push waited for its own work), and its process CPU time against the wall time (on this machine the server
runs on the same two cores). Results go to bench/README.md and docs/benchmarks.md (bench/run_all.py).
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from fhir_lupus import load_trial
from fhir_lupus.bundle import dependency_sorted, local_ref, transaction_bundle
from fhir_lupus.client import FhirClient
from fhir_lupus.devserver import start, stop
from fhir_lupus.journal import Journal
from fhir_lupus.model import LoadReport, TrialData
from fhir_lupus.pipeline import map_trial
from fhir_lupus.push import PushOptions, push_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import load_pack

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support import EXAMPLE, example_subset, isolated_mappings_copy  # noqa: E402

CHUNK = 500


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


def prepare(subjects: int, scratch: Path) -> tuple[TrialData, LoadReport, Path, list[dict[str, Any]]]:
    mappings = isolated_mappings_copy(scratch / "mappings", f"b/{uuid.uuid4().hex[:12]}")
    data_dir = EXAMPLE if subjects >= 20 else example_subset(scratch / "data", subjects)
    settings = Settings.from_mappings(mappings)
    data, report = load_trial(data_dir, pack=settings.pack)
    resources = dependency_sorted(map_trial(TrialSource.loaded(data), settings=settings).resources)
    return data, report, mappings, resources


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
            options=PushOptions(concurrency=concurrency),
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


def run(subjects: list[int], repeat: int, port: int = 18081, concurrency: int = 3) -> list[dict[str, Any]]:
    """One row per size: medians of ``repeat`` rounds, each writer on a server of its own."""
    rows = []
    for size in subjects:
        timings: dict[str, list[float]] = {}
        with tempfile.TemporaryDirectory() as scratch_dir:
            scratch = Path(scratch_dir)
            data, report, mappings, resources = prepare(size, scratch)
            for round_number in range(repeat):
                with fresh_hapi(port, scratch) as url:
                    ours = run_fhir_lupus(url, data, report, mappings, scratch / f"j{round_number}.sqlite", concurrency)
                for name, value in ours.items():
                    timings.setdefault(name, []).append(value)
                with fresh_hapi(port, scratch) as url:
                    timings.setdefault("fhirpy", []).append(run_fhirpy(url, resources))
                with fresh_hapi(port, scratch) as url:
                    timings.setdefault("transaction", []).append(run_transactions(url, resources, mappings))
                print(
                    f"  {size} subjects, round {round_number + 1}: "
                    + ", ".join(f"{name} {values[-1]:.1f}" for name, values in timings.items()),
                    flush=True,
                )
        median = {name: statistics.median(values) for name, values in timings.items()}
        count = len(resources)
        rows.append(
            {
                "subjects": size,
                "resources": count,
                "push_s": median["seconds"],
                "push_rate": count / median["seconds"],
                "again_s": median["again"],
                "idle_share": median["idle"] / median["seconds"],
                "cpu_share": median["cpu"] / median["seconds"],
                "fhirpy_s": median["fhirpy"],
                "fhirpy_rate": count / median["fhirpy"],
                "transaction_s": median["transaction"],
                "transaction_rate": count / median["transaction"],
                "repeat": repeat,
                "concurrency": concurrency,
            }
        )
    return rows


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
    args = parser.parse_args()
    rows = run([int(n) for n in args.subjects.split(",")], args.repeat, args.port, args.concurrency)
    print(table(rows))


if __name__ == "__main__":
    main()
