"""The push/pull journal: a local SQLite file that makes pushes resumable and pulls incremental.

Per server and resource (type + business identifier) it keeps the content hash last sent, the server's id
and versionId, and the last outcome; per server and study the pull high-water mark. Each chunk's results
are committed in one SQLite transaction, so a push killed at any point resumes from what the server
confirmed (re-sending the unconfirmed chunk is harmless: every write is conditional).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["Journal", "JournalEntry"]

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
    PRIMARY KEY (server, resource_type, business_key)
);
CREATE TABLE IF NOT EXISTS push (
    push_id      TEXT PRIMARY KEY,
    server       TEXT NOT NULL,
    source       TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    status       TEXT NOT NULL,
    summary      TEXT
);
CREATE TABLE IF NOT EXISTS pull_mark (
    server     TEXT NOT NULL,
    study      TEXT NOT NULL,
    high_water TEXT NOT NULL,
    PRIMARY KEY (server, study)
);
"""


@dataclass(frozen=True)
class JournalEntry:
    resource_type: str
    business_key: str
    content_hash: str
    server_id: str | None
    version_id: str | None
    last_outcome: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Journal:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)  # explicit BEGIN/COMMIT below
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a confirmed chunk survives a crash
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def entries(self, server: str) -> dict[tuple[str, str], JournalEntry]:
        rows = self._db.execute(
            "SELECT resource_type, business_key, content_hash, server_id, version_id, last_outcome "
            "FROM resource WHERE server = ?",
            (server,),
        )
        return {(row[0], row[1]): JournalEntry(*row) for row in rows}

    def record(self, server: str, push_id: str, entries: list[JournalEntry]) -> None:
        """Store the outcome of one confirmed chunk, all or nothing."""
        now = _now()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT INTO resource VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (server, resource_type, business_key) DO UPDATE SET content_hash = excluded.content_hash, "
                "server_id = excluded.server_id, version_id = excluded.version_id, "
                "last_outcome = excluded.last_outcome, push_id = excluded.push_id, updated_at = excluded.updated_at",
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
                    )
                    for e in entries
                ],
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def start_push(self, push_id: str, server: str, source: str) -> None:
        self._db.execute(
            "INSERT INTO push (push_id, server, source, started_at, status) VALUES (?, ?, ?, ?, 'running')",
            (push_id, server, source, _now()),
        )

    def finish_push(self, push_id: str, status: str, summary: str) -> None:
        self._db.execute(
            "UPDATE push SET finished_at = ?, status = ?, summary = ? WHERE push_id = ?",
            (_now(), status, summary, push_id),
        )

    def pushes(self, server: str) -> list[tuple[str, str, str]]:
        """(push_id, status, summary) of every push to ``server``, oldest first."""
        rows = self._db.execute(
            "SELECT push_id, status, COALESCE(summary, '') FROM push WHERE server = ? ORDER BY started_at",
            (server,),
        )
        return [(row[0], row[1], row[2]) for row in rows]

    def high_water(self, server: str, study: str) -> str | None:
        row = self._db.execute(
            "SELECT high_water FROM pull_mark WHERE server = ? AND study = ?", (server, study)
        ).fetchone()
        return row[0] if row else None

    def set_high_water(self, server: str, study: str, mark: str) -> None:
        self._db.execute(
            "INSERT INTO pull_mark VALUES (?, ?, ?) "
            "ON CONFLICT (server, study) DO UPDATE SET high_water = excluded.high_water",
            (server, study, mark),
        )
