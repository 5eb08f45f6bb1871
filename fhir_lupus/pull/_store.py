"""The pulled rows of a study, kept in the journal's SQLite file on a connection of the store's own.
(Over 400 lines: the tables, the merge that moves rows and marks together, and the writers of its output are one
transaction's parts.)

A pull first stages what it fetched (``pull_stage``); then, in one SQLite transaction, it merges the stage
into the store (``pull_store``: the newer version of an observation wins, by ``meta.lastUpdated`` then
``versionId``), writes the output files from the store (written to a temporary file, synced, renamed), moves
the high-water mark and commits. If anything fails before the commit, the store and the mark stay as they
were and the next pull fetches the same results again; if the process dies after the files were renamed but
before the commit, the next pull merges the same results again and writes the same files. So ``--since auto``
keeps every row pulled before, never holds them all in memory, and cannot skip a result.

The tables live in the journal's file beside the mark (``pull_mark``), so that the merge and the mark commit
together; the store opens the file itself rather than borrowing the journal's connection. The file is in WAL
mode: the journal reads while the store writes, and a write of one waits (up to BUSY_SECONDS) for the other's
commit instead of failing.
"""

from __future__ import annotations

import csv
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC
from pathlib import Path
from typing import Any

import orjson

from fhir_lupus._scratch import create_private, discard, publish, scratch_file
from fhir_lupus.errors import FhirLupusError
from fhir_lupus.journal import record_high_water
from fhir_lupus.pull._reverse import PulledLab, UnmappedResult
from fhir_lupus.pull._search import parse_instant
from fhir_lupus.pull._spool import Spool, flat, record_text

__all__ = [
    "DELETED",
    "GONE",
    "MergeResult",
    "Prune",
    "PullStore",
    "Removal",
    "newer_record",
    "table_key",
    "table_order",
    "unmapped_path",
    "write_rows",
]

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
CREATE INDEX IF NOT EXISTS pull_stage_order ON pull_stage (server, study, sort_key, observation_id);
CREATE TABLE IF NOT EXISTS pull_patient_mark (
    server TEXT NOT NULL, study TEXT NOT NULL, patient TEXT NOT NULL, high_water TEXT NOT NULL,
    PRIMARY KEY (server, study, patient)
);
"""
Record = PulledLab | UnmappedResult
MERGE_BATCH = 1000  # staged records read at once by the merge: memory stays flat however large the pull
ID_BATCH = 500  # ids in one ``IN (...)`` of the prune (SQLite allows 32,766 variables; small keeps it quick)
BUSY_SECONDS = 30.0  # how long a write waits for the journal's (a pull writes its bulk job between stages)


@dataclass(frozen=True)
class Removal:
    """A row pulled earlier that is no longer a trial row."""

    observation_id: str
    result_id: str
    subject_id: str
    reason: str


# Why a row left the store: the server said it was deleted (history, an export's ``deleted`` part), or a listing
# of its subject's results (a full pull, a reconciliation of ids) no longer holds it.
DELETED = "deleted on the server"
GONE = "no longer on the server"


@dataclass(frozen=True)
class Prune:
    """What the merge removes besides replacing older versions: results the server no longer has.

    ``deleted``: ids the server says were deleted since the search start. ``listed``: every id the server holds
    for the subjects in scope (what was just fetched counts as listed), so an entry of theirs outside it is
    gone; None when no listing was made. ``subjects``: the subject ids in scope (None: all); an entry of any
    other subject is never touched, so a pull restricted to a few subjects cannot remove another's rows.
    """

    deleted: frozenset[str] = frozenset()
    listed: frozenset[str] | None = None
    subjects: frozenset[str] | None = None


@dataclass
class MergeResult:
    new_rows: Spool[PulledLab] = field(default_factory=lambda: Spool(PulledLab))  # new, or a newer version
    new_unmapped: Spool[UnmappedResult] = field(default_factory=lambda: Spool(UnmappedResult))
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


def table_order(records: Iterable[Record]) -> list[Record]:
    """``records`` in the order of the pull's output files (the store's sort key, then the observation id):
    for a table made elsewhere (the Spark path) that must equal the pull's."""
    return sorted(records, key=lambda r: (_sort_key(r), r.observation_id))


def table_key(record: Record) -> str:
    """The store's sort key of ``record``: a table sorted by it, then by the observation id, is in the pull's
    order; the Spark path sorts by this text with Spark's own sort (string order is code-point order there too)."""
    return _sort_key(record)


