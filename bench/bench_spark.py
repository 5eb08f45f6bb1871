"""Benchmark: ``fhir-lupus spark-labs`` on Spark local[2] as the trial grows, beside the local path (issue 25 item 5).

    python bench/bench_spark.py [--scales 1 10 100] [--rounds 2] [--check 1 10] [--work DIR]

For each scale N: the example copied N times (bench/scale_example.py), mapped once with ``fhir-lupus map
--format ndjson --workers 2`` (timed); then, each round in a new process each and in an order that turns every
round, ``fhir-lupus spark-labs`` to a Parquet directory on ``--master local[2]`` and its peer, the local path
(``pull._local.labs_from_ndjson`` + ``pull.write_rows``, one Python process, the rows the search pull makes of
the same resources, as tests/spark/ compares). Prints each run's wall time and its Python process's peak RSS
(VmHWM: the Spark driver's Python, not the JVM or the workers), the rows, and the load average before each
round. At the ``--check`` scales one more ``spark-labs`` run writes CSV, whose bytes must equal the local
path's (``labs.csv`` and ``labs.unmapped.csv``). The machine may be shared: compare within one run only.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from scale_example import observations_per_copy, scale  # noqa: E402

# a command run in this tree, printing at exit its own peak RSS (the driver's Python, without the JVM)
PEAK = (
    "import atexit, re, sys\n"
    "def peak():\n"
    "    status = open('/proc/self/status').read()\n"
    "    sys.stderr.write('vmhwm-kib ' + re.search(r'VmHWM:\\s+(\\d+)', status).group(1) + '\\n')\n"
    "atexit.register(peak)\n"
)
CLI = PEAK + "from fhir_lupus.cli import main\nsys.argv[0] = 'fhir-lupus'\nmain()\n"
LOCAL = (
    PEAK + "from pathlib import Path\n"
    "from fhir_lupus.model import load_study\n"
    "from fhir_lupus.pull import PulledLab, UnmappedResult, table_order, unmapped_path, write_rows\n"
    "from fhir_lupus.pull._local import labs_from_ndjson\n"
    "from fhir_lupus.terminology import LabCatalogue, load_pack\n"
    "pack = load_pack()\n"
    "folder, output = Path(sys.argv[1]), Path(sys.argv[2])\n"
    "study = load_study('NCT00698191', pack)\n"
    "_, records = labs_from_ndjson(sorted(folder.glob('*.ndjson')), study, LabCatalogue(pack))\n"
    "ordered = table_order(records)\n"
    "rows = [r for r in ordered if isinstance(r, PulledLab)]\n"
    "write_rows(rows, output, PulledLab)\n"
    "write_rows([r for r in ordered if isinstance(r, UnmappedResult)], unmapped_path(output), UnmappedResult)\n"
    "print(f'{len(rows)} lab rows')\n"
)


def run(code: str, args: list[str], cwd: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB of the Python process, its output) of ``python -c code args`` in this tree."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, check=False, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"{args[:2]} failed ({child.returncode}):\n{child.stdout}\n{child.stderr[-3000:]}")
    found = re.findall(r"vmhwm-kib (\d+)", child.stderr)
    return wall, int(found[-1]) / 1024 if found else float("nan"), child.stdout + child.stderr


def rows_of(stdout: str) -> int:
    found = re.search(r"(\d+) lab rows", stdout)
    return int(found.group(1)) if found else -1


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def bench_scale(copies: int, work: Path, rounds: int, check: bool, master: str) -> list[str]:
    """The runs of one scale; returns its lines of the summary table."""
    trial, ndjson = work / f"trial-x{copies}", work / f"ndjson-x{copies}"
    scale(copies, trial)
    print(f"x{copies}: {observations_per_copy() * copies} Observations (load {load()})", flush=True)
    wall, peak, _ = run(CLI, ["map", str(trial), "-o", str(ndjson), "--format", "ndjson", "--workers", "2"], work)
    print(f"  map --format ndjson --workers 2: {wall:.1f} s, {peak:.0f} MiB", flush=True)
    spark_args = ["spark-labs", str(ndjson), "--master", master]
    runs = {
        "spark-labs": lambda: run(CLI, [*spark_args, "-o", str(work / f"labs-x{copies}")], work),
        "local": lambda: run(LOCAL, [str(ndjson), str(work / f"local-x{copies}.csv")], work),
    }
    seen: dict[str, list[tuple[float, float, int]]] = {name: [] for name in runs}
    names = list(runs)
    for number in range(rounds):
        before = load()
        for name in names[number % 2 :] + names[: number % 2]:
            wall, peak, out = runs[name]()
            seen[name].append((wall, peak, rows_of(out)))
            print(f"  round {number + 1} (load {before}) {name}: {wall:.1f} s, {peak:.0f} MiB, {rows_of(out)} rows")
    same = ""
    if check:
        _, _, out = run(CLI, [*spark_args, "-o", str(work / f"spark-x{copies}.csv")], work)
        pairs = [(f"spark-x{copies}{suffix}", f"local-x{copies}{suffix}") for suffix in (".csv", ".unmapped.csv")]
        equal = all((work / a).read_bytes() == (work / b).read_bytes() for a, b in pairs)
        same = f"CSV bytes equal to the local path's: {equal}"
        print(f"  {same}", flush=True)
    lines = []
    for name, values in seen.items():
        wall = statistics.median(v[0] for v in values)
        peak = max(v[1] for v in values)
        lines.append(f"| x{copies} | {name} | {wall:.1f} s | {peak:.0f} MiB | {values[-1][2]} | {same} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--check", type=int, nargs="*", default=[1, 10], help="scales whose CSV is compared")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--work", type=Path, help="keep the data and outputs here (default: a temporary dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = (args.work or Path(scratch)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        table = ["| scale | run | median wall | peak RSS (Python) | lab rows | |", "|---|---|---|---|---|---|"]
        for copies in args.scales:
            table += bench_scale(copies, work, args.rounds, copies in args.check, args.master)
    print(f"load after: {load()}")
    print("\n".join(table))


if __name__ == "__main__":
    main()
