"""The push/pull journal: a local SQLite file that makes pushes resumable and pulls incremental.
Over 400 lines: one class over one file, one table per thing remembered, all under the one lock.

Per server and resource (type + business key) it keeps the content hash last confirmed, the server's id and
versionId, the last outcome and our own (deterministic) reference, so later batches and later pushes can
point at the server's id. Per push: its status, what it wrote, the references still waiting for their
Provenance, and the Provenance once written. Per server and chunk kind: the largest Bundle the server
accepted. Per server and study: the pull high-water mark and the rows pulled so far (``pull_store``, written by
``fhir_lupus.pull``'s store on a connection of its own, which moves the mark with its merge). Per audit
log: the last entry appended (``fhir_lupus.audit``), the anchor that shows a removed tail. Per server: the site
profile's systems its resources were last written under (a change would re-key them).

One Journal may be shared by the threads of a push (``concurrency`` > 1): every method runs under one lock,
so a worker's chunk record never interleaves with the planner's reads on the same connection.

Each chunk's results are committed in one SQLite transaction, so a push killed at any point resumes from
what the server confirmed (re-sending the unconfirmed chunk is harmless: a look-up settles it first, and
every write is conditional or addressed by id).
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from fhir_lupus._scratch import create_private

__all__ = ["BulkJob", "Journal", "JournalEntry", "PushRecord", "record_high_water"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resource (
    server        TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    business_key  TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    server_id     TEXT,
    version_id    TEXT,
    last_outcome  TEXT NOT NULL,
    push_id       TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    local_ref     TEXT,
    PRIMARY KEY (server, resource_type, business_key)
);
CREATE TABLE IF NOT EXISTS push (
    push_id      TEXT PRIMARY KEY,
    server       TEXT NOT NULL,
    source       TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    status       TEXT NOT NULL,
    summary      TEXT,
    written      INTEGER NOT NULL DEFAULT 0,
    provenance   TEXT
);
CREATE TABLE IF NOT EXISTS push_target (
    push_id   TEXT NOT NULL,
    reference TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS push_target_push ON push_target (push_id);
CREATE TABLE IF NOT EXISTS write_limit (
    server TEXT NOT NULL,
    kind   TEXT NOT NULL,
    size   INTEGER NOT NULL,
    PRIMARY KEY (server, kind)
);
CREATE TABLE IF NOT EXISTS pull_mark (
    server     TEXT NOT NULL,
    study      TEXT NOT NULL,
    high_water TEXT NOT NULL,
    PRIMARY KEY (server, study)
);
CREATE TABLE IF NOT EXISTS bulk_export (
    server     TEXT NOT NULL,
    study      TEXT NOT NULL,
    request    TEXT NOT NULL,
    status_url TEXT NOT NULL,
    kicked_off TEXT NOT NULL,
    PRIMARY KEY (server, study)
);
CREATE TABLE IF NOT EXISTS site_system (
    server TEXT NOT NULL,
    name   TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (server, name)
);
CREATE TABLE IF NOT EXISTS audit_head (
    log  TEXT PRIMARY KEY,
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
"""

# Columns added after the first release: a journal written by an older version gains them on opening.
_ADDED_COLUMNS = {
    "resource": {"local_ref": "TEXT"},
    "push": {"written": "INTEGER NOT NULL DEFAULT 0", "provenance": "TEXT"},
}
_LOCAL_REF_INDEX = "CREATE INDEX IF NOT EXISTS resource_local_ref ON resource (server, local_ref)"
_IN_CHUNK = 400  # SQLite host parameters per IN (...) list, well below its limit


@dataclass(frozen=True)
class JournalEntry:
    resource_type: str
    business_key: str
    content_hash: str
    server_id: str | None
    version_id: str | None
    last_outcome: str
    local_ref: str | None = None


@dataclass(frozen=True)
class PushRecord:
    push_id: str
    status: str
    summary: str
    written: int
    provenance: str | None
    source: str
    started_at: str


