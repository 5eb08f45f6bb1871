"""Sorted runs on disk: how a registry package is written in flat memory, however many resources it holds.

Each batch's lines go to runs of at most ``size`` resources, each sorted by new id; each type's file is then the
merge of its runs, in new-id order, which is the order a package made at once sorts them in.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import shutil
from pathlib import Path

from fhir_lupus._scratch import PRIVATE_DIR, open_private

__all__ = ["SortedRuns"]


class SortedRuns:
    """Sorted runs of ``id\tline`` per resource type on disk, merged into one sorted NDJSON file per type."""

    def __init__(self, directory: Path, size: int) -> None:
        self.directory = directory
        self.size = size
        self._pending: dict[str, list[tuple[str, str]]] = {}
        self._held = 0
        self._runs: dict[str, list[Path]] = {}

    def add(self, resource_type: str, resource_id: str, line: str) -> None:
        self._pending.setdefault(resource_type, []).append((resource_id, line))
        self._held += 1
        if self._held >= self.size:
            self._flush()

    def _flush(self) -> None:
        self.directory.mkdir(PRIVATE_DIR, exist_ok=True)
        for resource_type, items in self._pending.items():
            items.sort()
            path = self.directory / f"{resource_type}.{len(self._runs.get(resource_type, []))}"
            with open_private(path, encoding="utf-8", newline="") as handle:
                handle.writelines(f"{resource_id}\t{line}\n" for resource_id, line in items)
            self._runs.setdefault(resource_type, []).append(path)
        self._pending.clear()
        self._held = 0

    def merge_into(self, directory: Path) -> dict[str, tuple[int, str]]:
        """Write ``<Type>.ndjson`` per type into ``directory``; returns type -> (count, sha256)."""
        self._flush()
        written: dict[str, tuple[int, str]] = {}
        for resource_type, paths in sorted(self._runs.items()):
            digest = hashlib.sha256()
            count = 0
            with contextlib.ExitStack() as stack:
                runs = [stack.enter_context(path.open("r", encoding="utf-8", newline="")) for path in paths]
                out = stack.enter_context(open_private(directory / f"{resource_type}.ndjson", "wb"))
                for merged in heapq.merge(*runs, key=lambda text: text.split("\t", 1)[0]):
                    data = merged.split("\t", 1)[1].encode("utf-8")
                    out.write(data)
                    digest.update(data)
                    count += 1
            written[resource_type] = (count, digest.hexdigest())
        shutil.rmtree(self.directory, ignore_errors=True)
        return written
