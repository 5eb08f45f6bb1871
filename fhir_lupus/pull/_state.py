"""What a pass of a pull reports beside its rows: the latest ``meta.lastUpdated``, the fallbacks, the refetches.

The search pass, the bulk pass and the day-0 look-ups write here; the runner reads it once the rows are staged
(the high-water mark it moves, the notes of the report). A worker of the search pass keeps a state of its own,
folded into the pass's (``absorb``) when its subject's rows are handed on, so that no two threads write one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fhir_lupus.errors import FhirLupusError
from fhir_lupus.pull._search import Search, parse_instant

__all__ = ["PassState", "moment"]


@dataclass
class PassState:
    high_water: str | None = None  # the latest meta.lastUpdated fetched
    fallbacks: list[str] = field(default_factory=list)  # what the server could not do, for the report
    refetched: int = 0  # Observations a search brought again in this pull (0 unless a server ignores :not)
    # the server refused _lastUpdated: the subjects' labs were fetched whole, so the stage lists all they have
    unfiltered: bool = False

    def mark(self, updated: str) -> None:
        if self.high_water is None or moment(updated) > moment(self.high_water):
            self.high_water = updated

    def mark_observation(self, observation: dict[str, Any]) -> None:
        if updated := (observation.get("meta") or {}).get("lastUpdated"):
            self.mark(updated)

    def note(self, search: Search) -> None:
        """What ``search`` filters here because the server cannot (once each)."""
        for note in search.fallbacks:
            self.note_once(note)

    def note_once(self, note: str) -> None:
        if note not in self.fallbacks:
            self.fallbacks.append(note)

    def absorb(self, other: PassState) -> None:
        """Fold a worker's state into this one (marks, notes, counters)."""
        if other.high_water:
            self.mark(other.high_water)
        for note in other.fallbacks:
            self.note_once(note)
        self.refetched += other.refetched
        self.unfiltered = self.unfiltered or other.unfiltered


def moment(value: str) -> datetime:
    """A FHIR instant as an aware datetime; FhirLupusError when a server sent something else."""
    found = parse_instant(value)
    if found is None:
        raise FhirLupusError(f"not a FHIR instant: {value!r}")
    return found
