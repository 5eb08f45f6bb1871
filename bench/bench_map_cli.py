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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "nct00698191"
CODE = "import sys; from fhir_lupus.cli import main; sys.argv[0] = 'fhir-lupus'; main()"


def timed_map(tree: Path, data_dir: Path, output: Path, extra: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of ``fhir-lupus map`` run from ``tree``; CPU counts the child and its workers."""
    env = {**os.environ, "PYTHONPATH": str(tree), "FHIR_LUPUS_MAPPINGS": str(tree / "mappings")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", CODE, "map", str(data_dir), "-o", str(output), *extra],
        env=env,
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout of the tree to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--format", choices=["bundle", "ndjson"], default="bundle")
    parser.add_argument("data_dir", nargs="?", type=Path, default=EXAMPLE)
    args = parser.parse_args()
    runs = {"baseline": (args.baseline.resolve(), []), "workers": (ROOT, []), "workers 1": (ROOT, ["--workers", "1"])}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        names = list(runs)
        for number in range(args.rounds):
            load = " ".join(f"{x:.2f}" for x in os.getloadavg())
            order = names[number % len(names) :] + names[: number % len(names)]
            for name in order:
                tree, extra = runs[name]
                output = scratch / f"{name.replace(' ', '-')}.out"
                times[name].append(timed_map(tree, args.data_dir, output, [*extra, "--format", args.format]))
            print(
                f"round {number + 1} (load {load}): "
                + ", ".join(f"{name} {times[name][-1][0]:.2f} s wall {times[name][-1][1]:.2f} s CPU" for name in order),
                flush=True,
            )
        outputs = {name: _read(scratch / f"{name.replace(' ', '-')}.out") for name in runs}
    median = {name: statistics.median(wall for wall, _cpu in values) for name, values in times.items()}
    cpu = {name: statistics.median(c for _wall, c in values) for name, values in times.items()}
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| | median wall | median CPU | wall ratio to baseline |")
    print("|---|---|---|---|")
    for name in runs:
        print(f"| {name} | {median[name]:.2f} s | {cpu[name]:.2f} s | {median['baseline'] / median[name]:.2f} |")
    same = outputs["baseline"] == outputs["workers"] == outputs["workers 1"]
    print(f"outputs byte-identical: {same}")


def _read(path: Path) -> dict[str, bytes]:
    """The output's bytes: the bundle file, or each NDJSON file of the directory."""
    if path.is_dir():
        return {child.name: child.read_bytes() for child in sorted(path.iterdir())}
    return {"": path.read_bytes()}


if __name__ == "__main__":
    main()