def newer_record(record: Record, kept: Record) -> bool:
    """Whether ``record`` replaces ``kept``, another copy of the same Observation, by the store's rule: for a
    table made elsewhere (the Spark path) that must keep what the pull's merge keeps."""
    verdict = _newer(record.version_id, _updated(record.last_updated), kept.version_id, _updated(kept.last_updated))
    return bool(verdict)


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
    """The rows pulled from ``server`` for ``study``, in the SQLite file at ``path`` (the journal's)."""

    def __init__(self, path: Path, server: str, study: str) -> None:
        self.server = server
        self.study = study
        # explicit BEGIN/COMMIT below, as the journal's; synchronous=FULL: a committed merge survives a crash
        create_private(path)  # the journal's file, mode 600 if it is new (it holds patient data)
        self._db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_SECONDS)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> PullStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back when the block raises (or the process dies): the merge, the
        output and the mark (``set_high_water``) all or nothing."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def set_high_water(self, mark: str) -> None:
        """Move the study's mark (read by ``Journal.high_water``), inside the transaction of the merge."""
        record_high_water(self._db, self.server, self.study, mark)

    def set_patient_marks(self, patients: Iterable[str], mark: str) -> None:
        """Move the marks of ``patients`` (a pull for a few of them, ``fhir-lupus watch``), inside the transaction
        of the merge. Kept as UTC text of one fixed form, so SQLite's ``max`` of two is the later: a mark never
        moves back."""
        utc = parse_instant(mark)
        if utc is None:
            return
        text = utc.astimezone(UTC).isoformat(timespec="microseconds")
        self._db.executemany(
            "INSERT INTO pull_patient_mark VALUES (?, ?, ?, ?) "
            "ON CONFLICT (server, study, patient) DO UPDATE SET high_water = max(high_water, excluded.high_water)",
            [(self.server, self.study, patient, text) for patient in patients],
        )

    def patient_marks(self, patients: Iterable[str]) -> dict[str, str]:
        """The marks of those of ``patients`` that a pull for a few patients left (``set_patient_marks``)."""
        wanted = list(patients)
        found: dict[str, str] = {}
        for start in range(0, len(wanted), MERGE_BATCH):
            chunk = wanted[start : start + MERGE_BATCH]
            found.update(
                self._db.execute(
                    "SELECT patient, high_water FROM pull_patient_mark WHERE server = ? AND study = ? "
                    f"AND patient IN ({','.join('?' * len(chunk))})",
                    (self.server, self.study, *chunk),
                ).fetchall()
            )
        return found

    def clear_stage(self) -> None:
        self._db.execute("DELETE FROM pull_stage WHERE server = ? AND study = ?", (self.server, self.study))

    def stage(self, records: Iterable[Record]) -> None:
        """Keep fetched records until the merge (a later fetch of the same observation replaces it).

        One transaction per call: the connection commits each statement on its own otherwise, and with
        ``synchronous=FULL`` every staged row cost a sync to disk (4 s for 1,330 rows here). Nor does a stage's
        commit wait for the disk (``synchronous=NORMAL`` for it): a stage lost in a crash is fetched again by the
        next pull, and the merge's commit, under FULL, syncs the write-ahead log with every stage before it.
        """
        if self._db.in_transaction:  # inside the caller's transaction: it commits
            self._insert_stage(records)
            return
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            with self.transaction():
                self._insert_stage(records)
        finally:
            self._db.execute("PRAGMA synchronous=FULL")

    def _insert_stage(self, records: Iterable[Record]) -> None:
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
                    record_text(r),
                )
                for r in records
            ],
        )

    def merge(self, *, replace_all: bool, prune: Prune | None = None) -> MergeResult:
        """Fold the stage into the store (inside the caller's transaction); ``replace_all``: drop the rest (what a
        ``Prune`` listing nothing beyond the stage does); ``prune``: drop what the server no longer has."""
        result = MergeResult()
        key = (self.server, self.study)
        for batch in self._staged():
            # what the store holds of this batch, in one look-up; the winners written in one statement
            ids = [staged[0] for staged in batch]
            known = {
                row[0]: row[1:]
                for row in self._db.execute(
                    "SELECT observation_id, version_id, updated, kind, record FROM pull_store "
                    f"WHERE server = ? AND study = ? AND observation_id IN ({','.join('?' * len(ids))})",
                    (*key, *ids),
                )
            }
            winners = []
            for observation_id, version, updated, kind, sort_key, record in batch:
                old = known.get(observation_id)
                verdict = True if old is None else _newer(version, updated, old[0], old[1])
                if verdict is None:
                    result.unchanged += 1
                    continue
                if verdict is False:
                    result.stale += 1
                    continue
                winners.append((*key, observation_id, version, updated, kind, sort_key, record))
                if kind == "row":
                    result.new_rows.append_json(record)
                    continue
                result.new_unmapped.append_json(record)
                if old is not None and old[2] == "row":
                    earlier, reason = orjson.loads(old[3]), orjson.loads(record)["reason"]
                    result.removed.append(Removal(observation_id, earlier["result_id"], earlier["subject_id"], reason))
            self._db.executemany("INSERT OR REPLACE INTO pull_store VALUES (?, ?, ?, ?, ?, ?, ?, ?)", winners)
        if replace_all or prune is not None:
            self._prune(prune or Prune(listed=frozenset()), result)
        self.clear_stage()
        counts = dict(
            self._db.execute(
                "SELECT kind, COUNT(*) FROM pull_store WHERE server = ? AND study = ? GROUP BY kind", key
            ).fetchall()
        )
        result.total_rows, result.total_unmapped = counts.get("row", 0), counts.get("unmapped", 0)
        return result

    def _prune(self, prune: Prune, result: MergeResult) -> None:
        """Delete the entries ``prune`` says are gone from the server (after the stage is merged, before it is
        cleared); each row among them is reported as a ``Removal``, set-aside results are dropped quietly."""
        doomed: set[str] = set()
        for observation_id, kind, record in self._pruned(prune):
            earlier = orjson.loads(record)
            if observation_id in doomed or (prune.subjects is not None and earlier["subject_id"] not in prune.subjects):
                continue
            if observation_id in prune.deleted:
                reason = DELETED
            elif prune.listed is not None and observation_id not in prune.listed:
                reason = GONE
            else:
                continue
            doomed.add(observation_id)
            if kind == "row":
                result.removed.append(Removal(observation_id, earlier["result_id"], earlier["subject_id"], reason))
        self._db.executemany(
            "DELETE FROM pull_store WHERE server = ? AND study = ? AND observation_id = ?",
            [(self.server, self.study, observation_id) for observation_id in doomed],
        )

    def _pruned(self, prune: Prune) -> Iterator[tuple[str, str, str]]:
        """The entries ``prune`` may remove, read lazily: those deleted, and (with a listing) all not just fetched."""
        key = (self.server, self.study)
        deleted = sorted(prune.deleted)
        for start in range(0, len(deleted), ID_BATCH):
            ids = deleted[start : start + ID_BATCH]
            yield from self._db.execute(
                "SELECT observation_id, kind, record FROM pull_store WHERE server = ? AND study = ? "
                f"AND observation_id IN ({','.join('?' * len(ids))})",
                (*key, *ids),
            )
        if prune.listed is not None:  # the stage is listed too: what was just fetched is on the server
            yield from self._db.execute(
                "SELECT observation_id, kind, record FROM pull_store WHERE server = ? AND study = ? "
                "AND observation_id NOT IN (SELECT observation_id FROM pull_stage WHERE server = ? AND study = ?)",
                (*key, *key),
            )

    def _staged(self) -> Iterator[list[tuple[str, str, str, str, str, str]]]:
        """The stage in output order, a bounded batch at a time (the merge writes between batches)."""
        after = ("", "")
        while True:
            batch = self._db.execute(
                "SELECT observation_id, version_id, updated, kind, sort_key, record FROM pull_stage "
                "WHERE server = ? AND study = ? AND (sort_key, observation_id) > (?, ?) "
                "ORDER BY sort_key, observation_id LIMIT ?",
                (self.server, self.study, after[1], after[0], MERGE_BATCH),
            ).fetchall()
            if batch:
                yield batch
            if len(batch) < MERGE_BATCH:
                return
            after = (batch[-1][0], batch[-1][4])

    def rows(self) -> Iterator[PulledLab]:
        for (record,) in self._records("row"):
            yield PulledLab(**orjson.loads(record))

    def unmapped(self) -> Iterator[UnmappedResult]:
        for (record,) in self._records("unmapped"):
            yield UnmappedResult(**orjson.loads(record))

    def _records(self, kind: str) -> Iterator[tuple[str]]:
        cursor = self._db.execute(
            "SELECT record FROM pull_store WHERE server = ? AND study = ? AND kind = ? ORDER BY sort_key",
            (self.server, self.study, kind),
        )
        yield from cursor

    def write(self, output: Path) -> tuple[Path, Path]:
        """The rows file and its ``.unmapped`` companion, each replaced atomically (from the stored records as
        they are: the same columns, without building the objects)."""
        return (
            write_rows((orjson.loads(r) for (r,) in self._records("row")), output, PulledLab),
            write_rows((orjson.loads(r) for (r,) in self._records("unmapped")), unmapped_path(output), UnmappedResult),
        )


