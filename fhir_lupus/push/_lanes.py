"""The windows of a push being written at the same time, each by its own Applier in a worker thread.

A server's transactions are what a push waits for, and a server on several cores runs several at once: up to
``concurrency`` windows are applied while the next one is mapped and planned (``_runner``).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait

from fhir_lupus._resource import Resource
from fhir_lupus.bundle import local_ref, references
from fhir_lupus.push._apply import Applier, ApplyCounts
from fhir_lupus.push._plan import Plan
from fhir_lupus.push._planner import Planner

__all__ = ["Lanes"]


class Lanes:
    """Windows being written: at most ``concurrency`` at once, each by its own Applier in a worker thread.

    Everything the planner reads is settled on the calling thread: a window's counts, held-back resources and
    types refused by id join the report when it is waited for. The first failure stops the push once the
    windows already sent have finished (a transaction in flight cannot be called back); the journal then holds
    every chunk the server confirmed.
    """

    def __init__(self, concurrency: int, report: ApplyCounts, planner: Planner) -> None:
        self.concurrency = concurrency
        self.report = report
        self.planner = planner
        self.held: set[str] = set()
        self.refused_by_id: set[str] = set()
        self._pool = ThreadPoolExecutor(concurrency, "push") if concurrency > 1 else None
        self._running: list[tuple[Future[None], Applier, frozenset[str]]] = []

    def start(self, window: list[Resource], plan: Plan, applier: Applier) -> None:
        if self._pool is None:
            applier.apply(plan)
            self._settle(applier)
            return
        while len(self._running) >= self.concurrency:
            self._wait(self._running[0])
        refs = frozenset(local_ref(r) for r in window)
        self._running.append((self._pool.submit(applier.apply, plan), applier, refs))

    def wait_for(self, window: list[Resource]) -> None:
        """Wait for the windows that write something ``window`` refers to (the planner needs their ids)."""
        inside = {local_ref(r) for r in window}
        outside = {t for r in window for t in references(r)} - inside
        for running in [r for r in self._running if r[2] & outside]:
            self._wait(running)

    def finish(self) -> None:
        while self._running:
            self._wait(self._running[0])

    def close(self) -> None:
        """After a failure: let what was sent finish and keep its counts; nothing new starts."""
        if self._pool is None:
            return
        for future, applier, _ in self._running:
            if not future.cancel():  # started: its confirmed chunks are in the journal, and count
                futures_wait([future])
                self._settle(applier)
        self._running.clear()
        self._pool.shutdown(wait=True)

    def _wait(self, running: tuple[Future[None], Applier, frozenset[str]]) -> None:
        self._running.remove(running)
        future, applier, _ = running
        try:
            future.result()
        finally:
            self._settle(applier)

    def _settle(self, applier: Applier) -> None:
        self.report.add(applier.counts)
        self.held |= applier.held_back
        if applier.refused_by_id - self.refused_by_id:
            self.refused_by_id |= applier.refused_by_id
            self.planner.refuse_by_id(applier.refused_by_id)
