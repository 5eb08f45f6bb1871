"""Validation of mapped resources in worker processes, so that ``fhir-lupus map`` uses every core.

``model_validate`` of fhir.resources is pure Python-bound CPU (a validator call per element) and takes most of
the map step; the mappers, the load and the JSON writing stay in the calling process, which keeps mapping the
next subjects while workers validate the previous ones (``map_validated``, used by fhir_lupus/pipeline.py). A
worker answers one question per subject: does every resource of it pass ``validate_resource``? When one does
not, the subject is mapped again in process, validating as it goes, so a refusal is exactly the one an
in-process run reports (file, line, reason), and so are the resources that refer to what was refused.

Workers get the mapping pack, the FHIR version and the validation path once, when they start (``initargs``: a
fork copies them, a spawned worker unpickles them; the pack pickles without what it has read, and reads each
file again once per worker), never per batch. On Linux workers are forked (no re-import of fhir.resources,
about a second of CPU each); elsewhere spawned. A worker ends when its parent does, even one killed outright:
it holds no temporary file, only the batch it is validating, in memory.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from itertools import islice
from types import TracebackType
from typing import TypeVar

from fhir_lupus._resource import Resource
from fhir_lupus.errors import FhirLupusError
from fhir_lupus.model import LoadReport
from fhir_lupus.terminology import MappingPack
from fhir_lupus.validation import FhirVersion, Validation, validate_resource

__all__ = ["ValidationPool", "available_cpus", "map_validated", "validation_pool"]

B = TypeVar("B")
Finish = Callable[[Resource], Resource]
# one subject's map: given where refusals go and what to do with each resource mapped, its batch (None: refused)
Job = Callable[[LoadReport, Finish], B | None]

_PARENT_CHECK_S = 1.0  # how often a worker looks whether its parent is still alive

_setup: tuple[MappingPack, FhirVersion, Validation] | None = None  # a worker's, set once by ``_start``


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity where the platform says), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class ValidationPool:
    """``workers`` processes that validate lists of resources for ``pack``, ``fhir_version`` and ``validation``.

    Use it as a context manager: leaving it stops the workers (a batch still queued is cancelled). ``depth`` is
    how many batches a caller should keep in flight to keep every worker busy without holding the whole trial.
    """

    def __init__(self, workers: int, pack: MappingPack, fhir_version: FhirVersion, validation: Validation) -> None:
        if workers < 2:
            raise ValueError(f"a pool needs at least 2 workers, not {workers} (1 validates in process)")
        self.workers = workers
        self.depth = 2 * workers
        start = "fork" if sys.platform == "linux" else "spawn"
        self._executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context(start),
            initializer=_start,
            initargs=(pack, fhir_version, validation, os.getpid()),
        )
        self._executor.submit(_ready)  # start the workers now: a spawned one imports while the caller loads

    def submit(self, resources: list[Resource]) -> Future[bool]:
        """Whether every resource of ``resources`` is valid (False at the first that is not), later."""
        if not resources:
            done: Future[bool] = Future()
            done.set_result(True)
            return done
        return self._executor.submit(_all_valid, resources)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ValidationPool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


@contextmanager
def validation_pool(
    workers: int | None, pack: MappingPack, fhir_version: FhirVersion, validation: Validation
) -> Iterator[ValidationPool | None]:
    """A pool of ``workers`` processes for one run (None: one per CPU), or None for 1 (validation in process)."""
    workers = available_cpus() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if workers == 1:
        yield None
        return
    with ValidationPool(workers, pack, fhir_version, validation) as pool:
        yield pool


def map_validated(
    jobs: Iterable[Job[B]],
    report: LoadReport,
    finish: Finish,
    convert: Finish,
    trusted: Callable[[Resource], bool] | None,
    pool: ValidationPool,
) -> Iterator[B]:
    """What ``job(report, finish)`` returns for each job in turn, with ``pool`` doing the validation.

    ``finish`` converts and validates one resource (the in-process path); ``convert`` only converts (to R5, or
    not at all). Each job is first run with ``convert`` and its refusals kept aside, as if every resource were
    valid; the resources ``trusted`` does not accept go to a worker, ``pool.depth`` jobs ahead. When the worker
    says all are valid, the batch and its refusals are what ``finish`` would have made; when one is not, the job
    runs again with ``finish`` and ``report``: a refused resource changes what later ones refer to, and the
    refusal must read as without workers. A job is run again only after its first run, in order. While the
    oldest job's answer is not in, the next jobs run here with ``finish`` (validated in this process, their
    refusals kept aside until their turn), so this process validates its share instead of waiting.
    """

    def ahead(job: Job[B]) -> tuple[Job[B], B | None, LoadReport, Future[bool]]:
        aside, unchecked = LoadReport(), []

        def collect(resource: Resource) -> Resource:
            final = convert(resource)
            if trusted is None or not trusted(final):
                unchecked.append(final)
            return final

        return job, job(aside, collect), aside, pool.submit(unchecked)

    def here(job: Job[B]) -> tuple[Job[B], B | None, LoadReport, Future[bool]]:
        aside, settled = LoadReport(), Future[bool]()
        settled.set_result(True)  # validated by ``finish`` as it was mapped: nothing left to ask
        return job, job(aside, finish), aside, settled

    pending = iter(jobs)
    flight = deque(ahead(job) for job in islice(pending, pool.depth))
    while flight:
        job, batch, aside, verdict = flight.popleft()
        following = next(pending, None)
        if following is not None:
            flight.append(ahead(following))  # the workers' queue first: they never wait for this process
        # While the workers are still at it, this process maps and validates the next jobs itself instead of
        # waiting: on two cores the mappers alone leave most of one idle, and validation is the bulk of the work.
        while not verdict.done() and len(flight) < 2 * pool.depth:
            following = next(pending, None)
            if following is None:
                break
            flight.append(here(following))
        if verdict.result():
            report.rejects.extend(aside.rejects)
            report.findings.extend(aside.findings)
        else:
            batch = job(report, finish)
        if batch is not None:
            yield batch


def _start(pack: MappingPack, fhir_version: FhirVersion, validation: Validation, parent: int) -> None:
    """A worker's set-up: what it validates with; signals left to the parent; ends when the parent does."""
    global _setup
    _setup = (pack, fhir_version, validation)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent shuts the pool
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker has the CLI's handler, made for the parent
    gc.freeze()  # what the parent had at the fork is never garbage here: no collection walks it again
    threading.Thread(target=_end_with, args=(parent,), name="parent-watch", daemon=True).start()


def _end_with(parent: int) -> None:
    """End this worker once its parent is gone (a parent killed outright cannot shut the pool down)."""
    while os.getppid() == parent:
        time.sleep(_PARENT_CHECK_S)
    os._exit(1)


def _ready() -> None:
    """The first task: it only makes the workers start."""


def _all_valid(resources: list[Resource]) -> bool:
    assert _setup is not None, "a worker validates only after _start"
    pack, fhir_version, validation = _setup
    for resource in resources:
        try:
            validate_resource(resource, fhir_version, validation=validation, pack=pack)
        except FhirLupusError:
            return False
    return True
