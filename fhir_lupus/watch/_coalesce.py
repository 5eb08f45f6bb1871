"""What the next pull is for: notifications coalesced, so a flood of them costs one pull per subject at a time.

A notification names one subject (a resource payload: that Observation's Patient) or none (R4's empty payload,
or a periodic poll: every enrolled subject, "all"). ``Pending`` is the pure state: the subjects waiting and an
"all" flag that absorbs them (a pull of everyone covers each). ``take`` hands the whole of it to the one worker
as one ``Work`` and empties it, so notifications that arrive while that pull runs wait for the next one: a
subject notified during its own pull is pulled once more (what changed after the pull's search began is not
missed), however many notifications came, and never twice at the same time.

``WorkQueue`` is the same state behind a lock for the endpoint's threads and the worker.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

__all__ = ["Pending", "Work", "WorkQueue"]


@dataclass(frozen=True)
class Work:
    """One pull: of ``patients`` (Patient logical ids), or of every enrolled subject when None.

    ``notifications``: how many notifications (and polls) this one pull answers."""

    patients: frozenset[str] | None
    notifications: int = 1


@dataclass
class Pending:
    """The notifications not yet handed to a pull (pure: no thread, no clock)."""

    subjects: set[str] = field(default_factory=set)
    everyone: bool = False
    notifications: int = 0

    def subject(self, patient_id: str) -> None:
        """A result of ``patient_id`` changed; absorbed when everyone is pending already."""
        self.notifications += 1
        if not self.everyone:
            self.subjects.add(patient_id)

    def all(self) -> None:
        """Something changed and nobody knows whose (or a poll is due): everyone, pending subjects absorbed."""
        self.notifications += 1
        self.everyone = True
        self.subjects.clear()

    def __bool__(self) -> bool:
        return self.everyone or bool(self.subjects)

    def take(self) -> Work | None:
        """The pull that answers every pending notification (None: nothing pending), and nothing pending after."""
        if not self:
            return None
        work = Work(None if self.everyone else frozenset(self.subjects), self.notifications)
        self.subjects, self.everyone, self.notifications = set(), False, 0
        return work


class WorkQueue:
    """``Pending`` shared by the endpoint's request threads (``subject``, ``all``) and the one worker (``get``)."""

    def __init__(self) -> None:
        self._pending = Pending()
        self._changed = threading.Condition()
        self._closed = False

    def subject(self, patient_id: str) -> None:
        with self._changed:
            self._pending.subject(patient_id)
            self._changed.notify_all()

    def all(self) -> None:
        with self._changed:
            self._pending.all()
            self._changed.notify_all()

    def close(self) -> None:
        """No more work: a waiting ``get`` returns None at once."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def get(self, timeout: float | None = None) -> Work | None:
        """The next pull, waiting up to ``timeout`` seconds (None: until work comes or the queue is closed);
        None when the time ran out or the queue was closed (``closed`` tells which)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not self._closed and not self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._changed.wait(remaining)
            return None if self._closed else self._pending.take()
