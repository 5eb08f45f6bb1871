"""The pulled rows of a study, kept in the journal's SQLite file and merged by observation id.

A pull first stages what it fetched (``pull_stage``); then, in one SQLite transaction, it merges the stage
into the store (``pull_store``: the newer version of an observation wins, by ``meta.lastUpdated`` then
``versionId``), writes the output files from the store (written to a temporary file, synced, renamed), moves
the high-water mark and commits. If anything fails before the commit, the store and the mark stay as they
were and the next pull fetches the same results again; if the process dies after the files were renamed but
before the commit, the next pull merges the same results again and writes the same files. So ``--since auto``
keeps every row pulled before, never holds them all in memory, and cannot skip a result.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC
from pathlib import Path
from typing import Any

from fhir_lupus.errors import FhirLupusError
from fhir_lupus.sync.reverse import PulledLab, UnmappedResult
from fhir_lupus.sync.search import parse_instant

__all__ = ["MergeResult", "PullStore", "Removal", "unmapped_path", "write_rows"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pull_store (
    server TEXT NOT NULL, study TEXT NOT NULL, observation_id TEXT NOT NULL,
    version_id TEXT NOT NULL, updated TEXT NOT NULL, kind TEXT NOT NULL,
    sort_key TEXT NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (server, study, observation_id)
);
CREATE INDEX IF NOT EXISTS pull_store_order ON pull_store (server, study, kind, sort_key);
CREATE TABLE IF NOT EXISTS pull_stage (
    server TEXT NOT NULL, study TEXT NOT NULL, observation_id TEXT NOT NULL,
    version_id TEXT NOT NULL, updated TEXT NOT NULL, kind TEXT NOT NULL,
    sort_key TEXT NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (server, study, observation_id)
);
"""
Record = PulledLab | UnmappedResult


@dataclass(frozen=True)
class Removal:
    """A row pulled earlier that is no longer a trial row."""

    observation_id: str
    result_id: str
    subject_id: str
    reason: str


@dataclass
class MergeResult:
    new_rows: list[PulledLab] = field(default_factory=list)  # new, or a newer version of a row
    new_unmapped: list[UnmappedResult] = field(default_factory=list)
    removed: list[Removal] = field(default_factory=list)
    unchanged: int = 0  # fetched again at the same version (the ``ge`` overlap)
    stale: int = 0  # older than what the store has
    total_rows: int = 0
    total_unmapped: int = 0


def _updated(text: str) -> str:
    """``meta.lastUpdated`` as a sortable UTC text (servers write +00:00, Z, or milliseconds)."""
    moment = parse_instant(text)
    return moment.astimezone(UTC).isoformat(timespec="microseconds") if moment else ""


def _sort_key(record: Record) -> str:
    if isinstance(record, PulledLab):
        return "\x1f".join((record.subject_id, record.collected_at, record.analyte, record.result_id))
    return "\x1f".join((record.subject_id, record.collected_at, record.observation_id))


def _newer(version: str, updated: str, old_version: str, old_updated: str) -> bool | None:
    """True if newer, False if older, None if the same version."""
    if version == old_version:
        return None
    if updated != old_updated:
        return updated > old_updated
    if version.isdigit() and old_version.isdigit():
        return int(version) > int(old_version)
    return True  # same instant, another version id: the one fetched now is the server's current one


