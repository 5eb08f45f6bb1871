"""What a subject's resources are made of: one digest per subject of everything that shapes them.

A push that finds a subject's digest equal to the one stored when all of that subject's resources were confirmed
on the server does not map it again (``_settled``): the same inputs give the same resources. So the digest must
change whenever the output could:
- the subject's own rows: every row of every CSV file of the data directory whose ``subject_id`` names an
  enrolled subject (subjects.csv), hashed as read, with its file's name;
- everything else, folded into every subject's digest (a change there maps every subject again): the other rows
  (a screened candidate who did not enrol, a subject id subjects.csv does not hold, a file without that column),
  every CSV file's header, every other file of the directory (trial.txt), the content of every file of the
  mapping pack (studies, checks, lab catalogue, FHIR rules), the site profile, the FHIR version, the validation
  mode, and the tool itself: its version and the source of the package (a fix in a mapper changes the output
  without changing the version of a checkout).
Rows are attributed as the file holds them, not as the loader reads them: a row whose subject cell names no
enrolled subject exactly goes to the shared part, so no row can change unseen in the wrong subject's digest.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from fhir_lupus._version import __version__
from fhir_lupus.settings import Settings

__all__ = ["SUBJECT_COLUMN", "input_digests", "tool_digest", "unchanged_subjects"]

SUBJECT_COLUMN = "subject_id"
_SUBJECTS_FILE = "subjects.csv"
_PACKAGE = Path(__file__).resolve().parent.parent  # fhir_lupus/


def _feed(digest: hashlib._Hash, *parts: str) -> None:
    """Each part length-prefixed, so that no two different sequences of parts hash alike."""
    for part in parts:
        data = part.encode("utf-8", "surrogateescape")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)


def _tree_digest(root: Path, pattern: str) -> str:
    """The names and bytes of every file under ``root`` matching ``pattern``, in name order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob(pattern) if p.is_file() and "__pycache__" not in p.parts):
        _feed(digest, path.relative_to(root).as_posix())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def tool_digest() -> str:
    """The tool: its version and its package's source (what maps, checks and validates)."""
    return f"{__version__}:{_tree_digest(_PACKAGE, '*.py')}"


def _rows(path: Path) -> tuple[list[str], Iterable[list[str]]]:
    text = path.read_text(encoding="utf-8-sig", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, [])
    return header, reader


def _enrolled(data_dir: Path) -> set[str]:
    path = data_dir / _SUBJECTS_FILE
    if not path.is_file():
        return set()
    header, rows = _rows(path)
    if SUBJECT_COLUMN not in header:
        return set()
    column = header.index(SUBJECT_COLUMN)
    return {row[column] for row in rows if len(row) > column and row[column]}


def input_digests(data_dir: Path, settings: Settings, fhir_version: str) -> dict[str, str]:
    """subject id (as subjects.csv writes it) -> the digest of everything its resources are made of (see the
    module docstring). Two calls over the same inputs give the same digests, in any process."""
    enrolled = _enrolled(data_dir)
    shared = hashlib.sha256()
    own: dict[str, hashlib._Hash] = {subject: hashlib.sha256() for subject in enrolled}
    _feed(shared, tool_digest(), fhir_version, settings.validation)
    _feed(shared, _tree_digest(settings.pack.root, "*"), settings.pack.site.model_dump_json(exclude={"source"}))
    for path in sorted(p for p in data_dir.iterdir() if p.is_file()):
        if path.suffix.lower() != ".csv":
            _feed(shared, path.name, hashlib.sha256(path.read_bytes()).hexdigest())
            continue
        header, rows = _rows(path)
        _feed(shared, path.name, *header)
        column = header.index(SUBJECT_COLUMN) if SUBJECT_COLUMN in header else None
        for number, row in enumerate(rows):
            subject = row[column] if column is not None and len(row) > column else None
            if subject in own:  # one JSON array a line: unambiguous, and one hash update per row
                own[subject].update(json.dumps([path.name, *row]).encode() + b"\n")
            else:  # rows are numbered here: the shared part must change when rows move between its parts
                shared.update(json.dumps([path.name, number, *row]).encode() + b"\n")
    common = shared.hexdigest()
    return {subject: _combined(common, digest.hexdigest()) for subject, digest in own.items()}


def _combined(common: str, own: str) -> str:
    return hashlib.sha256(f"{common}\n{own}".encode()).hexdigest()


def unchanged_subjects(current: Mapping[str, str], stored: Mapping[str, str]) -> frozenset[str]:
    """The subjects whose digest is the one stored when their resources were last all confirmed."""
    return frozenset(subject for subject, digest in current.items() if stored.get(subject) == digest)
