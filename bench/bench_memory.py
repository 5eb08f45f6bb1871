"""Memory benchmark: peak RSS and wall time of ``fhir-lupus map`` as the trial grows (issue 12, item 1).

Each measurement is one child process, so its peak RSS (``os.wait4``'s ru_maxrss) is its own. The data are made
by bench/scale_example.py into ``--work`` (kept, so a second run skips making them). Cases:
- ``x1``, ``x10``, ``x100``: the example copied 1, 10, 100 times (20, 200, 2,000 subjects);
- ``1M``: about 1,000,000 Observations, ``--million-lab-repeat`` (default 10) lab rows for each example lab row,
  in as many copies as that takes (about 120 subjects' worth of copies each holding 10x the labs).
What runs per case: ``load`` (``load_trial`` alone, in Python), ``ndjson`` and ``bundle`` (the CLI, output
written to ``--work``). Prints one Markdown table row per measurement; never part of the test suite.

    .venv/bin/python bench/bench_memory.py --cases x1,x10 --what load,ndjson,bundle
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_example import observations_per_copy, scale

BIN = Path(sys.executable).parent
LOAD_ONLY = (
    "import sys; from pathlib import Path; from fhir_lupus.model._loader import load_trial; "
    "data, report = load_trial(Path(sys.argv[1])); print(len(data.labs), 'labs')"
)


def case_data(case: str, work: Path, million_lab_repeat: int) -> tuple[Path, str]:
    """The data directory of a case (made once) and a description of its size."""
    if case == "1M":
        repeat = million_lab_repeat
        copies = math.ceil(1_000_000 / observations_per_copy(lab_repeat=repeat))
    else:
        repeat, copies = 1, int(case.removeprefix("x"))
    directory = work / f"data-{copies}x-labs{repeat}"
    if not (directory / "trial.txt").exists():
        scale(copies, directory, lab_repeat=repeat)
    observations = copies * observations_per_copy(lab_repeat=repeat)
    return directory, f"{copies * 20:,} subjects, {observations:,} Observations"


# Peak RSS is the child's VmHWM, printed at exit by this wrapper: ``ru_maxrss`` (wait4, getrusage) keeps the
# high-water mark across exec, so a child forked from a large process (bench/run_all.py after its push and
# pull steps: about 280 MiB) reported its parent's size. VmHWM belongs to the address space exec made.
PEAK_WRAPPER = (
    "import atexit, runpy, sys\n"
    "def peak():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            sys.stderr.write('\\nVmHWM ' + line.split()[1] + '\\n')\n"
    "atexit.register(peak)\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def own_peak_mib() -> float:
    """This process's VmHWM in MiB: its peak since exec, for a child that reports its own (bench_pull.py)."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def vm_hwm_mib(log: Path) -> float | None:
    """The last ``VmHWM <kB>`` line the wrapper wrote to ``log``, in MiB."""
    found = [line.split()[1] for line in log.read_text(errors="replace").splitlines() if line.startswith("VmHWM ")]
    return int(found[-1]) / 1024 if found else None


def measure(command: list[str], log: Path) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, exit code) of one child process; what it prints goes to ``log``.

    A file, not a pipe: the CLI prints its row summary and findings (thousands of lines at x100), which would
    fill a pipe nobody reads until the end and stall the child.
    """
    started = time.perf_counter()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", PEAK_WRAPPER, *command], stdout=output, stderr=subprocess.STDOUT
        )
        _pid, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    peak = vm_hwm_mib(log)
    if process.returncode not in (0, 1):  # 1: rows were rejected, which the scale-up does not do, but say so
        print(f"  command failed ({process.returncode}): {' '.join(command)}; see {log}", file=sys.stderr)
    return wall, peak if peak is not None else usage.ru_maxrss / 1024, process.returncode


def run(cases: list[str], what: list[str], work: Path, million_lab_repeat: int = 10) -> list[dict[str, object]]:
    """One row per case and step: wall time, peak RSS and exit code of its own child process."""
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    for case in cases:
        data, size = case_data(case, work, million_lab_repeat)
        for step in what:
            out = work / f"out-{case}-{step}"
            if step == "load":
                script = work / "load_only.py"
                script.write_text(LOAD_ONLY.replace("; ", "\n") + "\n")
                command = [str(script), str(data)]
            elif step == "ndjson":
                command = [str(BIN / "fhir-lupus"), "map", str(data), "--format", "ndjson", "-o", str(out)]
            elif step == "bundle":
                command = [str(BIN / "fhir-lupus"), "map", str(data), "--format", "bundle", "-o", str(out / "b.json")]
            else:
                raise ValueError(f"unknown step {step}")
            load = os.getloadavg()[0]
            wall, peak, code = measure(command, work / f"{case}-{step}.log")
            rows.append(
                {
                    "case": case,
                    "size": size,
                    "what": step,
                    "seconds": wall,
                    "peak_mib": peak,
                    "exit": code,
                    "load": load,
                }
            )
            print(f"| {case} | {size} | {step} | {wall:.1f} s | {peak:.0f} MiB | {code} |", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="x1,x10", help="comma list of x1, x10, x100, 1M")
    parser.add_argument("--what", default="load,ndjson,bundle", help="comma list of load, ndjson, bundle")
    parser.add_argument("--work", type=Path, default=Path("/tmp/fhir-lupus-bench-memory"))
    parser.add_argument("--million-lab-repeat", type=int, default=10)
    args = parser.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.node()} {platform.platform()} {os.cpu_count()} CPUs")
    print(f"# load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| case | size | what | wall time | peak RSS | exit |")
    print("|---|---|---|---|---|---|")
    run(args.cases.split(","), args.what.split(","), args.work, args.million_lab_repeat)
    print(f"# load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