class PullStore:
    def __init__(self, db: sqlite3.Connection, server: str, study: str) -> None:
        self._db = db
        self.server = server
        self.study = study
        db.executescript(_SCHEMA)

    def clear_stage(self) -> None:
        self._db.execute("DELETE FROM pull_stage WHERE server = ? AND study = ?", (self.server, self.study))

    def stage(self, records: Iterable[Record]) -> None:
        """Keep fetched records until the merge (a later fetch of the same observation replaces it)."""
        self._db.executemany(
            "INSERT OR REPLACE INTO pull_stage VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    self.server,
                    self.study,
                    r.observation_id,
                    r.version_id,
                    _updated(r.last_updated),
                    "row" if isinstance(r, PulledLab) else "unmapped",
                    _sort_key(r),
                    json.dumps(asdict(r), ensure_ascii=False),
                )
                for r in records
            ],
        )

    def merge(self, *, replace_all: bool) -> MergeResult:
        """Fold the stage into the store (inside the caller's transaction); ``replace_all``: drop the rest."""
        result = MergeResult()
        key = (self.server, self.study)
        staged = self._db.execute(
            "SELECT observation_id, version_id, updated, kind, sort_key, record FROM pull_stage "
            "WHERE server = ? AND study = ? ORDER BY sort_key",
            key,
        )
        for observation_id, version, updated, kind, sort_key, record in staged.fetchall():
            old = self._db.execute(
                "SELECT version_id, updated, kind, record FROM pull_store "
                "WHERE server = ? AND study = ? AND observation_id = ?",
                (*key, observation_id),
            ).fetchone()
            verdict = True if old is None else _newer(version, updated, old[0], old[1])
            if verdict is None:
                result.unchanged += 1
                continue
            if verdict is False:
                result.stale += 1
                continue
            self._db.execute(
                "INSERT OR REPLACE INTO pull_store VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, observation_id, version, updated, kind, sort_key, record),
            )
            fresh = json.loads(record)
            if kind == "row":
                result.new_rows.append(PulledLab(**fresh))
            else:
                result.new_unmapped.append(UnmappedResult(**fresh))
                if old is not None and old[2] == "row":
                    earlier = json.loads(old[3])
                    result.removed.append(
                        Removal(observation_id, earlier["result_id"], earlier["subject_id"], fresh["reason"])
                    )
        if replace_all:
            gone = self._db.execute(
                "SELECT observation_id, kind, record FROM pull_store WHERE server = ? AND study = ? "
                "AND observation_id NOT IN (SELECT observation_id FROM pull_stage WHERE server = ? AND study = ?)",
                (*key, *key),
            ).fetchall()
            for observation_id, kind, record in gone:
                if kind == "row":
                    earlier = json.loads(record)
                    result.removed.append(
                        Removal(observation_id, earlier["result_id"], earlier["subject_id"], "no longer on the server")
                    )
            self._db.execute(
                "DELETE FROM pull_store WHERE server = ? AND study = ? "
                "AND observation_id NOT IN (SELECT observation_id FROM pull_stage WHERE server = ? AND study = ?)",
                (*key, *key),
            )
        self.clear_stage()
        counts = dict(
            self._db.execute(
                "SELECT kind, COUNT(*) FROM pull_store WHERE server = ? AND study = ? GROUP BY kind", key
            ).fetchall()
        )
        result.total_rows, result.total_unmapped = counts.get("row", 0), counts.get("unmapped", 0)
        return result

    def rows(self) -> Iterator[PulledLab]:
        for (record,) in self._records("row"):
            yield PulledLab(**json.loads(record))

    def unmapped(self) -> Iterator[UnmappedResult]:
        for (record,) in self._records("unmapped"):
            yield UnmappedResult(**json.loads(record))

    def _records(self, kind: str) -> Iterator[tuple[str]]:
        cursor = self._db.execute(
            "SELECT record FROM pull_store WHERE server = ? AND study = ? AND kind = ? ORDER BY sort_key",
            (self.server, self.study, kind),
        )
        yield from cursor

    def write(self, output: Path) -> tuple[Path, Path]:
        """The rows file and its ``.unmapped`` companion, each replaced atomically."""
        return (
            write_rows(self.rows(), output, PulledLab),
            write_rows(self.unmapped(), unmapped_path(output), UnmappedResult),
        )


def unmapped_path(output: Path) -> Path:
    return output.with_name(output.stem + ".unmapped" + output.suffix)


def write_rows(rows: Iterable[Any], path: Path, row_type: type) -> Path:
    """CSV (streamed), or parquet when the path ends in .parquet and pyarrow is installed; atomic replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = [f.name for f in fields(row_type)]
    scratch = path.with_name(f".{path.name}.partial")
    try:
        if path.suffix == ".parquet":
            _write_parquet((asdict(row) for row in rows), columns, scratch)
        else:
            with scratch.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                for row in rows:
                    writer.writerow(asdict(row))
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(scratch, path)
    finally:
        scratch.unlink(missing_ok=True)
    return path


def _write_parquet(records: Iterable[dict[str, Any]], columns: list[str], path: Path) -> None:
    try:
        import pyarrow as pa  # type: ignore[import-not-found]
        import pyarrow.parquet as pq  # type: ignore[import-not-found]
    except ImportError:
        raise FhirLupusError("parquet output needs pyarrow (pip install pyarrow); use a .csv path") from None
    pq.write_table(pa.Table.from_pylist(list(records), schema=pa.schema([(c, pa.string()) for c in columns])), path)