def unmapped_path(output: Path) -> Path:
    return output.with_name(output.stem + ".unmapped" + output.suffix)


def write_rows(rows: Iterable[Any], path: Path, row_type: type) -> Path:
    """CSV (streamed), or parquet when the path ends in .parquet and pyarrow is installed; atomic replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = [f.name for f in fields(row_type)]
    descriptor, scratch = scratch_file(path.parent, path.name)  # fhir_lupus/_scratch.py: swept if killed
    os.close(descriptor)
    try:
        if path.suffix == ".parquet":
            _write_parquet((flat(row) for row in rows), columns, scratch)
        else:
            with scratch.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)  # what DictWriter writes, without its per-row check of the keys
                writer.writerow(columns)
                writer.writerows([flat.get(c, "") for c in columns] for flat in map(flat, rows))
                handle.flush()
                os.fsync(handle.fileno())
        publish(scratch, path)  # private while written; then as open() makes a file (an output the user named)
    finally:
        discard(scratch)
    return path


def _write_parquet(records: Iterable[dict[str, Any]], columns: list[str], path: Path) -> None:
    try:
        import pyarrow as pa  # type: ignore[import-not-found]
        import pyarrow.parquet as pq  # type: ignore[import-not-found]
    except ImportError:
        raise FhirLupusError("parquet output needs pyarrow (pip install pyarrow); use a .csv path") from None
    pq.write_table(pa.Table.from_pylist(list(records), schema=pa.schema([(c, pa.string()) for c in columns])), path)
