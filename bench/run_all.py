"""Every target of issue 25, measured against its peer or limit in the same run; writes docs/benchmarks.md.

    .venv/bin/pip install -e '.[bench]'          # fhirpy, the client compared with
    .venv/bin/python bench/run_all.py            # every step (about an hour on the project's 2-core machine)
    .venv/bin/python bench/run_all.py --quick    # every step at its smallest size, to try it
    .venv/bin/python bench/run_all.py --steps pull   # one step again; the others are kept from the last run

What it runs, each step in its own processes and on servers it starts itself on loopback (the ports must be
free; the servers of the test suite are not touched), with the load average beside every step:
1. map: ``fhir-lupus map`` of the example end to end, this tree (one worker per CPU, and ``--workers 1``)
   against the tree when the work on issue 25 began (``git archive`` of ``--baseline``), rotating
   (bench_map_cli.py); and bench_map.py: map + validate with workers against ``model_validate`` alone;
2. push: bench_push.py, each writer on a HAPI JPA started empty for it: ``fhir-lupus push`` against the
   server's own limit (plain PUTs of known ids, transactions of 500, three subjects at a time), fhirpy's loop,
   one transaction POST per chunk (``--push-writers``); then ours against the limit on a Medplum started for it;
3. repush: bench_repush.py, the second push with nothing changed through the CLI against the first;
4. pull: ``fhir-lupus pull`` end to end against fhirpy's loop (in process and in a child) on HAPI and Medplum;
5. push memory: bench_push_memory.py, a push's peak RSS as it grows, against the fake server;
6. scale: bench_memory.py, peak RSS and time of ``fhir-lupus map --format ndjson`` at x1 to 1M Observations.
Results are medians; every ratio is this tree's rate over the other's. The page is made by benchpage.py; its
last section is bench/analysis.md, written by hand: what the profiles say about each target not met.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
import bench_map_cli  # noqa: E402
import bench_memory  # noqa: E402
import bench_pull  # noqa: E402
import bench_push  # noqa: E402
import bench_push_memory  # noqa: E402
import bench_repush  # noqa: E402
from benchpage import page  # noqa: E402

from fhir_lupus.devserver import start, stop  # noqa: E402

STEPS = ("map", "push", "repush", "pull", "push-memory", "scale")

EXAMPLE = ROOT / "examples" / "nct00698191"
BASELINE = "73469ba"  # main when the work on issue 25 began: "today" in its targets
FULL: dict[str, Any] = {
    "map_rounds": 3,
    "push_subjects": [5, 20],
    "push_repeat": 3,
    "pull_repeat": 3,
    "push_memory_sizes": [10_000, 100_000],
    "scale_cases": ["x1", "x10", "x100", "1M"],
}
QUICK: dict[str, Any] = {
    "map_rounds": 1,
    "push_subjects": [3],
    "push_repeat": 1,
    "pull_repeat": 1,
    "push_memory_sizes": [2_000],
    "scale_cases": ["x1"],
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        "?",
    )
    versions = {}
    for name in ("fhir.resources", "pydantic", "pydantic-core", "httpx", "orjson", "fhirpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "host": f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), {memory} RAM, {platform.platform()}",
        "python": platform.python_version(),
        "packages": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        or "?",
    }


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- 1. map ------------------------------------------------------------------------------------------------


def baseline_tree(commit: str, target: Path) -> Path:
    """The package and mappings of ``commit``, unpacked to ``target``."""
    archive = subprocess.run(
        ["git", "archive", commit, "fhir_lupus", "mappings"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    target.mkdir(parents=True, exist_ok=True)
    archive_path = target / "tree.tar"
    archive_path.write_bytes(archive)
    with tarfile.open(archive_path) as tar:
        tar.extractall(target, filter="data")
    return target


def run_map(rounds: int, baseline: str) -> dict[str, Any]:
    """bench_map_cli.py against ``baseline``, then bench_map.py ``rounds`` times (each in a child)."""
    with tempfile.TemporaryDirectory() as scratch_dir:
        tree = baseline_tree(baseline, Path(scratch_dir) / "baseline")
        cli = bench_map_cli.run(tree, rounds, on_round=log)
    parts = []
    for _ in range(rounds):
        child = subprocess.run(
            [sys.executable, str(BENCH / "bench_map.py"), "--json"], capture_output=True, text=True, check=True
        )
        parts.append(json.loads(child.stdout.strip().splitlines()[-1]))
    ratios = [part["model_validate_s"] / part["map_validate_workers_s"] for part in parts]
    median = {key: statistics.median(part[key] for part in parts) for key in parts[0]}
    return {"cli": cli, "parts": median, "pool_ratios": ratios, "baseline": baseline}


def run_push_memory(sizes: list[int], work: Path) -> list[dict[str, Any]]:
    """This tree's push of each size against the fake server, each in a child (peak RSS, wall), without and with
    the push's Provenance."""
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for provenance in ("off", "on"):  # on: the push's Provenance lists every resource it wrote (it grows)
        for size in sizes:
            load_now = os.getloadavg()[0]
            wall, peak, _said = bench_push_memory.push_once(ROOT, size, 1000, work, provenance)
            rows.append(
                {"resources": size, "provenance": provenance, "peak_mib": peak, "seconds": wall, "load": load_now}
            )
            log(f"push memory {size:,}, Provenance {provenance}: {peak:.0f} MiB, {wall:.0f} s")
    return rows


