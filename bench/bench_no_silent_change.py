"""No silent change on the whole example trial (tests/test_no_silent_change.py runs it on an excerpt).

Corrupts one cell at a time (blanked, negated, times 100, a date moved past the subject's end of participation)
or empties a whole file, and checks that every run either names that file and line (a refusal or a query) or
leaves every derived value as the uncorrupted run computes it (tests/corruption.py). Prints the cases, the time and
every silent change; exits 1 when there is one.

    .venv/bin/python bench/bench_no_silent_change.py [--cases 300] [--seed 20261206] [DATA_DIR]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from corruption import check, corruptions, derive, ends_of  # noqa: E402
from test_no_silent_change import ANSWERS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", type=Path, default=ROOT / "examples" / "nct00698191")
    parser.add_argument("--cases", type=int, default=300, help="cell corruptions (every file emptied on top)")
    parser.add_argument("--seed", type=int, default=20261206)
    args = parser.parse_args()
    started = time.perf_counter()
    baseline, report = derive(args.data_dir)
    if report.rejects:
        print(f"{args.data_dir}: {len(report.rejects)} rows rejected before any corruption", file=sys.stderr)
        return 2
    every = corruptions(args.data_dir, ends_of(args.data_dir), random.Random(args.seed), args.cases * 3)
    cases = [c for c in every if c.line is not None and (c.file, c.column) not in ANSWERS][: args.cases]
    cases += [c for c in every if c.line is None]
    silent = []
    with tempfile.TemporaryDirectory() as scratch:
        for corruption in cases:
            problem = check(args.data_dir, Path(scratch) / "spoiled", corruption, baseline)
            if problem is not None:
                silent.append(problem)
    elapsed = time.perf_counter() - started
    kinds = Counter(c.how for c in cases)
    print(f"{len(cases)} cases ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}) on {args.data_dir}")
    print(f"{elapsed:.0f} s ({elapsed / len(cases):.2f} s a case); {len(silent)} silent changes")
    for problem in silent:
        print(problem)
    return 1 if silent else 0


if __name__ == "__main__":
    raise SystemExit(main())
