"""What the journal remembers so that a push need not map a subject whose inputs did not change.

Three tables beside the journal's own (fhir_lupus/journal.py), per server:
- ``subject_resource``: which subject each resource of ours was mapped from, with the content hash it had;
  written when a push has planned the subject's window, before anything of it is sent;
- ``subject_input``: the subject's input digest (``_inputs``), stored once every resource of the subject is
  confirmed on the server with that very content (a write the server answered, or a look-up that found it
  equal); a subject with anything held back, refused or unsent has none, and is mapped again next time;
- ``push_mark``: the last complete push, with the server's time at its start and at its end; the next push asks
  the server what changed since (``_since``), which is what lets it trust the journal for the rest.
The study-level resources are few and always mapped, so they are not in these tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from fhir_lupus.journal import Journal

__all__ = ["Mark", "SettledGroup", "SettledStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS subject_resource (
    server        TEXT NOT NULL,
    subject       TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    business_key  TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    PRIMARY KEY (server, resource_type, business_key)
);
CREATE INDEX IF NOT EXISTS subject_resource_subject ON subject_resource (server, subject);
CREATE TABLE IF NOT EXISTS subject_input (
    server  TEXT NOT NULL,
    subject TEXT NOT NULL,
    digest  TEXT NOT NULL,
    PRIMARY KEY (server, subject)
);
CREATE TABLE IF NOT EXISTS push_mark (
    server  TEXT PRIMARY KEY,
    push_id TEXT NOT NULL,
    since   TEXT NOT NULL,
    until   TEXT NOT NULL
);
"""
_IN_CHUNK = 400  # SQLite host parameters per IN (...) list, as the journal's own


@dataclass(frozen=True)
class Mark:
    """The last complete push (``push_id``) and the server times the next look starts from (``_since``): ``since``
    its start, ``until`` its end (both already moved back by their margins)."""

    push_id: str
    since: str
    until: str


@dataclass(frozen=True)
class SettledGroup:
    """A subject the push did not map: its resources as the journal holds them, offered as unchanged (their
    content hashes go into the audit digest: they are what the server confirmed)."""

    subject: str
    hashes: tuple[str, ...]


