"""The records new in one pull, in merge order, kept like a list whose tail waits on disk (a first pull is large).

The store, the spool and the output files keep a record as the JSON text of its fields (``record_text``); a
record's fields are read without ``asdict``'s deep copy (``flat``).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

import orjson

from fhir_lupus._scratch import discard, scratch_file
from fhir_lupus.pull._reverse import PulledLab, UnmappedResult

__all__ = ["Spool", "flat", "record_text"]

T = TypeVar("T", PulledLab, UnmappedResult)
SPOOL_IN_MEMORY = 2000  # records of a Spool kept in memory; the rest wait in a temporary file


class Spool(Sequence[T], Generic[T]):
    """The records new in one pull, in merge order: the first few in memory, the rest in a temporary file.

    A first pull of a registry brings every result as new; holding them all as objects would make memory
    grow with the pull (80,000 rows are over 100 MB). A Spool reads like a list (len, iteration, indexing,
    equality with a list) and its file is removed when the Spool is collected.
    """

    def __init__(self, kind: type[T], in_memory: int | None = None) -> None:
        self._kind: type[T] = kind
        self._limit = SPOOL_IN_MEMORY if in_memory is None else in_memory
        self._head: list[T] = []
        self._spilled = 0
        self._path: str | None = None
        self._file: Any = None

    def append(self, record: T) -> None:
        if len(self._head) < self._limit:
            self._head.append(record)
            return
        self._spill(record_text(record))

    def append_json(self, text: str) -> None:
        """Append the record whose ``flat`` JSON is ``text`` (as the store keeps it): past the in-memory head,
        the text goes to the file as it is, without a round trip through an object."""
        if len(self._head) < self._limit:
            self._head.append(self._kind(**orjson.loads(text)))
            return
        self._spill(text)

    def _spill(self, text: str) -> None:
        if self._file is None:
            handle, path = scratch_file(hint="pull", suffix=".jsonl")  # fhir_lupus/_scratch.py: swept if killed
            self._path = str(path)
            self._file = os.fdopen(handle, "w", encoding="utf-8")
            weakref.finalize(self, _discard, self._file, self._path)
        self._file.write(text + "\n")
        self._spilled += 1

    def __len__(self) -> int:
        return len(self._head) + self._spilled

    def __iter__(self) -> Iterator[T]:
        yield from self._head
        if self._path is None:
            return
        self._file.flush()
        with open(self._path, encoding="utf-8") as spilled:
            for _, line in zip(range(self._spilled), spilled, strict=False):
                yield self._kind(**orjson.loads(line))

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> list[T]: ...
    def __getitem__(self, index: int | slice) -> T | list[T]:
        if isinstance(index, slice):
            return list(self)[index]
        position = index + len(self) if index < 0 else index
        if not 0 <= position < len(self):
            raise IndexError("Spool index out of range")
        if position < len(self._head):
            return self._head[position]
        return next(record for at, record in enumerate(self) if at == position)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by content, like a list

    def __repr__(self) -> str:
        return f"Spool({len(self)} {self._kind.__name__})"


def _discard(handle: Any, path: str) -> None:
    handle.close()
    discard(Path(path))


def record_text(record: Any) -> str:
    """A record as the JSON text the stage, the store and the spool keep (orjson: a sixth of json's time)."""
    return orjson.dumps(flat(record)).decode()


def flat(record: Any) -> dict[str, Any]:
    """``asdict`` for the flat records of a pull (strings only), without its deep copy: a fifth of a pull's
    client time went to ``asdict`` for the stage, the spool and the output. A dict is taken as it is."""
    if isinstance(record, dict):
        return record
    if is_dataclass(record) and hasattr(record, "__dict__"):
        return dict(record.__dict__)
    return asdict(record)
