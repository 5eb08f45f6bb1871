"""The search pass of a pull: each enrolled subject's lab results by search, a few subjects at a time.

One pass fetches each result once: ``category=laboratory`` (every lab result, those whose codes the catalogue
does not know included), one search per subject; plus ``code=<catalogue list>&category:not=laboratory``
(results with a catalogue code that some system wrote without the laboratory category; usually none), one
search for a group of subjects (``patient=Patient/a,Patient/b,...``, cut by ``_planner.Planner``), each result
handed to its subject. The two are disjoint, so nothing is fetched twice, and together they find exactly what a
search by code list and another by category would. A server that cannot search by code or category gets one
search by patient, classified here. Every search goes through ``_search.Search``, which asks the server for
what its CapabilityStatement offers and filters the rest here. Who the subjects are and their day 0 come from
the pull's ``Subjects`` (``_subjects``); each Observation becomes a row there too.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from itertools import islice
from typing import Any, TypeVar
from urllib.parse import urlencode

from fhir_lupus.client import Capabilities, FhirClient, FhirHttpError, UnsupportedInteraction, classify
from fhir_lupus.pull._planner import Planner, Refusal
from fhir_lupus.pull._reverse import PulledLab, UnmappedResult
from fhir_lupus.pull._search import PAGE, Search, matches
from fhir_lupus.pull._selection import patient_of, reaches
from fhir_lupus.pull._state import PassState
from fhir_lupus.pull._subjects import OnServer, Subject, SubjectRow, Subjects

__all__ = ["DEFAULT_WORKERS", "fetch_labs", "patient_param", "refusal"]

# Subjects fetched at once (each subject's labs in order; the store sorts the output, so the result does not
# depend on it). 1 = one after the other, by one thread that reads ahead of the caller. By bench/bench_pull.py
# (bench/README.md), 3 is what puts pull ahead of fhirpy on HAPI, whose searches are the server's work: 0.76
# and 0.94 of fhirpy's rate with 1, 1.00 and 1.35 with 3 (5 and 20 subjects). SMART token renewal is shared
# by requests in flight (tests/test_auth_concurrency.py).
DEFAULT_WORKERS = 3
READ_AHEAD = 8  # chunks of READ_AHEAD_CHUNK records the request thread may be ahead of the caller
READ_AHEAD_CHUNK = 100
T = TypeVar("T")
_NO_NEGATION = (
    "Observation?category:not is refused by the server: labs with a catalogue code are searched again by code "
    "and those already fetched are dropped"
)
_NO_LAST_UPDATED = (
    "Observation?_lastUpdated is refused by the server: the subjects' labs are searched whole, and what the table "
    "holds of them and the server no longer lists is removed"
)
_Found = tuple[Subject, dict[str, Any]]  # an Observation a search brought, and the subject it belongs to
_Job = tuple[SubjectRow, dict[str, Any]]  # an enrolled subject and its ResearchSubject, before its day 0
Record = PulledLab | UnmappedResult


def fetch_labs(
    client: FhirClient,
    subjects: Subjects,
    *,
    since: str | None = None,
    state: PassState | None = None,
    workers: int = DEFAULT_WORKERS,
) -> Iterator[Record]:
    """Every lab result of the study's subjects (updated since ``since``), reverse-mapped; nothing dropped.

    Results collected more than the look-back before a subject's day 0 are not asked for (``Subjects.lookback``:
    ``lookback_days_before_anchor`` of mappings/fhir/pull.yaml by default, which reaches screening labs).
    Subjects go in groups: each subject's day 0 and lab-category search, then one catalogue-code search for the
    group (see ``_Plan``). With ``workers`` <= 1, one thread of its own sends every request in turn while the
    caller stages what came before (the server works while we map); with ``workers`` > 1, that many subjects are
    fetched at once (through the one client, its retries and auth).
    """
    state = state or PassState()
    # the server's cached statement will do (HAPI builds a fresh one in 0.3 s): a parameter it gained since is
    # filtered here, one it lost answers 400 and the pull fails with the server's message
    caps = client.capabilities(fresh=False)
    caps.require_search("ResearchSubject")
    study_ref = subjects.find_study(client, caps, state)
    code_list = ",".join(sorted(subjects.by_code))
    plan = _Plan(client, caps, since=since, code_list=code_list, category=subjects.selection.category)
    enrolled = subjects.enrol(subjects.research_subjects(client, caps, study_ref, state))

    def member(job: _Job, into: PassState) -> Subject:
        """A subject with its day 0 (a look-up or two), its date floor and the end of its participation."""
        return subjects.resolve(*job, OnServer(subjects, client, caps, into))

    def groups() -> Iterator[list[_Job]]:
        while group := list(islice(enrolled, plan.planner.size)):
            yield group

    def one_by_one() -> Iterator[_Found]:
        for group in groups():
            members = [member(job, state) for job in group]
            for one in members:
                yield from plan.by_category(one, state)
            yield from plan.rest(members, state)

    if workers <= 1:  # the thread that reads ahead sends the requests; the mapping is done here, meanwhile
        for subject, observation in _read_ahead(one_by_one(), READ_AHEAD):
            yield subjects.reverse(observation, subject)
        return
    # a few subjects in flight, each fetched whole by a worker into its own state; handed on in order
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pull")
    pending: deque[tuple[Future[list[Record]], PassState]] = deque()

    def collect(found: Iterator[_Found]) -> list[Record]:
        """Run a subject's searches to their end and map what they bring (in a worker thread)."""
        return [subjects.reverse(observation, subject) for subject, observation in found]

    def hand_on() -> Iterator[Record]:
        future, own = pending.popleft()
        yield from future.result()
        state.absorb(own)

    try:
        for group in groups():
            owns = [PassState() for _ in group]
            members = list(pool.map(member, group, owns))
            for one, own in zip(members, owns, strict=True):
                pending.append((pool.submit(collect, plan.by_category(one, own)), own))
                if len(pending) > workers:
                    yield from hand_on()
            while pending:
                yield from hand_on()
            for subject, observation in plan.rest(members, state):
                yield subjects.reverse(observation, subject)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def refusal(error: FhirHttpError) -> Refusal | None:
    """What a failed group search says to the planner: its URL was too long (414, 431), or the server does not
    take a list of patients or ``category:not`` (400, 422); None for any other failure, raised as it is."""
    verdict = classify(error.status)  # the status alone: whatever its words, the planner tries a smaller search
    if verdict == "too-long" or verdict == "refused":
        return verdict
    return None


