"""Benchmark: ``fhir-lupus map`` of the example end to end, this tree against another one, in child processes.

    python bench/bench_map_cli.py --baseline /tmp/main-worktree [--rounds 3] [--format bundle]

Each round runs, in a new process each and in an order that turns every round: the baseline tree's CLI, this
tree's CLI with its default workers (one per CPU) and this tree's with ``--workers 1``; each with the same
virtualenv, its own tree first on PYTHONPATH and its own mappings/. Prints the wall time and the CPU time
(the child's and its workers', user + sys) of every run, the load average before each round, the medians, the
ratios, and whether the outputs are byte-identical. The machine may be shared: compare within one run only.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "nct00698191"
# the CLI's entry point, printing at exit the CPU seconds of its own process (its workers' are not in it)
CODE = (
    "import atexit, resource, sys\n"
    "def cpu():\n"
    "    usage = resource.getrusage(resource.RUSAGE_SELF)\n"
    "    sys.stderr.write(f'parent-cpu {usage.ru_utime + usage.ru_stime}\\n')\n"
    "atexit.register(cpu)\n"
    "from fhir_lupus.cli import main\n"
    "sys.argv[0] = 'fhir-lupus'\n"
    "main()\n"
)


def timed_map(tree: Path, data_dir: Path, output: Path, extra: list[str]) -> tuple[float, float, float]:
    """(wall, CPU, parent CPU) seconds of ``fhir-lupus map`` run from ``tree``; CPU counts the child and its
    workers, parent CPU the child alone (what the workers cannot take over)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "FHIR_LUPUS_MAPPINGS": str(tree / "mappings")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-c", CODE, "map", str(data_dir), "-o", str(output), *extra],
        cwd=output.parent,  # not this checkout: ``-c`` puts the working directory first on sys.path
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    parent = float(child.stderr.strip().splitlines()[-1].split()[-1])
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, parent


def run(
    baseline: Path,
    rounds: int = 3,
    data_dir: Path = EXAMPLE,
    fmt: str = "bundle",
    on_round: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Medians of every variant (wall, CPU, parent CPU), the load before each round and after, and whether the
    outputs are byte-identical; ``on_round`` gets one line per round."""
    runs = {"baseline": (baseline.resolve(), []), "workers": (ROOT, []), "workers 1": (ROOT, ["--workers", "1"])}
    times: dict[str, list[tuple[float, float, float]]] = {name: [] for name in runs}
    loads: list[float] = []
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        names = list(runs)
        for number in range(rounds):
            load = " ".join(f"{x:.2f}" for x in os.getloadavg())
            loads.append(os.getloadavg()[0])
            order = names[number % len(names) :] + names[: number % len(names)]
            for name in order:
                tree, extra = runs[name]
                output = scratch / f"{name.replace(' ', '-')}.out"
                times[name].append(timed_map(tree, data_dir, output, [*extra, "--format", fmt]))
            on_round(
                f"round {number + 1} (load {load}): "
                + ", ".join(
                    f"{name} {times[name][-1][0]:.2f} s wall, {times[name][-1][1]:.2f} s CPU "
                    f"({times[name][-1][2]:.2f} s in the parent)"
                    for name in order
                )
            )
        outputs = {name: _read(scratch / f"{name.replace(' ', '-')}.out") for name in runs}
    return {
        "wall": {name: statistics.median(run[0] for run in values) for name, values in times.items()},
        "cpu": {name: statistics.median(run[1] for run in values) for name, values in times.items()},
        "parent": {name: statistics.median(run[2] for run in values) for name, values in times.items()},
        "runs": {name: [run[0] for run in values] for name, values in times.items()},
        "loads": [*loads, os.getloadavg()[0]],
        "same_bytes": outputs["baseline"] == outputs["workers"] == outputs["workers 1"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout of the tree to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--format", choices=["bundle", "ndjson"], default="bundle")
    parser.add_argument("data_dir", nargs="?", type=Path, default=EXAMPLE)
    args = parser.parse_args()
    result = run(args.baseline, args.rounds, args.data_dir, args.format, on_round=lambda line: print(line, flush=True))
    median, cpu, parent = result["wall"], result["cpu"], result["parent"]
    print(f"load after: {result['loads'][-1]:.2f}")
    print("| | median wall | median CPU | of which the parent | wall ratio to baseline |")
    print("|---|---|---|---|---|")
    for name in median:
        ratio = median["baseline"] / median[name]
        print(f"| {name} | {median[name]:.2f} s | {cpu[name]:.2f} s | {parent[name]:.2f} s | {ratio:.2f} |")
    print(f"outputs byte-identical: {result['same_bytes']}")


def _read(path: Path) -> dict[str, bytes]:
    """The output's bytes: the bundle file, or each NDJSON file of the directory."""
    if path.is_dir():
        return {child.name: child.read_bytes() for child in sorted(path.iterdir())}
    return {"": path.read_bytes()}


if __name__ == "__main__":
    main()
