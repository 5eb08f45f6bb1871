"""The server's own clock, read from the ``Date`` header of its answers (RFC 9110: a server with a clock sends it).

A pull's high-water mark is a server time: everything the server had committed before it was visible to the
pull's searches. The latest ``meta.lastUpdated`` fetched is one such time, but it stays where the last write left
it, however long the server has been quiet since, so every later incremental pull asks again for the overlap
window before that write. The earliest ``Date`` of a pull's answers is a later such time (its searches all ran
after it) and moves on with the clock. Seconds only: the header is truncated, which only makes it earlier.
"""

from __future__ import annotations

import threading
from datetime import datetime
from email.utils import parsedate_to_datetime

__all__ = ["ServerClock"]


class ServerClock:
    """The earliest ``Date`` among the answers seen while it was open (``FhirClient.server_clock``), and the latest
    (a push's end: every write it made is dated before its last answer); the search workers of a pull share it,
    so it takes a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.earliest: datetime | None = None
        self.latest: datetime | None = None

    def saw(self, header: str | None) -> None:
        """One answer's ``Date`` header; one a server wrote wrong (or none) is left out."""
        if not header:
            return
        try:
            when = parsedate_to_datetime(header)
        except (TypeError, ValueError):
            return
        if when.tzinfo is None:  # RFC 9110 dates are GMT; an obsolete form without a zone is read as such
            return
        with self._lock:
            if self.earliest is None or when < self.earliest:
                self.earliest = when
            if self.latest is None or when > self.latest:
                self.latest = when
