"""Passes 1 and 2 of the loader: each file's rows against its entity model, and business keys unique.

``RowReader.read`` turns one CSV file (fhir_lupus/model/_csv.py reads it) into located records: a row that does not
fit its model, holds a number no result can be, or repeats a business key is refused with its column, never
dropped. A file that is absent, or present without rows, is recorded in the report (``absent``); the latter is a
``file-empty`` note. For a trial loaded a chunk of subjects at a time, ``keep`` selects the chunk's rows and
``KeyDigests`` remembers the keys of earlier chunks, so a duplicate across chunks is still refused.
"""

from __future__ import annotations

import csv
import functools
import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from fhir_lupus.model._check_rules import InputRules
from fhir_lupus.model._csv import number_problem, read_rows
from fhir_lupus.model._edit_checks import Flags
from fhir_lupus.model._records import LoadReport, Located

__all__ = ["KeyDigests", "RowReader", "subject_chunks", "validated"]

M = TypeVar("M", bound=BaseModel)
SUBJECTS = "subjects.csv"


class KeyDigests:
    """Per file, a 64-bit digest of each business key seen -> its line: duplicates across chunks, compactly."""

    def __init__(self) -> None:
        self._seen: dict[str, dict[int, int]] = defaultdict(dict)

    def first(self, file: str, key: tuple[Any, ...], line: int) -> int | None:
        """The line where ``key`` was first seen in ``file``, or None (and it is remembered at ``line``)."""
        digest = int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=8).digest(), "big")
        seen = self._seen[file]
        if digest in seen:
            return seen[digest]
        seen[digest] = line
        return None


class RowReader:
    """Reads the files of one data directory into a report (see the module docstring)."""

    def __init__(
        self,
        data_dir: Path,
        report: LoadReport,
        flags: Flags,
        inputs: InputRules,
        *,
        keep: Callable[[dict[str, str]], bool] | None = None,
        keys: KeyDigests | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.report = report
        self.flags = flags
        self.inputs = inputs
        self.keep = keep  # only the rows of one chunk's subjects; None: every row
        self.keys = keys  # keys seen by earlier chunks

    def read(self, name: str, model: type[M], key: tuple[str, ...]) -> list[Located[M]]:
        path = self.data_dir / name
        if not path.exists():
            self.report.absent.setdefault(name, "missing")
            return []
        accepted: list[Located[M]] = []
        first_seen: dict[tuple[Any, ...], int] = {}
        across_chunks = self.keys is not None and "subject_id" not in key  # a subject's rows share its chunk
        any_row = False
        for line, row, row_problem in read_rows(path, model):
            any_row = True
            if self.keep is not None and not self.keep(row):
                continue
            self.report.read[name] += 1
            if row_problem:
                self.report.reject((name, line, row), None, row_problem)
                continue
            record = validated(model, (name, line, row), self.report)
            if record is None or self._numbers_refused(record, (name, line, row)):
                continue
            business_key = tuple(getattr(record, field) for field in key)
            first = first_seen.get(business_key)
            if first is None and across_chunks and self.keys is not None:
                first = self.keys.first(name, business_key, line)
            if first is not None:
                self.report.reject(
                    (name, line, row),
                    key[-1],
                    f"duplicate {'/'.join(map(str, business_key))} (first at line {first})",
                )
                continue
            first_seen[business_key] = line
            accepted.append(Located(record, name, line, row))
        if not any_row and name not in self.report.absent:
            self.report.absent[name] = "empty"
            meaning = self.inputs.files.get(name, "")
            self.flags.raise_("file-empty", (name, 0, {}), None, f"{name} has no rows: it counts as absent ({meaning})")
        return accepted

    def _numbers_refused(self, record: BaseModel, where: tuple[str, int, dict[str, str]]) -> bool:
        """Refuse a row holding a number no result can be (fhir_lupus/model/_csv.py, ``number_problem``)."""
        refused = False
        for column in _decimal_fields(type(record)):
            value = getattr(record, column)
            if value is not None and (problem := number_problem(value, where[2].get(column))):
                self.report.reject(where, column, problem)
                refused = True
        return refused


def validated(model: type[M], where: tuple[str, int, dict[str, str]], report: LoadReport) -> M | None:
    """The row as its model (empty cells are "not given"); None when it does not fit, each problem refused into
    ``report`` with the column the model names."""
    try:
        return model.model_validate({k: v for k, v in where[2].items() if v.strip()})
    except ValidationError as exc:
        for error in exc.errors():
            column = str(error["loc"][0]) if error["loc"] else None
            report.reject(where, column, error["msg"].removeprefix("Value error, "))
        return None


@functools.lru_cache(maxsize=32)
def _decimal_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of a row model that hold a Decimal (the numbers a row reports)."""
    return tuple(name for name, info in model.model_fields.items() if "Decimal" in str(info.annotation))


def subject_chunks(data_dir: Path, max_rows: int) -> list[list[str]]:
    """subjects.csv's subject ids, in order, cut where a chunk would pass ``max_rows`` rows over all files."""
    rows: Counter[str] = Counter()
    order: dict[str, None] = {}  # subjects.csv's ids in order, once each
    for path in sorted(data_dir.glob("*.csv")):
        try:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                for record in csv.DictReader(handle):
                    subject = (record.get("subject_id") or "").strip()
                    rows[subject] += 1
                    if path.name == SUBJECTS:
                        order.setdefault(subject)
        except (OSError, csv.Error, UnicodeDecodeError):
            continue  # the checking pass reports the file, naming it and the line
    chunks: list[list[str]] = [[]]
    size = 0
    for subject in order:
        if chunks[-1] and size + rows[subject] > max_rows:
            chunks.append([])
            size = 0
        chunks[-1].append(subject)
        size += rows[subject]
    return chunks
