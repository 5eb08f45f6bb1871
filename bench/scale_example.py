"""Scale-up data for the memory benchmark: the example trial copied N times, optionally with more labs a subject.

``scale_example.py N OUT_DIR``: copy 0 is the example as it is; copy k (k >= 1) has every identifier that must be
unique (subject ids, MRNs, pseudonyms, result, measurement, procedure, event and medication ids) suffixed with
``-C<k>``, so the loader accepts it as other subjects. ``--lab-repeat R`` writes each lab row R times, the
repeats with ``-R<r>`` on the result id (same visit, same value): more lab rows per subject, as a long lab
history has. ``--observations M`` picks the smallest N that reaches M Observations (labs, SLEDAI-2K, Treg) at
the given ``--lab-repeat``. Rows stay grouped by subject, in subjects.csv order, copy after copy, as an export
sorted by subject is.
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "nct00698191"
# Columns whose values identify a row or a person and must stay unique across copies (docs/csv-layout.md).
UNIQUE_COLUMNS = (
    "subject_id",
    "mrn",
    "pseudonym",
    "result_id",
    "measurement_id",
    "procedure_id",
    "event_id",
    "medication_id",
)
OBSERVATION_FILES = ("labs.csv", "sledai.csv", "treg.csv")  # each row of these is one Observation


def observations_per_copy(source: Path = EXAMPLE, lab_repeat: int = 1) -> int:
    """Observations one copy of ``source`` maps to: its lab rows (times the repeat), SLEDAI-2K and Treg rows."""
    total = 0
    for name in OBSERVATION_FILES:
        with (source / name).open(encoding="utf-8", newline="") as handle:
            rows = sum(1 for _ in csv.DictReader(handle))
        total += rows * (lab_repeat if name == "labs.csv" else 1)
    return total


def scale(copies: int, out_dir: Path, *, lab_repeat: int = 1, source: Path = EXAMPLE) -> Path:
    """Write ``copies`` copies of ``source`` into ``out_dir`` (replaced if it exists) and return it."""
    if copies < 1 or lab_repeat < 1:
        raise ValueError("copies and lab_repeat must be at least 1")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    shutil.copy(source / "trial.txt", out_dir / "trial.txt")
    for path in sorted(source.glob("*.csv")):
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
        with (out_dir / path.name).open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            for copy in range(copies):
                suffix = f"-C{copy:04d}" if copy else ""
                for row in rows:
                    renamed = {k: (v + suffix if k in UNIQUE_COLUMNS and v and suffix else v) for k, v in row.items()}
                    writer.writerow(renamed)
                    if path.name == "labs.csv":
                        for repeat in range(1, lab_repeat):
                            writer.writerow({**renamed, "result_id": f"{renamed['result_id']}-R{repeat:03d}"})
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("copies", nargs="?", type=int, help="how many copies of the example (or use --observations)")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--lab-repeat", type=int, default=1, help="write each lab row this many times")
    parser.add_argument("--observations", type=int, help="enough copies for this many Observations")
    args = parser.parse_args()
    copies = args.copies
    if args.observations:
        copies = math.ceil(args.observations / observations_per_copy(lab_repeat=args.lab_repeat))
    if not copies:
        parser.error("give COPIES or --observations")
    scale(copies, args.out_dir, lab_repeat=args.lab_repeat)
    print(
        f"{args.out_dir}: {copies} copies, lab rows x{args.lab_repeat}, "
        f"{copies * observations_per_copy(lab_repeat=args.lab_repeat):,} Observations"
    )


if __name__ == "__main__":
    main()
