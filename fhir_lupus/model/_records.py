"""Where a record came from, and what happens to rows that are refused."""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from fhir_lupus._scratch import PRIVATE_FILE, write_atomic

__all__ = ["RECORD_KEYS", "Finding", "LoadReport", "Located", "Reject", "record_key", "write_quarantine"]

E = TypeVar("E")
FindingSeverity = Literal["note", "query"]

# The columns that identify a row of each file (its business key), so that a query about a row keeps its id when
# lines move (fhir_lupus/model/_queries.py) and a refused row can be matched to what it would have fed.
RECORD_KEYS: dict[str, tuple[str, ...]] = {
    "subjects.csv": ("subject_id",),
    "visits.csv": ("subject_id", "visit_code"),
    "labs.csv": ("result_id",),
    "sledai.csv": ("subject_id", "visit_code"),
    "treg.csv": ("measurement_id",),
    "procedures.csv": ("procedure_id",),
    "status_history.csv": ("subject_id", "status", "on"),
    "adverse_events.csv": ("event_id",),
    "screening.csv": ("subject_id",),
    "medications.csv": ("medication_id",),
}


def record_key(file: str, row: dict[str, str]) -> str:
    """The business key of a raw row of ``file`` as one string (``MSC-001/M03``); the whole row when unknown."""
    columns = RECORD_KEYS.get(file) or tuple(sorted(row))
    return "/".join((row.get(column) or "").strip() for column in columns)


@dataclass(frozen=True)
class Located(Generic[E]):
    """A record with the file and physical line it was read from, so any later problem can name them."""

    record: E
    file: str
    line: int
    row: dict[str, str]


@dataclass(frozen=True)
class Reject:
    """A refused row: its location, the column at fault (None = whole row), the reason and the raw cells."""

    file: str
    line: int
    column: str | None
    reason: str
    row: dict[str, str]
    check: str | None = None  # the edit check of mappings/checks/checks.yaml that refused it, if one did

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" + (f": column {self.column}" if self.column else "")
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class Finding:
    """Something worth telling that does not refuse the row: a ``note`` (a protocol deviation, a missed visit)
    or a ``query`` for the site (an implausible value, kept). ``kind`` is the check id of
    mappings/checks/checks.yaml; ``subject_id``, ``column``, ``value`` and ``record`` (the row's business key)
    make a query addressable (fhir_lupus/model/_queries.py)."""

    file: str
    line: int | None
    kind: str
    message: str
    severity: FindingSeverity = "note"
    subject_id: str | None = None
    column: str | None = None
    value: str | None = None
    record: str | None = None

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        return f"{where}: {self.kind}: {self.message}"


@dataclass
class LoadReport:
    """Counts per file of rows read, accepted and rejected, plus the rejects and findings themselves."""

    read: Counter[str] = field(default_factory=Counter)
    rejects: list[Reject] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    # files that are absent, or present without a row ("empty"): what depends on them is unknown
    absent: dict[str, str] = field(default_factory=dict)

    @property
    def queries(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.severity == "query"]

    @property
    def notes(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.severity == "note"]

    def holds(self, file: str) -> bool:
        """Whether ``file`` was there with at least one row (read, whatever became of its rows)."""
        return file not in self.absent

    def reject(
        self,
        where: Located[Any] | tuple[str, int, dict[str, str]],
        column: str | None,
        reason: str,
        check: str | None = None,
    ) -> None:
        if isinstance(where, Located):
            file, line, row = where.file, where.line, where.row
        else:
            file, line, row = where
        self.rejects.append(Reject(file=file, line=line, column=column, reason=reason, row=row, check=check))

    @property
    def rejected(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        # a row refused for several reasons counts once
        for file, _line in {(r.file, r.line) for r in self.rejects}:
            counts[file] += 1
        return counts

    def accepted(self, file: str) -> int:
        return self.read[file] - self.rejected[file]


def write_quarantine(rejects: list[Reject], directory: Path) -> list[Path]:
    """Write each file's refused rows to ``<file>.rejected.csv``: original columns + _line, _column, _reason;
    mode 600, as the rows hold patient data.

    Rows refused for several reasons are written once, with the reasons joined, so the quarantine count
    equals the rejected count.
    """
    directory.mkdir(parents=True, exist_ok=True)
    by_file: dict[str, dict[int, list[Reject]]] = {}
    for reject in rejects:
        by_file.setdefault(reject.file, {}).setdefault(reject.line, []).append(reject)
    written = []
    for file, rows in sorted(by_file.items()):
        path = directory / f"{Path(file).name}.rejected.csv"
        columns: list[str] = []
        for group in rows.values():
            for name in group[0].row:
                if name not in columns:
                    columns.append(name)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=[*columns, "_line", "_column", "_reason"])
        writer.writeheader()
        for line, group in sorted(rows.items()):
            record = dict(group[0].row)
            record["_line"] = str(line)
            record["_column"] = ";".join(dict.fromkeys(r.column or "" for r in group))
            record["_reason"] = " | ".join(r.reason for r in group)
            writer.writerow(record)
        write_atomic(path, buffer.getvalue(), mode=PRIVATE_FILE)  # patients' rows: mode 600 from the first byte
        written.append(path)
    return written