_END = object()


def _read_ahead(records: Iterator[T], depth: int) -> Iterator[T]:
    """``records``, produced by a thread of its own at most ``depth`` chunks ahead of the caller.

    The producer sends the requests one at a time, as before (auth and retries see no concurrency), and
    decodes what they bring; the caller maps and stages what came before meanwhile, so the server works while
    we do. An error on either side ends both: the producer's is raised here, and the producer stops (at its
    next chunk) when the caller stops reading.
    """
    chunks: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        chunk: list[T] = []
        try:
            for record in records:
                chunk.append(record)
                if len(chunk) >= READ_AHEAD_CHUNK:
                    if not put(chunk):
                        return
                    chunk = []
            put(chunk) and put(_END)
        except BaseException as exc:  # handed to the caller, raised there
            put(_Failure(exc))
        finally:
            close = getattr(records, "close", None)
            if close is not None:
                close()

    producer = threading.Thread(target=produce, name="pull-read-ahead", daemon=True)
    producer.start()
    try:
        while (item := chunks.get()) is not _END:
            if isinstance(item, _Failure):
                raise item.error
            yield from item
    finally:
        stop.set()
        producer.join()


@dataclass(frozen=True)
class _Failure:
    error: BaseException


class _Plan:
    """The lab searches of a pull, as the server's capabilities allow, each result fetched once.

    Per subject, ``by_category``: every result with the laboratory category (those whose codes the catalogue
    does not know included). Per group of subjects, ``rest``: ``code=<catalogue list>&category:not=laboratory``
    for all of them at once (``patient=Patient/a,Patient/b,...``), results with a catalogue code that some
    system wrote without the category, usually none; each result goes to the subject it refers to. The group
    search asks the earliest date floor of the group, and each subject's own floor is applied here to what
    it brings (``_selection.reaches``). A server that cannot search by code or category gets one search by
    patient, classified here. A server that refuses ``category:not`` gets a search by code alone per subject,
    and what it brings with the lab category is dropped (the category search brought it).
    """

    def __init__(self, client: FhirClient, caps: Capabilities, *, since: str | None, code_list: str, category: str):
        self.client = client
        self.caps = caps
        self.base = _patient_search(caps)
        self.param = patient_param(caps)
        self.since = since
        self.code_list = code_list
        self.category = category
        self.split = caps.searches("Observation", "code") and caps.searches("Observation", "category")
        self.planner = Planner()

    def filters(self, patients: str, floor: date | None, *, since: bool = True) -> dict[str, str]:
        filters = {self.param: patients}
        if self.since and since:
            filters["_lastUpdated"] = f"ge{self.since}"
        if floor:
            filters["date"] = f"ge{floor.isoformat()}"
        return filters

    def by_category(self, member: Subject, state: PassState) -> Iterator[_Found]:
        """The subject's results with the lab category; a refused ``_lastUpdated`` (400) turns ``since`` off for
        the rest of the pass, and the subject is asked again without it (``PassState.unfiltered``)."""
        since, brought = self.since, 0
        try:
            for observation in self._fresh(self._category_search(member), state):
                brought += 1
                yield member, observation
        except FhirHttpError as exc:
            if brought or not since or classify(exc.status, exc.outcome) not in ("refused", "unsupported"):
                raise
            self.since = None  # every search of the pass from now on, those of other workers included
            state.unfiltered = True
            state.note_once(_NO_LAST_UPDATED)
            for observation in self._fresh(self._category_search(member), state):
                yield member, observation

    def _category_search(self, member: Subject) -> Search:
        filters = self.filters(member.patient_ref, member.floor)
        if self.split:  # the token first: a server that filters in the order asked (Medplum) gets the cheap test first
            search = self.base.where(self.caps, category=self.category, **filters)
        else:  # the server cannot apply one of them: one search by patient, and the OR of both applied here
            search = self.base.where(self.caps, **filters).where_any(
                self.caps, code=self.code_list, category=self.category
            )
        return search.with_params(_count=PAGE)

    def rest(self, members: list[Subject], state: PassState) -> Iterator[_Found]:
        """Results with a catalogue code and without the lab category, for a group of subjects."""
        if not self.split or not members:
            return
        if self.planner.no_negation:
            for member in members:
                yield from self._by_code(member, state)
            return
        for part in self.planner.fitting(members, self._url_length):
            yield from self._negated(part, state)

    def _negated_search(self, members: list[Subject]) -> Search:
        # category:not first, the list of patients last: Medplum filters in the order asked, and answers this in
        # 80 ms for 20 patients instead of 600 ms (HAPI does not mind the order). While the results are few
        # (grouping), --since is applied here: HAPI 8.8 (H2) takes 0.7-1 s for one patient and 20 s for four
        # when _lastUpdated stands beside category:not and code, 0.1-0.2 s without it
        filters = self.filters(
            ",".join(m.patient_ref for m in members), _group_floor(members), since=not self._since_here()
        )
        search = self.base.where(self.caps, **{"category:not": self.category}, code=self.code_list)
        return search.where(self.caps, **filters).with_params(_count=PAGE)

    def _since_here(self) -> bool:
        """Whether the catalogue-code search leaves --since to us (see ``_negated_search``)."""
        return bool(self.since) and self.planner.grouping

    def _url_length(self, members: list[Subject]) -> int:
        return len(self.client.base_url) + len("Observation?") + len(urlencode(self._negated_search(members).query()))

    def _negated(self, members: list[Subject], state: PassState) -> Iterator[_Found]:
        search = self._negated_search(members)
        since_here = f"ge{self.since}" if self._since_here() else None
        floor = _group_floor(members)
        by_patient = {m.patient_ref: m for m in members}
        brought = 0
        stray: list[str] = []  # results whose subject reference names none of the group's patients
        given: set[str] = set()
        try:
            for observation in self._fresh(search, state, marked=False):
                brought += 1  # what the server sent: how dense such results are, whatever --since keeps
                if since_here and not matches(observation, "_lastUpdated", since_here):
                    continue
                member = members[0] if len(members) == 1 else by_patient.get(patient_of(observation))
                if member is None:
                    stray.append(str(observation.get("id")))
                    continue
                if _lab_category(observation, self.category):  # the server ignored :not; the category search had it
                    state.refetched += 1
                    continue
                if member.floor and member.floor != floor and not reaches(observation, member.floor):
                    continue  # before this subject's own floor: a search for this subject alone would not bring it
                given.add(str(observation.get("id")))
                state.mark_observation(observation)
                yield member, observation
        except FhirHttpError as exc:
            step = self.planner.refused(refusal(exc), len(members), brought)
            if step == "raise":
                raise
            if step == "halves":  # the URL is too long for this server
                half = len(members) // 2
                yield from self._negated(members[:half], state)
                yield from self._negated(members[half:], state)
            elif step == "one-by-one":
                for member in members:
                    no_negation = self.planner.no_negation
                    yield from self._by_code(member, state) if no_negation else self._negated([member], state)
            else:  # by code alone
                state.note_once(_NO_NEGATION)
                yield from self._by_code(members[0], state)
            return
        self.planner.searched(len(members), brought)
        if stray:  # ask subject by subject, so that each result comes with its subject; what came is dropped
            for member in members:
                for subject, observation in self._negated([member], state):
                    if str(observation.get("id")) in given:
                        state.refetched += 1
                        continue
                    yield subject, observation

    def _by_code(self, member: Subject, state: PassState) -> Iterator[_Found]:
        """Catalogue codes whatever the category (a server without ``:not``); the category search had the labs."""
        state.note_once(_NO_NEGATION)
        search = self.base.where(self.caps, code=self.code_list, **self.filters(member.patient_ref, member.floor))
        for observation in self._fresh(search.with_params(_count=PAGE), state, marked=False):
            if _lab_category(observation, self.category):
                state.refetched += 1
                continue
            state.mark_observation(observation)
            yield member, observation

    def _fresh(self, search: Search, state: PassState, *, marked: bool = True) -> Iterator[dict[str, Any]]:
        """What ``search`` brings, each Observation once (a page boundary may repeat one), marked when asked."""
        state.note(search)
        seen: set[str] = set()
        for observation in search.fetch(self.client):
            observation_id = str(observation.get("id"))
            if observation_id in seen:
                state.refetched += 1
                continue
            seen.add(observation_id)
            if marked:
                state.mark_observation(observation)
            yield observation


def _group_floor(members: Sequence[Subject]) -> date | None:
    """The date floor a group search asks: the earliest of its subjects', none if one of them has none."""
    floors = [m.floor for m in members]
    return min(f for f in floors if f is not None) if all(f is not None for f in floors) else None


def _lab_category(observation: dict[str, Any], category: str) -> bool:
    return matches(observation, "category", category)


def _patient_search(caps: Capabilities) -> Search:
    if not caps.offers("Observation", "search-type"):
        raise UnsupportedInteraction("the server cannot search Observation")
    return Search("Observation")


def patient_param(caps: Capabilities) -> str:
    """The Observation search parameter that names a subject's Patient on this server."""
    for name in ("patient", "subject"):
        if caps.searches("Observation", name):
            return name
    raise UnsupportedInteraction("the server cannot search Observation by patient or subject")
