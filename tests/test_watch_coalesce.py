"""The coalescer: a flood of notifications is one pull per subject at a time; "all" absorbs single subjects; and
the worker that runs the pulls (pull and signals injected, no server)."""

from __future__ import annotations

import threading

from fhir_lupus.errors import FhirLupusError, TransientHttpError
from fhir_lupus.watch import Pending, Work, Worker, WorkQueue


def _until_ended(worker: Worker[None]) -> None:
    """Wait (bounded) for the worker to end on its own, then close its queue."""
    for _ in range(1000):
        if not worker.alive:
            break
        threading.Event().wait(0.005)
    worker.join()


class TestPending:
    def test_nothing_pending_is_no_work(self) -> None:
        assert Pending().take() is None

    def test_a_flood_of_one_subject_is_one_pull(self) -> None:
        pending = Pending()
        for _ in range(500):
            pending.subject("p1")
        assert pending.take() == Work(frozenset({"p1"}), 500)
        assert pending.take() is None

    def test_subjects_gather_into_one_pull(self) -> None:
        pending = Pending()
        for subject in ("p1", "p2", "p1", "p3"):
            pending.subject(subject)
        assert pending.take() == Work(frozenset({"p1", "p2", "p3"}), 4)

    def test_all_absorbs_subjects_pending_before_and_after(self) -> None:
        pending = Pending()
        pending.subject("p1")
        pending.all()
        pending.subject("p2")
        assert pending.take() == Work(None, 3)
        assert not pending

    def test_a_subject_notified_during_its_pull_is_pulled_once_more(self) -> None:
        pending = Pending()
        pending.subject("p1")
        running = pending.take()  # the worker runs it; meanwhile three more notifications of p1
        for _ in range(3):
            pending.subject("p1")
        assert running == Work(frozenset({"p1"}), 1)
        assert pending.take() == Work(frozenset({"p1"}), 3)
        assert pending.take() is None


class TestWorkQueue:
    def test_get_times_out_with_nothing(self) -> None:
        queue = WorkQueue()
        assert queue.get(timeout=0.01) is None and not queue.closed

    def test_close_wakes_a_waiting_get(self) -> None:
        queue = WorkQueue()
        got: list[Work | None] = []
        waiter = threading.Thread(target=lambda: got.append(queue.get()))
        waiter.start()
        queue.close()
        waiter.join(timeout=5)
        assert got == [None] and queue.closed

    def test_work_from_another_thread_wakes_get(self) -> None:
        queue = WorkQueue()
        threading.Timer(0.01, queue.subject, args=("p9",)).start()
        assert queue.get(timeout=5) == Work(frozenset({"p9"}), 1)


class TestWorker:
    def test_each_pull_then_its_signals(self) -> None:
        calls: list[object] = []
        queue = WorkQueue()
        worker: Worker[str] = Worker(
            queue,
            lambda patients: calls.append(("pull", patients)) or "result",
            signals=lambda result: calls.append(("signals", result)),
            on_pull=lambda work, result: calls.append(("shown", work.patients, result)),
        )
        worker.run_once(Work(frozenset({"p1"}), 2))
        # the pull is shown before its signals run: they read the whole table, the pull's report need not wait
        assert calls == [("pull", frozenset({"p1"})), ("shown", frozenset({"p1"}), "result"), ("signals", "result")]
        assert (worker.pulls, worker.notifications, worker.failed) == (1, 2, 0)

    def test_a_failed_pull_is_reported_and_the_worker_goes_on(self) -> None:
        errors: list[str] = []

        def pull(_patients: frozenset[str] | None) -> str:
            raise TransientHttpError("server down")

        worker: Worker[str] = Worker(WorkQueue(), pull, on_error=lambda work, exc: errors.append(str(exc)))
        worker.run_once(Work(None))
        assert errors == ["server down"] and (worker.pulls, worker.failed) == (0, 1)

    def test_a_poll_pulls_everyone_when_due(self) -> None:
        now = [0.0]
        pulled = threading.Event()
        seen: list[frozenset[str] | None] = []

        def pull(patients: frozenset[str] | None) -> None:
            seen.append(patients)
            pulled.set()

        queue = WorkQueue()
        worker: Worker[None] = Worker(queue, pull, poll=60, clock=lambda: now[0])
        worker.start()
        now[0] = 61.0  # a minute later by the worker's clock: the next tick finds the poll due
        assert pulled.wait(timeout=5)
        worker.join()
        assert seen[0] is None and worker.notifications >= 1

    def test_a_failure_no_retry_can_fix_ends_the_worker_and_is_kept(self) -> None:
        queue = WorkQueue()
        reported: list[object] = []

        def pull(_patients: frozenset[str] | None) -> None:
            raise FhirLupusError("0 ResearchStudy resources on the server carry NCT00698191")

        worker: Worker[None] = Worker(queue, pull, on_error=lambda work, exc: reported.append(exc))
        queue.all()
        worker.start()
        _until_ended(worker)
        assert isinstance(worker.crashed, FhirLupusError) and reported == []

    def test_another_error_ends_the_worker_and_is_kept(self) -> None:
        queue = WorkQueue()

        def pull(_patients: frozenset[str] | None) -> None:
            raise RuntimeError("a bug")

        worker: Worker[None] = Worker(queue, pull)
        queue.all()
        worker.start()
        _until_ended(worker)
        assert isinstance(worker.crashed, RuntimeError)
