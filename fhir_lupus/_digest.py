"""The digest of a run's content hashes (the audit log's ``content_hash``), and a way to build it in flat memory.

``digest_of`` is the definition: SHA-256 over the sorted hashes joined by newlines, so the same content gives the
same digest in any order. ``DigestBuilder`` gives the very same value one hash at a time: a push of a million
resources offered a million hashes, about 110 MB as a list of str, and the digest needs them only sorted.

How: hashes are kept in a small buffer (``BUFFER``, about 5 MB: a push of fifty subjects writes nothing to disk);
a full buffer is sorted and written as one run to a private scratch directory (``_scratch``: mode 700, removed by
``close`` on every exit path, by the next run's sweep after a kill); ``FAN_IN`` runs of one size are merged into
one of the next size, so the files a merge opens stay few at any size; ``hexdigest`` merges the runs and the buffer
(``heapq.merge``) into the hash. Why not a SQLite temporary table sorted by ``ORDER BY``: its sorter spills to
files SQLite names and places itself (``SQLITE_TMPDIR``), outside the privacy and sweep rules every temporary file
holding patient-derived data follows here; sorted runs are all ours, and their order is Python's own: bytes of
UTF-8 compare as their str's code points do, so the merge yields exactly ``sorted``'s order.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import operator
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType

from fhir_lupus._scratch import discard, open_private, scratch_dir

__all__ = ["BUFFER", "EMPTY_DIGEST", "FAN_IN", "DigestBuilder", "digest_of"]

BUFFER = 50_000  # hashes held in memory before a sorted run goes to disk (64-character hex: about 5 MB)
FAN_IN = 64  # runs of one size merged into one: the files a merge opens, and their read buffers (64 KiB each)
_READ_BUFFER = 1 << 16
_CHUNK = 4096  # hashes joined per write or hash update: one call for many, not one per hash


def digest_of(hashes: Iterable[str]) -> str:
    """SHA-256 over the sorted per-item hashes, one per line: the same content gives the same digest."""
    return hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()


EMPTY_DIGEST = digest_of(())  # the digest of nothing offered


def _chunks(items: Iterable[bytes]) -> Iterator[list[bytes]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, _CHUNK)):
        yield chunk


_WITHOUT_NEWLINE = operator.itemgetter(slice(None, -1))  # every line of a run ends with exactly one newline


def _lines(handle: Iterable[bytes]) -> Iterator[bytes]:
    return map(_WITHOUT_NEWLINE, handle)


class DigestBuilder:
    """``digest_of`` of the hashes added, with memory that does not grow with their number (module docstring).

    Use as a context manager (or call ``close``): the runs spilled to disk are removed on leaving it, normally
    or by an exception. A hash may not hold a newline (it would be two lines of the digest); ``hexdigest`` may
    be asked at any time, and adding may go on after it.
    """

    def __init__(self, *, buffer_size: int | None = None, fan_in: int | None = None, directory: Path | None = None):
        """``buffer_size`` and ``fan_in`` default to ``BUFFER`` and ``FAN_IN``; ``directory``: where the scratch
        directory is made (default: the system's temporary directory)."""
        self._limit = max(1, buffer_size or BUFFER)
        self._fan_in = max(2, fan_in or FAN_IN)
        self._where = directory
        self._buffer: list[bytes] = []
        self._home: Path | None = None  # the scratch directory, made at the first spill
        self._levels: list[list[Path]] = []  # runs by size: level n holds runs of about buffer * fan_in**n hashes
        self._made = 0  # runs written, to name the next
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, item: str) -> None:
        self.extend((item,))

    def extend(self, items: Iterable[str]) -> None:
        """Add ``items``, a buffer's room at a time (one list comprehension each, not a call per hash)."""
        iterator = iter(items)
        while encoded := [item.encode() for item in itertools.islice(iterator, self._limit - len(self._buffer))]:
            if any(b"\n" in item for item in encoded):
                raise ValueError("a hash of the digest may not hold a newline")
            self._buffer += encoded
            self._count += len(encoded)
            if len(self._buffer) >= self._limit:
                self._spill()

    def hexdigest(self) -> str:
        """``digest_of`` of every hash added so far."""
        self._buffer.sort()
        with ExitStack() as stack:
            runs = [_lines(stack.enter_context(path.open("rb", buffering=_READ_BUFFER))) for path in self._runs()]
            sha = hashlib.sha256()
            for number, chunk in enumerate(_chunks(heapq.merge(self._buffer, *runs))):
                sha.update(b"\n".join(chunk) if number == 0 else b"\n" + b"\n".join(chunk))
        return sha.hexdigest()

    def close(self) -> None:
        """Remove the runs on disk (and forget every hash added)."""
        home, self._home = self._home, None
        self._levels, self._buffer, self._count = [], [], 0
        if home is not None:
            discard(home)

    def __enter__(self) -> DigestBuilder:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _runs(self) -> list[Path]:
        return [path for level in self._levels for path in level]

    def _spill(self) -> None:
        self._buffer.sort()
        self._add_run(0, self._write(self._buffer))
        self._buffer = []

    def _write(self, ordered: Iterable[bytes]) -> Path:
        if self._home is None:
            self._home = scratch_dir(self._where or Path(tempfile.gettempdir()), "digest")
        path = self._home / f"run-{self._made}"
        self._made += 1
        with open_private(path, "wb") as out:
            for chunk in _chunks(ordered):
                out.write(b"\n".join(chunk) + b"\n")
        return path

    def _add_run(self, level: int, path: Path) -> None:
        """File ``path`` at ``level``; ``FAN_IN`` runs there are merged into one of the level above."""
        if level == len(self._levels):
            self._levels.append([])
        runs = self._levels[level]
        runs.append(path)
        if len(runs) < self._fan_in:
            return
        self._levels[level] = []
        with ExitStack() as stack:
            merged = self._write(
                heapq.merge(*(_lines(stack.enter_context(run.open("rb", buffering=_READ_BUFFER))) for run in runs))
            )
        for run in runs:
            run.unlink()
        self._add_run(level + 1, merged)
