"""Benchmark: a push with nothing changed, end to end through the CLI, against the first push (issue 25, item 2).

    .venv/bin/python bench/bench_repush.py --subjects 5,20 --repeat 3 [--port 18082] [--base-tree /path/to/main]

One HAPI FHIR JPA server is started for the run on ``--port`` (servers/hapi, H2 in memory) and stopped after.
Each round pushes the example cut to N subjects under a mapping pack of its own (identifier systems unique to the
round, so every first push writes everything anew), with ``python -m fhir_lupus.cli push`` in a new process:
first push (empty journal), then the second push of the same data with the same journal. With ``--base-tree``,
that tree's CLI also makes the second push, from a copy of the journal as the first push left it, in alternating
order with ours (the same server state: nothing changes). The sizes rotate round by round, so the load of the
machine spreads over all of them; the load average is written beside each row. Wall seconds include the
interpreter's start-up, imports, loading and checking the CSV files, as a user waits for them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fhir_lupus.devserver import start, stop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support import EXAMPLE, example_subset, isolated_mappings_copy  # noqa: E402


@contextlib.contextmanager
def fresh_hapi(port: int, state: Path) -> Iterator[str]:
    """A HAPI started for the run; refuses a port already taken (that server would not be empty)."""
    with contextlib.closing(socket.socket()) as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise RuntimeError(f"port {port} is taken: stop what listens there, or pass another --port")
    handle = start("hapi", port, state_dir=state, timeout=1800)
    try:
        yield handle.url
    finally:
        stop(handle)


def cli_push(tree: Path, url: str, data: Path, mappings: Path, journal: Path) -> float:
    """One ``fhir-lupus push`` of ``tree``'s code in a new process; its wall seconds."""
    command = [sys.executable, "-m", "fhir_lupus.cli", "push", str(data), "--server", url]
    command += ["--journal", str(journal), "--mappings", str(mappings)]
    started = time.perf_counter()
    subprocess.run(
        command, check=True, env={**os.environ, "PYTHONPATH": str(tree)}, cwd=journal.parent, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def one_round(
    url: str, subjects: int, scratch: Path, base_tree: Path | None, flip: bool
) -> tuple[dict[str, float], list[str]]:
    """First push, then the second (ours and, with ``base_tree``, the base tree's, in ``flip``-ped order); the
    seconds, and the arguments of our push (for ``profile``)."""
    mappings = isolated_mappings_copy(scratch / "mappings", f"b/{uuid.uuid4().hex[:12]}")
    data = EXAMPLE if subjects >= 20 else example_subset(scratch / "data", subjects)
    ours, base = scratch / "ours" / "journal.sqlite", scratch / "base" / "journal.sqlite"
    ours.parent.mkdir()
    times = {"first": cli_push(ROOT, url, data, mappings, ours)}
    if base_tree is not None:
        base.parent.mkdir()
        shutil.copy(ours, base)
    seconds = [("second", ROOT, ours)] + ([("second_base", base_tree, base)] if base_tree is not None else [])
    for name, tree, journal in reversed(seconds) if flip else seconds:
        times[name] = cli_push(tree, url, data, mappings, journal)
    return times, [str(data), "--server", url, "--journal", str(ours), "--mappings", str(mappings)]


def profile(arguments: list[str], target: Path) -> None:
    """One more second push under ``-X importtime`` (target/importtime.txt) and one under cProfile
    (target/second-push.prof): where the time of a push with nothing to do goes."""
    target.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = ["-m", "fhir_lupus.cli", "push", *arguments]
    with (target / "importtime.txt").open("w") as sink:
        subprocess.run([sys.executable, "-X", "importtime", *command], check=True, env=env, stderr=sink)
    prof = ["-m", "cProfile", "-o", str(target / "second-push.prof")]
    subprocess.run([sys.executable, *prof, *command], check=True, env=env, stdout=subprocess.DEVNULL)


def run(
    sizes: list[int], repeat: int, port: int, base_tree: Path | None, profile_to: Path | None = None
) -> list[dict[str, Any]]:
    """Rows per size: every round's seconds, medians, second / first, the load average before and after; with
    ``profile_to``, the largest size's last round is profiled (``profile``) before the server stops."""
    runs: dict[int, list[dict[str, float]]] = {size: [] for size in sizes}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch_dir, fresh_hapi(port, Path(scratch_dir) / "state") as url:
        for number in range(repeat):
            for size in sizes:
                scratch = Path(scratch_dir) / f"{size}-{number}"
                scratch.mkdir()
                times, arguments = one_round(url, size, scratch, base_tree, flip=number % 2 == 1)
                runs[size].append(times)
                print(f"{size} subjects, round {number + 1}: {times}", file=sys.stderr)
        if profile_to is not None:
            profile(arguments, profile_to)
    rows = []
    for size, rounds in runs.items():
        medians = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}
        row: dict[str, Any] = {"subjects": size, "runs": rounds, "medians": medians}
        row["second_over_first"] = medians["second"] / medians["first"]
        if "second_base" in medians:
            row["base_over_ours"] = medians["second_base"] / medians["second"]
        row["load_before"], row["load_after"] = load_before, os.getloadavg()[0]
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", default="5,20")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--port", type=int, default=18082)
    parser.add_argument("--base-tree", type=Path, help="another checkout whose CLI also makes the second push")
    parser.add_argument("--profile", type=Path, help="profile one more second push of the last size into this dir")
    args = parser.parse_args()
    sizes = [int(part) for part in args.subjects.split(",")]
    for row in run(sizes, args.repeat, args.port, args.base_tree, args.profile):
        print(json.dumps(row))
        medians = row["medians"]
        base = f", base tree's second {medians['second_base']:.2f} s" if "second_base" in medians else ""
        print(
            f"{row['subjects']} subjects: first {medians['first']:.2f} s, second {medians['second']:.2f} s "
            f"({row['second_over_first']:.1%}){base}; load {row['load_before']:.2f} -> {row['load_after']:.2f}"
        )


if __name__ == "__main__":
    main()