@dataclass(frozen=True)
class BulkJob:
    """An export job a pull started: what it asked (``ExportRequest.describe()``) and where to ask for it."""

    request: str
    status_url: str
    kicked_off: str


_F = TypeVar("_F", bound=Callable[..., Any])


def _serialized(method: _F) -> _F:
    """Run the method under the journal's lock (a push's worker threads share one connection)."""

    @functools.wraps(method)
    def locked(self: Journal, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked  # type: ignore[return-value]


def record_high_water(db: sqlite3.Connection, server: str, study: str, mark: str) -> None:
    """Write the pull mark on ``db``: the journal's connection, or the pull store's inside the transaction of its
    merge (the mark moves only with the rows it covers)."""
    db.execute(
        "INSERT INTO pull_mark VALUES (?, ?, ?) "
        "ON CONFLICT (server, study) DO UPDATE SET high_water = excluded.high_water",
        (server, study, mark),
    )


def _copied(path: Path) -> sqlite3.Connection:
    """The journal file at ``path`` copied into memory. A journal in use, or left by a killed run, has its -wal
    (its last commits) and -shm: read through them. A closed one has none, and SQLite would make them even to
    read it: it is read as immutable instead."""
    memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    if path.exists():
        sides = all(path.with_name(path.name + side).exists() for side in ("-wal", "-shm"))
        source = sqlite3.connect(path.resolve().as_uri() + ("?mode=ro" if sides else "?immutable=1"), uri=True)
        try:
            source.backup(memory)
        finally:
            source.close()
    return memory


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


class Journal:
    def __init__(self, path: Path, *, in_memory: bool = False) -> None:
        """The journal at ``path``, made if absent: mode 600, and so its -wal and -shm (it holds patients'
        identifiers). ``in_memory``: a copy of the file as it is now (empty if there is none), read and changed in
        memory only: a dry run writes nothing, not even SQLite's side files."""
        self.path = path
        self._lock = threading.RLock()
        # explicit BEGIN/COMMIT below; shared by a push's threads, always under self._lock
        if in_memory:
            self._db = _copied(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            create_private(path)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a confirmed chunk survives a crash
        self._db.executescript(_SCHEMA)
        for table, columns in _ADDED_COLUMNS.items():
            present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for column, declaration in columns.items():
                if column not in present:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        self._db.execute(_LOCAL_REF_INDEX)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back when the block raises (or the process dies)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- resources ------------------------------------------------------------------------------------------

    @_serialized
    def entries(self, server: str) -> dict[tuple[str, str], JournalEntry]:
        """Every resource recorded for ``server`` (tests and reports; pushes look up by key instead)."""
        rows = self._db.execute(
            "SELECT resource_type, business_key, content_hash, server_id, version_id, last_outcome, local_ref "
            "FROM resource WHERE server = ?",
            (server,),
        )
        return {(row[0], row[1]): JournalEntry(*row) for row in rows}

    @_serialized
    def lookup(self, server: str, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], JournalEntry]:
        """The recorded entries for these (resource type, business key) pairs; absent ones are left out."""
        by_type: dict[str, list[str]] = {}
        for resource_type, key in keys:
            by_type.setdefault(resource_type, []).append(key)
        found: dict[tuple[str, str], JournalEntry] = {}
        for resource_type, wanted in by_type.items():
            for part in _chunks(sorted(set(wanted))):
                marks = ",".join("?" * len(part))
                rows = self._db.execute(
                    "SELECT resource_type, business_key, content_hash, server_id, version_id, last_outcome, local_ref "
                    f"FROM resource WHERE server = ? AND resource_type = ? AND business_key IN ({marks})",
                    (server, resource_type, *part),
                )
                found.update({(row[0], row[1]): JournalEntry(*row) for row in rows})
        return found

    @_serialized
    def confirmed_hash(self, server: str, resource_type: str, key: str) -> str | None:
        """The content hash last confirmed on ``server`` for this key (None: never written or matched there)."""
        row = self._db.execute(
            "SELECT content_hash FROM resource WHERE server = ? AND resource_type = ? AND business_key = ? "
            "AND server_id IS NOT NULL",
            (server, resource_type, key),
        ).fetchone()
        return str(row[0]) if row else None

    @_serialized
    def holds_confirmed(self, server: str) -> bool:
        """Whether any resource is confirmed on ``server``: a first push need not ask about each one."""
        query = "SELECT 1 FROM resource WHERE server = ? AND server_id IS NOT NULL LIMIT 1"
        return self._db.execute(query, (server,)).fetchone() is not None

    @_serialized
    def server_refs(self, server: str, local_refs: Iterable[str]) -> dict[str, str]:
        """``Type/local-id`` -> ``Type/server-id`` for the resources the server is known to hold."""
        found: dict[str, str] = {}
        for part in _chunks(sorted(set(local_refs))):
            rows = self._db.execute(
                "SELECT local_ref, resource_type, server_id FROM resource "
                f"WHERE server = ? AND server_id IS NOT NULL AND local_ref IN ({','.join('?' * len(part))})",
                (server, *part),
            )
            found.update({row[0]: f"{row[1]}/{row[2]}" for row in rows})
        return found

    def record(self, server: str, push_id: str, entries: list[JournalEntry], *, targets: Iterable[str] = ()) -> None:
        """Store the outcome of one confirmed chunk, all or nothing; ``targets`` await this push's Provenance."""
        now = _now()
        target_rows = [(push_id, reference) for reference in targets]
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO resource VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (server, resource_type, business_key) DO UPDATE SET content_hash = excluded.content_hash, "
                "server_id = excluded.server_id, version_id = excluded.version_id, "
                "last_outcome = excluded.last_outcome, push_id = excluded.push_id, updated_at = excluded.updated_at, "
                "local_ref = COALESCE(excluded.local_ref, resource.local_ref)",
                [
                    (
                        server,
                        e.resource_type,
                        e.business_key,
                        e.content_hash,
                        e.server_id,
                        e.version_id,
                        e.last_outcome,
                        push_id,
                        now,
                        e.local_ref,
                    )
                    for e in entries
                ],
            )
            db.executemany("INSERT INTO push_target VALUES (?, ?)", target_rows)
            if target_rows:
                db.execute("UPDATE push SET written = written + ? WHERE push_id = ?", (len(target_rows), push_id))

    # -- pushes ---------------------------------------------------------------------------------------------

    @_serialized
    def start_push(self, push_id: str, server: str, source: str) -> None:
        self._db.execute(
            "INSERT INTO push (push_id, server, source, started_at, status) VALUES (?, ?, ?, ?, 'running')",
            (push_id, server, source, _now()),
        )

    @_serialized
    def finish_push(self, push_id: str, status: str, summary: str) -> None:
        self._db.execute(
            "UPDATE push SET finished_at = ?, status = ?, summary = ? WHERE push_id = ?",
            (_now(), status, summary, push_id),
        )

    def pushes(self, server: str) -> list[tuple[str, str, str]]:
        """(push_id, status, summary) of every push to ``server``, oldest first."""
        return [(p.push_id, p.status, p.summary) for p in self.push_records(server)]

    @_serialized
    def push_records(self, server: str) -> list[PushRecord]:
        rows = self._db.execute(
            "SELECT push_id, status, COALESCE(summary, ''), written, provenance, source, started_at "
            "FROM push WHERE server = ? ORDER BY started_at, rowid",
            (server,),
        )
        return [PushRecord(*row) for row in rows]

    def awaiting_provenance(self, server: str) -> list[PushRecord]:
        """Pushes to ``server`` that wrote something and have no Provenance yet (failed, killed, or refused)."""
        return [p for p in self.push_records(server) if p.written and not p.provenance]

    @_serialized
    def targets(self, push_id: str) -> list[str]:
        rows = self._db.execute("SELECT reference FROM push_target WHERE push_id = ? ORDER BY rowid", (push_id,))
        return [row[0] for row in rows]

    @_serialized
    def provenance_written(self, push_id: str, reference: str) -> None:
        """The push's Provenance exists: keep its reference, forget the target list."""
        with self.transaction() as db:
            db.execute("UPDATE push SET provenance = ? WHERE push_id = ?", (reference, push_id))
            db.execute("DELETE FROM push_target WHERE push_id = ?", (push_id,))

    # -- write limits ---------------------------------------------------------------------------------------

    @_serialized
    def write_limits(self, server: str) -> dict[str, int]:
        """The largest Bundle size per chunk kind that ``server`` accepted after refusing a larger one."""
        rows = self._db.execute("SELECT kind, size FROM write_limit WHERE server = ?", (server,))
        return {row[0]: int(row[1]) for row in rows}

    @_serialized
    def set_write_limit(self, server: str, kind: str, size: int) -> None:
        self._db.execute(
            "INSERT INTO write_limit VALUES (?, ?, ?) ON CONFLICT (server, kind) DO UPDATE SET size = excluded.size",
            (server, kind, size),
        )

    # -- pull high-water mark -------------------------------------------------------------------------------

    @_serialized
    def high_water(self, server: str, study: str) -> str | None:
        row = self._db.execute(
            "SELECT high_water FROM pull_mark WHERE server = ? AND study = ?", (server, study)
        ).fetchone()
        return row[0] if row else None

    @_serialized
    def set_high_water(self, server: str, study: str, mark: str) -> None:
        record_high_water(self._db, server, study, mark)

    # -- bulk export in progress (pull --bulk) ----------------------------------------------------------------

    @_serialized
    def bulk_export(self, server: str, study: str) -> BulkJob | None:
        """The export a pull of ``study`` from ``server`` started and did not finish: resumed, not kicked off twice."""
        row = self._db.execute(
            "SELECT request, status_url, kicked_off FROM bulk_export WHERE server = ? AND study = ?", (server, study)
        ).fetchone()
        return BulkJob(str(row[0]), str(row[1]), str(row[2])) if row else None

    @_serialized
    def set_bulk_export(self, server: str, study: str, job: BulkJob) -> None:
        """Kept as soon as the server accepted the kick-off (committed at once: it must survive a crash)."""
        self._db.execute(
            "INSERT INTO bulk_export VALUES (?, ?, ?, ?, ?) ON CONFLICT (server, study) DO UPDATE SET "
            "request = excluded.request, status_url = excluded.status_url, kicked_off = excluded.kicked_off",
            (server, study, job.request, job.status_url, job.kicked_off),
        )

    @_serialized
    def end_bulk_export(self, server: str, study: str) -> None:
        self._db.execute("DELETE FROM bulk_export WHERE server = ? AND study = ?", (server, study))

    # -- the site's systems per server ---------------------------------------------------------------------

    @_serialized
    def site_systems(self, server: str) -> dict[str, str]:
        """The systems (``MappingPack.site_systems``) the last push that wrote to ``server`` wrote under."""
        rows = self._db.execute("SELECT name, value FROM site_system WHERE server = ?", (server,))
        return {str(row[0]): str(row[1]) for row in rows}

    def set_site_systems(self, server: str, systems: dict[str, str]) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM site_system WHERE server = ?", (server,))
            db.executemany("INSERT INTO site_system VALUES (?, ?, ?)", [(server, *item) for item in systems.items()])

    # -- audit anchor ---------------------------------------------------------------------------------------

    @_serialized
    def set_audit_head(self, log: Path, seq: int, digest: str) -> None:
        """The last audit entry this journal's pushes and pulls appended (``audit verify`` finds it in the log)."""
        self._db.execute(
            "INSERT INTO audit_head VALUES (?, ?, ?) ON CONFLICT (log) DO UPDATE SET seq = excluded.seq, "
            "hash = excluded.hash",
            (str(log.resolve()), seq, digest),
        )

    @_serialized
    def audit_head(self, log: Path) -> tuple[int, str] | None:
        row = self._db.execute("SELECT seq, hash FROM audit_head WHERE log = ?", (str(log.resolve()),)).fetchone()
        return (int(row[0]), str(row[1])) if row else None
