"""Paths and data the tests share (a module of its own: conftest modules must not be imported by name)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "nct00698191"
FAULT_RESULTS: list[str] = []  # one line per fault-injection case, printed at the end of the test run


def example_subset(target: Path, subjects: int, *, first: int = 0) -> Path:
    """A copy of the example trial with only ``subjects`` of its subjects (from the ``first``-th), every row of theirs.

    Most integration tests need a few subjects, not twenty: the same code paths, a fraction of the time.
    """
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLE / "trial.txt", target / "trial.txt")
    with (EXAMPLE / "subjects.csv").open(encoding="utf-8", newline="") as handle:
        wanted = {row["subject_id"] for row in list(csv.DictReader(handle))[first : first + subjects]}
    for source in sorted(EXAMPLE.glob("*.csv")):
        with source.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            rows = [row for row in reader if row["subject_id"] in wanted]
            columns = reader.fieldnames or []
        with (target / source.name).open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    return target
