"""Every comparison of the performance work, side by side in one run; writes docs/benchmarks.md.

    .venv/bin/pip install -e '.[bench]'          # fhirpy, the naive client compared with
    .venv/bin/python bench/run_all.py            # about 45 minutes on the project's 2-core machine
    .venv/bin/python bench/run_all.py --quick    # every step at its smallest size (a few minutes), to try it

What it runs, each step in its own processes and on servers it starts itself on loopback (the ports must be
free; the servers of the test suite are not touched):
1. map: ``fhir-lupus map`` of the example end to end, this tree against the tree before the performance work
   (``git archive`` of ``--baseline``), interleaved; and ``bench_map.py``: map + validate against
   ``model_validate`` alone on the same resources;
2. push: ``bench_push.py`` (a fresh HAPI JPA per writer: fhir_lupus, the server's own limit, fhirpy's
   per-resource loop, one transaction POST per chunk), the second push with nothing changed, the client's share;
   then ours against the limit on a Medplum started for the step;
3. pull: ``bench_pull.py`` against fhirpy ``fetch_all`` on HAPI and Medplum, and the x10 pull's peak memory;
4. scale: ``bench_memory.py``, peak RSS and time of ``fhir-lupus map`` at x1, x10, x100 and 1M Observations.
Results are medians; every ratio is this tree's rate over the other's. The page's last section is
bench/analysis.md, written by hand: what the profiles say about each target that is not met.
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
import bench_memory  # noqa: E402
import bench_pull  # noqa: E402
import bench_push  # noqa: E402

from fhir_lupus.devserver import start, stop  # noqa: E402
from fhir_lupus.pull._search_pass import DEFAULT_WORKERS  # noqa: E402

STEPS = ("map", "push", "pull", "scale")

EXAMPLE = ROOT / "examples" / "nct00698191"
BASELINE = "5f28e42"  # main before the performance work of issue 12
FULL = {
    "map_rounds": 3,
    "push_subjects": [5, 20],
    "push_repeat": 3,
    "pull_subjects": [20],
    "pull_repeat": 3,
    "memory_copies": 10,
    "scale_cases": ["x1", "x10", "x100", "1M"],
}
QUICK = {
    "map_rounds": 1,
    "push_subjects": [3],
    "push_repeat": 1,
    "pull_subjects": [3],
    "pull_repeat": 1,
    "memory_copies": 2,
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


def cli_map_seconds(tree: Path | None, output: Path) -> float:
    """Wall time of ``fhir-lupus map`` of the example in a child, from ``tree`` (None: this checkout)."""
    code = "import sys; from fhir_lupus.cli import app; sys.argv[0] = 'fhir-lupus'; app()"
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
        env["FHIR_LUPUS_MAPPINGS"] = str(tree / "mappings")
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code, "map", str(EXAMPLE), "-o", str(output)],
        cwd=output.parent,
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def run_map(rounds: int, baseline: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        tree = baseline_tree(baseline, scratch / "baseline")
        before, after, parts = [], [], []
        for _ in range(rounds):
            before.append(cli_map_seconds(tree, scratch / "before.json"))
            after.append(cli_map_seconds(None, scratch / "after.json"))
            child = subprocess.run(
                [sys.executable, str(BENCH / "bench_map.py"), "--json"], capture_output=True, text=True, check=True
            )
            parts.append(json.loads(child.stdout.strip().splitlines()[-1]))
        same = (scratch / "before.json").read_bytes() == (scratch / "after.json").read_bytes()
    median = {key: statistics.median(p[key] for p in parts) for key in parts[0]}
    return {
        "before_s": statistics.median(before),
        "after_s": statistics.median(after),
        "before_runs": before,
        "after_runs": after,
        "same_bytes": same,
        "parts": median,
        "baseline": baseline,
    }


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


# -- the page ----------------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def page(results: dict[str, Any]) -> str:
    m, r = results["machine"], results["map"]
    parts = r["parts"]
    lines = [
        "# Benchmarks",
        "",
        "Written by `bench/run_all.py` (do not edit by hand; the last section comes from `bench/analysis.md`).",
        "",
        "- Runs: " + "; ".join(results.get("history", [])),
        f"- Machine: {m['host']}",
        f"- Python {m['python']}; {m['packages']}",
        "- Servers, started by the bench on loopback: HAPI FHIR JPA 8.8.0 (servers/hapi, H2 in memory), "
        "Medplum 5.2.13 (servers/medplum, in memory)",
        "- Every figure is a median; a ratio is this tree's rate over the other's (above 1: this tree is faster).",
        "",
    ]
    push_rows, pull_rows, memory, scale = results["push"], results["pull"], results["pull_memory"], results["scale"]
    per_s = parts["resources"] / parts["map_validate_s"]
    alone = parts["resources"] / parts["model_validate_s"]
    gain = r["before_s"] / r["after_s"]
    targets = [
        ("map: 3x the rate before (end to end, `fhir-lupus map`)", f"{gain:.2f}x", verdict(gain >= 3)),
    ]
    for row in push_rows:
        ratio = row["push_rate"] / row["fhirpy_rate"]
        again = row["again_s"] / row["push_s"]
        targets += [
            (f"push {row['subjects']} subjects: 2x fhirpy's per-resource rate", f"{ratio:.2f}x", verdict(ratio >= 2)),
            (
                f"push {row['subjects']} subjects: second push under 10% of the first",
                f"{again:.1%}",
                verdict(again < 0.10),
            ),
            (
                f"push {row['subjects']} subjects: client share under 10% (time with no request in flight)",
                f"{row['idle_share']:.1%}",
                verdict(row["idle_share"] < 0.10),
            ),
        ]
    for row in [*push_rows, *results.get("push_medplum", [])]:
        if "limit_s" in row:
            share = row["limit_s"] / row["push_s"]
            where = row.get("server", "HAPI (fresh)").split(" ")[0]
            name = f"push {where} {row['subjects']} subjects: 0.9x the server's limit"
            targets.append((name, f"{share:.2f}x", verdict(share >= 0.9)))
    for row in pull_rows:
        targets.append(
            (
                f"pull {row['server']} {row['subjects']} subjects, {row['workers']} worker(s): at least fhirpy's rate",
                f"{row['ratio']:.2f}x",
                verdict(row["ratio"] >= 1),
            )
        )
    pull_peak = max(run["peak_mib"] for run in memory.get("runs", [memory]))
    targets.append(
        (f"pull memory at x{memory['copies']}: under 200 MB", f"{pull_peak:.0f} MiB", verdict(pull_peak < 200))
    )
    worst = max(row["peak_mib"] for row in scale)
    targets.append(("map memory: under 500 MB at every scale", f"{worst:.0f} MiB at most", verdict(worst < 500)))
    lines += ["## Targets", "", "| target | measured | |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {status} |" for name, value, status in targets]
    lines += [
        "",
        "## 1. Map and validate",
        "",
        f"`fhir-lupus map` of the example ({parts['resources']:.0f} resources, {parts['rows']:.0f} rows) end to end, "
        f"in a child process each, interleaved, {len(r['after_runs'])} rounds; before = commit {r['baseline']} "
        "(`git archive`, the same virtualenv). Load average at the start: " + results["loads"]["map"] + ".",
        "",
        "| | before | now | ratio |",
        "|---|---|---|---|",
        f"| `fhir-lupus map` end to end | {r['before_s']:.2f} s ({parts['resources'] / r['before_s']:.0f}/s) "
        f"| {r['after_s']:.2f} s ({parts['resources'] / r['after_s']:.0f}/s) | {gain:.2f} |",
        "",
        f"The two bundles are {'byte-identical' if r['same_bytes'] else '**different**'}.",
        "",
        "In-process stages (`bench/bench_map.py`), and `model_validate` alone on the same resources:",
        "",
        "| stage | seconds | rate |",
        "|---|---|---|",
        f"| load + check | {parts['load_s']:.2f} s | |",
        f"| map + validate | {parts['map_validate_s']:.2f} s | {per_s:.0f}/s |",
        f"| of which `model_validate` alone | {parts['model_validate_s']:.2f} s | {alone:.0f}/s |",
        f"| of which invariants (fast) | {parts['invariants_s']:.2f} s | |",
        f"| mappers and the rest | {parts['map_validate_s'] - parts['model_validate_s'] - parts['invariants_s']:.2f} s"
        " | |",
        f"| bundle + JSON ({parts['bundle_mb']:.1f} MB) | {parts['bundle_s']:.2f} s | |",
        "",
        f"Map + validate runs at {per_s / alone:.0%} of `model_validate`'s rate alone.",
        "",
        "## 2. Push into a fresh HAPI JPA",
        "",
        "`bench/bench_push.py`: each writer on a HAPI started empty for it; load average at the start: "
        + results["loads"]["push"]
        + ".",
        "",
        bench_push.table(push_rows),
        "",
        "Against the server's own limit (`bench_push.py`'s limit writer: the client already knows everything, plain "
        "`PUT Type/id` in transactions, the study first, then three subjects' groups at a time; each measurement in "
        "a new process; Medplum: the one started for the step, every round under systems and ids of its own):",
        "",
        bench_push.limit_table([row for row in [*push_rows, *results.get("push_medplum", [])] if "limit_s" in row]),
        "",
        "## 3. Pull against fhirpy `fetch_all`",
        "",
        "`bench/bench_pull.py`: the same subjects' labs, interleaved rounds; load average at the start: "
        + results["loads"]["pull"]
        + ".",
        "",
        "| server | subjects | workers | labs | pull | fhirpy `fetch_all` | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in pull_rows:
        lines.append(
            f"| {row['server']} | {row['subjects']} | {row['workers']} | {row['labs']:,} | {row['pull_s']:.2f} s "
            f"| {row['fhirpy_s']:.2f} s | {row['ratio']:.2f} |"
        )
    lines += [
        "",
        f"Memory: every lab of the 20 subjects copied to {memory['copies']} times on Medplum ({memory['added']:,} "
        "added), one pull in a child each: "
        + "; ".join(
            f"{run['workers']} worker(s) {run['seconds']:.1f} s, {run['labs']:,} results, "
            f"peak RSS {run['peak_mib']:.0f} MiB"
            for run in memory.get("runs", [memory])
        )
        + ".",
        "",
        "## 4. Scale: `fhir-lupus map --format ndjson` as the trial grows",
        "",
        "`bench/bench_memory.py` (`bench/scale_example.py` makes the data): one child process each, peak RSS its "
        "VmHWM (`/proc/self/status`, printed at exit).",
        "",
        "| case | size | wall time | peak RSS | resources/s | load avg |",
        "|---|---|---|---|---|---|",
    ]
    for row in scale:
        count = int(str(row["size"]).split(", ")[1].split(" ")[0].replace(",", ""))
        lines.append(
            f"| {row['case']} | {row['size']} | {row['seconds']:.1f} s | {row['peak_mib']:.0f} MiB "
            f"| {count / row['seconds']:.0f} (Observations) | {row['load']:.1f} |"
        )
    analysis = BENCH / "analysis.md"
    if analysis.exists():
        lines += ["", analysis.read_text().rstrip()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every step at its smallest size")
    parser.add_argument("--baseline", default=BASELINE, help="the commit the map is compared with")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "fhir-lupus-bench-memory")
    parser.add_argument(
        "--steps",
        default=",".join(STEPS),
        help="comma list of map, push, pull, scale; the others are kept from the last run's JSON next to --out",
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
    history = results.setdefault("history", [])
    if "map" in steps:
        log("map")
        results["loads"]["map"] = load()
        results["map"] = run_map(sizes["map_rounds"], args.baseline)
    if "push" in steps:
        log("push")
        results["loads"]["push"] = load()
        results["push"] = bench_push.run(sizes["push_subjects"], sizes["push_repeat"])
        with tempfile.TemporaryDirectory() as state_dir:
            log("push on medplum (18104)")
            handle = start("medplum", 18104, state_dir=Path(state_dir))
            try:
                results["push_medplum"] = bench_push.run(
                    sizes["push_subjects"], sizes["push_repeat"], writers=("ours", "limit"), medplum=handle.url
                )
            finally:
                stop(handle)
    if "pull" in steps:
        with tempfile.TemporaryDirectory() as state_dir, servers(Path(state_dir)) as urls:
            log("pull")
            results["loads"]["pull"] = load()
            results["pull"] = bench_pull.run(urls, sizes["pull_subjects"], sizes["pull_repeat"], [1, DEFAULT_WORKERS])
            log("pull memory")
            results["pull_memory"] = bench_pull.run_memory(
                urls["medplum"], sizes["memory_copies"], (1, DEFAULT_WORKERS)
            )
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