# -- servers for the pull step -----------------------------------------------------------------------------


@contextlib.contextmanager
def servers(state: Path) -> Iterator[dict[str, str]]:
    handles = []
    try:
        for name, port in (("hapi", 18082), ("medplum", 18104)):
            log(f"starting {name} on {port}")
            handles.append(start(name, port, state_dir=state / name))
        yield {handle.name: handle.url for handle in handles}
    finally:
        for handle in handles:
            stop(handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every step at its smallest size")
    parser.add_argument("--baseline", default=BASELINE, help="the commit the map is compared with")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "fhir-lupus-bench-memory")
    parser.add_argument(
        "--steps",
        default=",".join(STEPS),
        help="comma list of " + ", ".join(STEPS) + "; the others are kept from the last run's JSON next to --out",
    )
    parser.add_argument(
        "--push-writers",
        default=",".join(bench_push.WRITERS),
        help="the push step's writers on HAPI (ours,limit,fhirpy,transaction); every one needs a HAPI per round",
    )
    parser.add_argument("--scale-cases", help="with --steps scale: only these cases (x1,x10,x100,1M), the rest kept")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    steps = [step.strip() for step in args.steps.split(",") if step.strip()]
    began = time.perf_counter()
    earlier = args.out.with_suffix(".json")
    results: dict[str, Any] = json.loads(earlier.read_text()) if set(steps) != set(STEPS) else {"loads": {}}
    results["machine"] = machine()
    command = "python bench/run_all.py" + (" --quick" if args.quick else "")
    if set(steps) != set(STEPS):
        command += f" --steps {','.join(steps) or '(none: the page only)'}"
        command += f" --scale-cases {args.scale_cases}" if args.scale_cases and "scale" in steps else ""
    if "push" in steps and args.push_writers != ",".join(bench_push.WRITERS):
        command += f" --push-writers {args.push_writers}"
    history = results.setdefault("history", [])
    if "map" in steps:
        log("map")
        results["loads"]["map"] = load()
        results["map"] = run_map(sizes["map_rounds"], args.baseline)
    if "push" in steps:
        log("push")
        results["loads"]["push"] = load()
        writers = args.push_writers.split(",")
        results["push"] = bench_push.run(sizes["push_subjects"], sizes["push_repeat"], writers=writers)
        with tempfile.TemporaryDirectory() as state_dir:
            log("push on medplum (18104)")
            handle = start("medplum", 18104, state_dir=Path(state_dir))
            try:
                results["push_medplum"] = bench_push.run(
                    sizes["push_subjects"], sizes["push_repeat"], writers=("ours", "limit"), medplum=handle.url
                )
            finally:
                stop(handle)
    if "repush" in steps:
        log("repush")
        results["loads"]["repush"] = load()
        results["repush"] = bench_repush.run(sizes["push_subjects"], sizes["push_repeat"], 18082, None)
    if "pull" in steps:
        with tempfile.TemporaryDirectory() as state_dir, servers(Path(state_dir)) as urls:
            log("pull")
            results["loads"]["pull"] = load()
            results["pull_cli"] = bench_pull.run_cli(urls, sizes["pull_repeat"], on_run=log)
    if "push-memory" in steps:
        log("push memory")
        results["loads"]["push-memory"] = load()
        results["push_memory"] = run_push_memory(sizes["push_memory_sizes"], args.work / "push-memory")
    if "scale" in steps:
        log("scale")
        cases = args.scale_cases.split(",") if args.scale_cases else sizes["scale_cases"]
        fresh = bench_memory.run(cases, ["ndjson"], args.work)
        kept = [row for row in results.get("scale", []) if row["case"] not in cases]  # cases not run again
        order = {case: number for number, case in enumerate(FULL["scale_cases"])}
        results["scale"] = sorted(kept + fresh, key=lambda row: order.get(row["case"], len(order)))
    minutes = (time.perf_counter() - began) / 60
    if steps:  # a run that only writes the page again adds nothing to the history
        machine_now = results["machine"]
        history.append(f"{machine_now['date']}, commit {machine_now['commit']}: `{command}`, {minutes:.0f} min")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page(results))
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    log(f"wrote {args.out} in {minutes:.1f} min")


if __name__ == "__main__":
    main()