class SettledStore:
    """The three tables of the module docstring for one journal and server."""

    def __init__(self, journal: Journal, server: str) -> None:
        self.journal, self.server = journal, server
        with journal.transaction() as db:
            for statement in _statements(_SCHEMA):  # not executescript: it would commit the open transaction
                db.execute(statement)

    def digests(self) -> dict[str, str]:
        """subject -> the input digest stored when all its resources were last confirmed."""
        with self.journal.transaction() as db:
            rows = db.execute("SELECT subject, digest FROM subject_input WHERE server = ?", (self.server,))
            return {str(row[0]): str(row[1]) for row in rows}

    def mark(self) -> Mark | None:
        with self.journal.transaction() as db:
            row = db.execute("SELECT push_id, since, until FROM push_mark WHERE server = ?", (self.server,)).fetchone()
            return Mark(str(row[0]), str(row[1]), str(row[2])) if row else None

    def set_mark(self, mark: Mark) -> None:
        with self.journal.transaction() as db:
            db.execute(
                "INSERT INTO push_mark VALUES (?, ?, ?, ?) ON CONFLICT (server) DO UPDATE SET "
                "push_id = excluded.push_id, since = excluded.since, until = excluded.until",
                (self.server, mark.push_id, mark.since, mark.until),
            )

    def written_since(self, push_id: str, resource_type: str) -> int:
        """How many resources of the type the journal last recorded as written (created or updated) by the push
        ``push_id`` or one started after it: what a search of the server since that push must find at least."""
        with self.journal.transaction() as db:
            row = db.execute(
                "SELECT COUNT(*) FROM resource WHERE server = ? AND resource_type = ? AND server_id IS NOT NULL "
                "AND last_outcome IN ('created', 'updated') AND push_id IN (SELECT push_id FROM push "
                "WHERE server = ? AND rowid >= (SELECT rowid FROM push WHERE push_id = ?))",
                (self.server, resource_type, self.server, push_id),
            ).fetchone()
            return int(row[0])

    def remember(self, subjects: Mapping[str, Sequence[tuple[str, str, str]]]) -> None:
        """Each subject's resources as mapped now, (type, business key, content hash), in one transaction; their
        digests are forgotten until ``confirm`` finds them all on the server."""
        if not subjects:
            return
        with self.journal.transaction() as db:
            for subject, resources in subjects.items():
                db.execute("DELETE FROM subject_input WHERE server = ? AND subject = ?", (self.server, subject))
                db.execute("DELETE FROM subject_resource WHERE server = ? AND subject = ?", (self.server, subject))
                db.executemany(
                    "INSERT INTO subject_resource VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (server, resource_type, business_key) "
                    "DO UPDATE SET subject = excluded.subject, content_hash = excluded.content_hash",
                    [(self.server, subject, kind, key, digest) for kind, key, digest in resources],
                )

    def confirm(self, digests: Mapping[str, str]) -> list[str]:
        """Store the digest of each subject whose every resource the journal holds as confirmed with the content
        it was mapped to; returns those subjects."""
        confirmed = []
        with self.journal.transaction() as db:
            for subject, digest in digests.items():
                missing = db.execute(
                    "SELECT COUNT(*) FROM subject_resource s LEFT JOIN resource r ON r.server = s.server "
                    "AND r.resource_type = s.resource_type AND r.business_key = s.business_key "
                    "WHERE s.server = ? AND s.subject = ? "
                    "AND (r.server_id IS NULL OR r.content_hash != s.content_hash)",
                    (self.server, subject),
                ).fetchone()[0]
                if missing:
                    continue
                db.execute(
                    "INSERT INTO subject_input VALUES (?, ?, ?) "
                    "ON CONFLICT (server, subject) DO UPDATE SET digest = excluded.digest",
                    (self.server, subject, digest),
                )
                confirmed.append(subject)
        return confirmed

    def settled(self, subject: str) -> SettledGroup:
        """The subject's resources as the journal holds them confirmed (the hashes the server has)."""
        with self.journal.transaction() as db:
            rows = db.execute(
                "SELECT r.content_hash FROM subject_resource s JOIN resource r ON r.server = s.server "
                "AND r.resource_type = s.resource_type AND r.business_key = s.business_key "
                "WHERE s.server = ? AND s.subject = ? ORDER BY s.resource_type, s.business_key",
                (self.server, subject),
            )
            return SettledGroup(subject, tuple(str(row[0]) for row in rows))

    def subjects_of(self, keys: Iterable[tuple[str, str]]) -> set[str]:
        """The subjects these (type, business key) pairs were mapped from (study-level keys have none)."""
        found: set[str] = set()
        with self.journal.transaction() as db:
            for resource_type, key in keys:
                row = db.execute(
                    "SELECT subject FROM subject_resource WHERE server = ? AND resource_type = ? AND business_key = ?",
                    (self.server, resource_type, key),
                ).fetchone()
                if row:
                    found.add(str(row[0]))
        return found

    def types(self) -> list[str]:
        """Every type the journal holds a resource of on this server: the types a push wrote there."""
        with self.journal.transaction() as db:
            rows = db.execute("SELECT DISTINCT resource_type FROM resource WHERE server = ?", (self.server,))
            return sorted(str(row[0]) for row in rows)

    def by_server_id(self, resource_type: str, ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """server id -> (business key, version id) of ours among ``ids``."""
        found: dict[str, tuple[str, str | None]] = {}
        with self.journal.transaction() as db:
            for part in _chunks(sorted(set(ids))):
                rows = db.execute(
                    "SELECT server_id, business_key, version_id FROM resource WHERE server = ? AND resource_type = ? "
                    f"AND server_id IN ({','.join('?' * len(part))})",
                    (self.server, resource_type, *part),
                )
                found.update({str(row[0]): (str(row[1]), row[2]) for row in rows})
        return found


def _statements(script: str) -> Iterator[str]:
    return (part.strip() for part in script.split(";") if part.strip())


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]
