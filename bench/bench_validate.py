"""`fhir-lupus validate` on the example: this tree against an earlier commit, in the same run.

Checks out ``--base`` (default: the commit before the edit checks of issue 20) into a temporary git worktree and
runs, alternately, ``fhir-lupus validate`` of each tree on the example (a new process each time: what a user
waits for) and, in process, the load with the screening findings (what the checks add). Prints the medians and
the ratio; the issue's budget is at most 20 % more.

    .venv/bin/python bench/bench_validate.py [--base 61dfef9] [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = "examples/nct00698191"
IN_PROCESS = """
import statistics, sys, time
from pathlib import Path
from fhir_lupus.model import load_trial
from fhir_lupus.study import screen_trial, screening_findings
data_dir = Path(sys.argv[1])
load_trial(data_dir)
times = []
for _ in range(int(sys.argv[2])):
    started = time.perf_counter()
    data, report = load_trial(data_dir)
    report.findings.extend(screening_findings(data, screen_trial(data)))
    times.append(time.perf_counter() - started)
print(statistics.median(times))
"""


def cli_seconds(tree: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "from fhir_lupus.cli import main; main()", "validate", EXAMPLE],
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return time.perf_counter() - started


def in_process_seconds(tree: Path, runs: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", IN_PROCESS, EXAMPLE, str(runs)], cwd=tree, env=env, capture_output=True, text=True
    )
    return float(out.stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="61dfef9", help="the commit to compare with")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch) / "base"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(base), args.base], cwd=ROOT, check=True, capture_output=True
        )
        try:
            cli: dict[str, list[float]] = {"base": [], "this": []}
            for _ in range(args.runs):
                cli["base"].append(cli_seconds(base))
                cli["this"].append(cli_seconds(ROOT))
            loads = {"base": in_process_seconds(base, args.runs), "this": in_process_seconds(ROOT, args.runs)}
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    b, t = statistics.median(cli["base"]), statistics.median(cli["this"])
    print(f"fhir-lupus validate {EXAMPLE}, median of {args.runs} alternating runs:")
    print(f"  {args.base}: {b:.2f} s   this tree: {t:.2f} s   ratio {t / b:.2f}")
    print(f"load + screening in process, median of {args.runs}:")
    before, after = loads["base"], loads["this"]
    print(f"  {args.base}: {before:.3f} s   this tree: {after:.3f} s   ratio {after / before:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
