"""Pull lab Observations of a study's subjects back into trial lab rows: whoever wrote them, nothing lost.

The study is found by its NCT identifier, its subjects by ResearchSubject?study, and their labs by patient and
date in one pass that fetches each result once: ``category=laboratory`` (every lab result, those whose codes
the catalogue does not know included), one search per subject; plus ``code=<catalogue list>&category:not=
laboratory`` (results with a catalogue code that some system wrote without the laboratory category; usually
none), one search for a group of up to 40 subjects (``patient=Patient/a,Patient/b,...``), each result handed to
its subject. The two are disjoint, so nothing is fetched twice, and together they find exactly what a search by
code list and another by category would. A server that cannot search by code or category gets one search by
patient, classified here.
Every search goes through ``search.Search``, which asks the server for what its CapabilityStatement offers
and filters the rest here. Each Observation is reverse-mapped (``reverse.py``: status, codes, units,
visit window) and staged; ``pullstore.py`` merges the stage into the rows pulled before, writes the output
and only then moves the high-water mark. Incremental pulls ask ``_lastUpdated=ge`` the mark minus an overlap,
so a write committed late, or at the same instant as the mark, is fetched again and de-duplicated by id and
version rather than missed.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

from fhir_lupus.client import Capabilities, FhirClient, FhirHttpError, UnsupportedInteraction
from fhir_lupus.errors import FhirLupusError
from fhir_lupus.journal import Journal
from fhir_lupus.model import StudyDefinition, load_lifecycle_rules
from fhir_lupus.pull._bulk import BulkOptions, BulkRun, BulkSummary, start_bulk
from fhir_lupus.pull._local import subjects_of_study
from fhir_lupus.pull._reverse import (
    PulledLab,
    UnmappedResult,
    code_index,
    load_pull_rules,
    reverse_map,
)
from fhir_lupus.pull._search import Search, matches, parse_instant
from fhir_lupus.pull._store import PullStore, Removal
from fhir_lupus.pull._subjects import (
    SubjectRow,
    encounter_start,
    enrolled_rows,
    infusion_start,
    lab_category,
    patient_of,
    period_start,
    reaches,
)
from fhir_lupus.terminology import LabCatalogue, MappingPack
from fhir_lupus.terminology._units import warm_up as warm_up_units

__all__ = ["PullResult", "fetch_labs", "pull_labs"]

# Asked for as the page size; servers cap it (HAPI as configured here: 500, Medplum: 1000) and next links bring
# the rest. Fewer, larger pages: HAPI answers a page of 500 in about the time of two pages of 200.
PAGE = "1000"
STAGE_BATCH = 500
# Subjects fetched at once (each subject's labs in order; the store sorts the output, so the result does not
# depend on it). 1 = one after the other, by one thread that reads ahead of the caller. By bench/bench_pull.py
# (bench/README.md), 3 is what puts pull ahead of fhirpy on HAPI, whose searches are the server's work: 0.76
# and 0.94 of fhirpy's rate with 1, 1.00 and 1.35 with 3 (5 and 20 subjects). SMART token renewal is shared
# by requests in flight (tests/test_auth_concurrency.py).
DEFAULT_WORKERS = 3
READ_AHEAD = 8  # chunks of READ_AHEAD_CHUNK records the request thread may be ahead of the caller
READ_AHEAD_CHUNK = 100
# The catalogue-code search goes to groups of subjects (see _Groups): at most GROUP_MAX patients a search, the
# group growing GROUP_GROWTH-fold while it brings at most DENSE_PER_SUBJECT results a subject, and the URL
# under MAX_URL characters (HAPI's Jetty and node's http refuse a request line past 8 and 16 KiB).
GROUP_MAX = 40
GROUP_GROWTH = 8
DENSE_PER_SUBJECT = 2
MAX_URL = 6000
T = TypeVar("T")
_NO_NEGATION = (
    "Observation?category:not is refused by the server: labs with a catalogue code are searched again by code "
    "and those already fetched are dropped"
)


@dataclass
class PullResult:
    # new, or newer versions, in this pull (a Spool: read like a list, mostly on disk when large)
    rows: Sequence[PulledLab] = field(default_factory=list)
    unmapped: Sequence[UnmappedResult] = field(default_factory=list)  # set aside in this pull, with the reason
    removed: list[Removal] = field(default_factory=list)  # rows pulled earlier that are rows no more
    subjects: int = 0
    # ResearchSubjects not enrolled (mappings/fhir/lifecycle.yaml `enrolled`), by status: never pulled
    skipped_subjects: dict[str, int] = field(default_factory=dict)
    since: str | None = None  # what the search asked (_lastUpdated ge), None for everything
    high_water: str | None = None
    fetched: int = 0
    refetched: int = 0  # Observations a search brought again in this pull (0 unless a server ignores :not)
    unchanged: int = 0  # fetched again at a version already pulled
    total_rows: int = 0  # in the store (and the output) after this pull
    total_unmapped: int = 0
    fallbacks: list[str] = field(default_factory=list)
    outputs: tuple[Path, ...] = ()
    bulk: BulkSummary | None = None  # pull --bulk: the export job, its files and waits

    @property
    def outside_windows(self) -> int:
        return sum(1 for row in self.rows if row.window != "in-window")


@dataclass
class _Fetch:
    subjects: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    high_water: str | None = None  # the latest meta.lastUpdated fetched
    fallbacks: list[str] = field(default_factory=list)
    refetched: int = 0
    # the server refused ``category:not``: labs with a catalogue code are then searched by code alone, and
    # those the category search brought already are dropped here (fetched twice, as before)
    no_negation: bool = False

    def mark(self, updated: str) -> None:
        if self.high_water is None or _moment(updated) > _moment(self.high_water):
            self.high_water = updated

    def absorb(self, other: _Fetch) -> None:
        """Fold a worker's state into this one (marks, notes, counters)."""
        if other.high_water:
            self.mark(other.high_water)
        for note in other.fallbacks:
            if note not in self.fallbacks:
                self.fallbacks.append(note)
        self.refetched += other.refetched
        self.no_negation = self.no_negation or other.no_negation


def pull_labs(
    client: FhirClient,
    journal: Journal,
    study: StudyDefinition,
    catalogue: LabCatalogue,
    *,
    since: str | None = None,
    replace_all: bool = False,
    window_days: int | None = None,
    lookback_days: int | None = None,
    output: Path | None = None,
    mark_from: str | None = None,
    mappings_dir: Path | None = None,
    workers: int = DEFAULT_WORKERS,
    bulk: BulkOptions | None = None,
) -> PullResult:
    """Fetch, merge into the journal's store, write ``output`` (and its ``.unmapped`` file), move the mark.

    ``since`` is what the search asks for (``_lastUpdated=ge``, or the export's ``_since``); ``mark_from`` is the
    mark before this pull (it only moves forward); ``replace_all`` makes the store mirror exactly what was
    fetched (a full pull). ``bulk``: fetch through a Bulk Data export (``bulk.py``) instead of searches.
    """
    server = client.base_url
    store = PullStore(journal.connection, server, study.nct_id)
    store.clear_stage()
    fetch = _Fetch()
    batch: list[PulledLab | UnmappedResult] = []
    fetched = 0
    run: BulkRun | None = None
    records: Iterator[PulledLab | UnmappedResult]
    if bulk is not None:
        run = _bulk_run(
            client,
            journal,
            study,
            catalogue,
            since=since,
            window_days=window_days,
            lookback_days=lookback_days,
            state=fetch,
            mappings_dir=mappings_dir,
            options=bulk,
        )
        records = run.records()
    else:
        records = fetch_labs(
            client,
            study,
            catalogue,
            since=since,
            window_days=window_days,
            lookback_days=lookback_days,
            state=fetch,
            mappings_dir=mappings_dir,
            workers=workers,
        )
    for record in records:
        batch.append(record)
        fetched += 1
        if len(batch) >= STAGE_BATCH:
            store.stage(batch)
            batch.clear()
    store.stage(batch)
    if run is not None:
        fetch.subjects = len(run.subjects)
        fetch.skipped.update(run.subjects.skipped)
        if run.subjects.high_water:
            fetch.mark(run.subjects.high_water)
    marks = [m for m in (fetch.high_water, mark_from) if m]
    high_water = max(marks, key=_moment) if marks else None
    with journal.transaction():
        merged = store.merge(replace_all=replace_all)
        outputs = store.write(output) if output else ()
        if high_water and high_water != mark_from:
            journal.set_high_water(server, study.nct_id, high_water)
    if run is not None:  # the rows are safe in the store: the server may drop the export's files
        run.finish()
    return PullResult(
        rows=merged.new_rows,
        unmapped=merged.new_unmapped,
        removed=merged.removed,
        subjects=fetch.subjects,
        skipped_subjects=dict(sorted(fetch.skipped.items())),
        since=since,
        high_water=high_water,
        fetched=fetched,
        refetched=fetch.refetched,
        unchanged=merged.unchanged,
        total_rows=merged.total_rows,
        total_unmapped=merged.total_unmapped,
        fallbacks=fetch.fallbacks,
        outputs=tuple(outputs),
        bulk=run.summary if run is not None else None,
    )


def _bulk_run(
    client: FhirClient,
    journal: Journal,
    study: StudyDefinition,
    catalogue: LabCatalogue,
    *,
    since: str | None,
    window_days: int | None,
    lookback_days: int | None,
    state: _Fetch,
    mappings_dir: Path | None,
    options: BulkOptions,
) -> BulkRun:
    """The export of ``pull --bulk`` for the subjects a search finds (the study's index stays a search)."""
    pack = catalogue.pack
    warm_up_units()
    caps = client.capabilities(fresh=False)
    caps.require_search("ResearchSubject")
    study_systems = [
        pack.identifier_system("study", study=study.nct_id),
        *pack.superseded_identifier_systems("study", study=study.nct_id),
    ]
    study_ref = _find_study(client, caps, study_systems, study.nct_id, state)
    search = Search("ResearchSubject").where(caps, study=study_ref).with_params(_count=PAGE)
    _note(state, search)
    visit_system = pack.identifier_system("visit", study=study.nct_id)

    def search_anchor(row: SubjectRow, research_subject: dict[str, Any]) -> date | None:
        where = (client, caps, visit_system, row.patient_ref, row.subject_id, research_subject)
        return _baseline(*where, study=study, pack=pack, state=state)

    subjects = subjects_of_study(
        study,
        catalogue,
        search.fetch(client),
        anchor_of=search_anchor,
        study_id=study_ref.partition("/")[2],
        window_days=window_days,
        lookback_days=lookback_days,
        mappings_dir=mappings_dir,
    )
    return start_bulk(
        client,
        journal,
        study,
        catalogue,
        subjects,
        options,
        since=since,
        notes=state.fallbacks,
        mappings_dir=mappings_dir,
    )


def fetch_labs(
    client: FhirClient,
    study: StudyDefinition,
    catalogue: LabCatalogue,
    *,
    since: str | None = None,
    window_days: int | None = None,
    lookback_days: int | None = None,
    state: _Fetch | None = None,
    mappings_dir: Path | None = None,
    workers: int = DEFAULT_WORKERS,
) -> Iterator[PulledLab | UnmappedResult]:
    """Every lab result of the study's subjects (updated since ``since``), reverse-mapped; nothing dropped.

    Results collected more than ``lookback_days`` before a subject's anchor are not asked for (default:
    ``lookback_days_before_anchor`` of mappings/fhir/pull.yaml, which reaches screening labs). Subjects go in
    groups: each subject's day 0 and lab-category search, then one catalogue-code search for the group (see
    ``_Plan``). With ``workers`` <= 1, one thread of its own sends every request in turn while the caller stages
    what came before (the server works while we map); with ``workers`` > 1, that many subjects are fetched at
    once (through the one client, its retries and auth).
    """
    state = state or _Fetch()
    pack = catalogue.pack
    rules = load_pull_rules(mappings_dir)
    warm_up_units()  # the UCUM registry (about 1 s of CPU) is built while the first requests wait on the server
    # the server's cached statement will do (HAPI builds a fresh one in 0.3 s): a parameter it gained since is
    # filtered here, one it lost answers 400 and the pull fails with the server's message
    caps = client.capabilities(fresh=False)
    caps.require_search("ResearchSubject")
    window = window_days if window_days is not None else study.protocol.visit_window_days
    lookback = lookback_days if lookback_days is not None else rules.lookback_days_before_anchor
    study_systems = [
        pack.identifier_system("study", study=study.nct_id),
        *pack.superseded_identifier_systems("study", study=study.nct_id),
    ]
    study_ref = _find_study(client, caps, study_systems, study.nct_id, state)
    by_code = code_index(catalogue)
    category = lab_category(pack)
    plan = _Plan(client, caps, since=since, code_list=",".join(sorted(by_code)), category=category)
    subject_system = pack.identifier_system("subject", study=study.nct_id)
    visit_system = pack.identifier_system("visit", study=study.nct_id)
    enrolled = load_lifecycle_rules(mappings_dir).enrolled
    state_system = pack.system_uri("research-subject-state")
    subjects = Search("ResearchSubject").where(caps, study=study_ref).with_params(_count=PAGE)
    _note(state, subjects)

    def enrolled_subjects() -> Iterator[tuple[str, str, dict[str, Any]]]:
        rows = enrolled_rows(
            subjects.fetch(client),
            subject_system=subject_system,
            state_system=state_system,
            enrolled=enrolled,
            skipped=state.skipped,
        )
        for row, research_subject in rows:
            state.subjects += 1
            yield row.patient_ref, row.subject_id, research_subject

    def member(job: tuple[str, str, dict[str, Any]], into: _Fetch) -> _Member:
        """A subject with its day 0 (a look-up or two), its date floor and its reverse mapping."""
        patient_ref, subject_id, research_subject = job
        anchor = _baseline(
            client, caps, visit_system, patient_ref, subject_id, research_subject, study=study, pack=pack, state=into
        )
        return _Member(
            patient_ref,
            anchor - timedelta(days=lookback) if anchor and lookback is not None else None,
            functools.partial(
                reverse_map,
                subject_id=subject_id,
                by_code=by_code,
                catalogue=catalogue,
                study=study,
                anchor=anchor,
                window=window,
                rules=rules,
            ),
        )

    def groups() -> Iterator[list[tuple[str, str, dict[str, Any]]]]:
        pending = enrolled_subjects()
        while group := list(islice(pending, plan.groups.size)):
            yield group

    def one_by_one() -> Iterator[_Found]:
        for group in groups():
            members = [member(job, state) for job in group]
            for one in members:
                yield from plan.by_category(one, state)
            yield from plan.rest(members, state)

    if workers <= 1:  # the thread that reads ahead sends the requests; the mapping is done here, meanwhile
        for reverse, observation in _read_ahead(one_by_one(), READ_AHEAD):
            yield reverse(observation)
        return
    # a few subjects in flight, each fetched whole by a worker into its own state; handed on in order
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pull")
    pending: deque[tuple[Future[list[PulledLab | UnmappedResult]], _Fetch]] = deque()

    def hand_on() -> Iterator[PulledLab | UnmappedResult]:
        future, own = pending.popleft()
        yield from future.result()
        state.absorb(own)

    try:
        for group in groups():
            owns = [_Fetch() for _ in group]
            members = list(pool.map(member, group, owns))
            for one, own in zip(members, owns, strict=True):
                pending.append((pool.submit(_collect, plan.by_category(one, own)), own))
                if len(pending) > workers:
                    yield from hand_on()
            while pending:
                yield from hand_on()
            for reverse, observation in plan.rest(members, state):
                yield reverse(observation)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _collect(found: Iterator[_Found]) -> list[PulledLab | UnmappedResult]:
    """Run a subject's searches to their end and map what they bring (in a worker thread)."""
    return [reverse(observation) for reverse, observation in found]


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


Reverse = Callable[[dict[str, Any]], PulledLab | UnmappedResult]
_Found = tuple[Reverse, dict[str, Any]]  # an Observation a search brought, and the mapping of its subject


@dataclass(frozen=True)
class _Member:
    """A subject as the lab searches see it."""

    patient_ref: str
    floor: date | None  # no result collected before this date is asked for
    reverse: Reverse


class _Groups:
    """How many subjects share the next catalogue-code search.

    The first subject is searched alone: if its search brings next to nothing (today's data: nothing), the next
    groups grow (1, 8, 40); a group that brings more than ``DENSE_PER_SUBJECT`` results a subject stops the
    grouping for the rest of the pull. Such results are best asked subject by subject: HAPI 8.8 (H2) answers a
    search by a list of patients in about 10 ms a result, twenty times its rate for one patient.
    """

    def __init__(self) -> None:
        self.size = 1
        self.limit = GROUP_MAX
        self.grouping = True

    def searched(self, subjects: int, results: int) -> None:
        if results > DENSE_PER_SUBJECT * subjects:
            self.stop()
        elif self.grouping:
            self.size = min(self.limit, self.size * GROUP_GROWTH)

    def stop(self) -> None:
        self.grouping = False
        self.size = 1

    def shorten(self, subjects: int) -> None:
        """A group of ``subjects`` made the request too long for the server: at most half as many from now on."""
        self.limit = max(1, subjects // 2)
        self.size = min(self.size, self.limit)


class _Plan:
    """The lab searches of a pull, as the server's capabilities allow, each result fetched once.

    Per subject, ``by_category``: every result with the laboratory category (those whose codes the catalogue
    does not know included). Per group of subjects, ``rest``: ``code=<catalogue list>&category:not=laboratory``
    for all of them at once (``patient=Patient/a,Patient/b,...``), results with a catalogue code that some
    system wrote without the category, usually none; each result goes to the subject it refers to. The group
    search asks the earliest date floor of the group, and each subject's own floor is applied here to what
    it brings (``subjects.reaches``). A server that cannot search by code or category gets one search by patient,
    classified here. A server that refuses ``category:not`` gets a search by code alone per subject, and what
    it brings with the lab category is dropped (the category search brought it).
    """

    def __init__(self, client: FhirClient, caps: Capabilities, *, since: str | None, code_list: str, category: str):
        self.client = client
        self.caps = caps
        self.base = _patient_search(caps)
        self.param = _patient_param(caps)
        self.since = since
        self.code_list = code_list
        self.category = category
        self.split = caps.searches("Observation", "code") and caps.searches("Observation", "category")
        self.groups = _Groups()

    def filters(self, patients: str, floor: date | None, *, since: bool = True) -> dict[str, str]:
        filters = {self.param: patients}
        if self.since and since:
            filters["_lastUpdated"] = f"ge{self.since}"
        if floor:
            filters["date"] = f"ge{floor.isoformat()}"
        return filters

    def by_category(self, member: _Member, state: _Fetch) -> Iterator[_Found]:
        filters = self.filters(member.patient_ref, member.floor)
        if self.split:  # the token first: a server that filters in the order asked (Medplum) gets the cheap test first
            search = self.base.where(self.caps, category=self.category, **filters)
        else:  # the server cannot apply one of them: one search by patient, and the OR of both applied here
            search = self.base.where(self.caps, **filters).where_any(
                self.caps, code=self.code_list, category=self.category
            )
        for observation in self._fresh(search.with_params(_count=PAGE), state):
            yield member.reverse, observation

    def rest(self, members: list[_Member], state: _Fetch) -> Iterator[_Found]:
        """Results with a catalogue code and without the lab category, for a group of subjects."""
        if not self.split or not members:
            return
        if state.no_negation:
            for member in members:
                yield from self._by_code(member, state)
            return
        for part in self._fitting(members):
            yield from self._negated(part, state)

    def _fitting(self, members: list[_Member]) -> Iterator[list[_Member]]:
        """``members`` cut so that each group search's URL stays under MAX_URL."""
        part: list[_Member] = []
        for member in members:
            if part and self._url_length([*part, member]) > MAX_URL:
                self.groups.limit = min(self.groups.limit, len(part))
                yield part
                part = []
            part.append(member)
        if part:
            yield part

    def _negated_search(self, members: list[_Member]) -> Search:
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
        return bool(self.since) and self.groups.grouping

    def _url_length(self, members: list[_Member]) -> int:
        return len(self.client.base_url) + len("Observation?") + len(urlencode(self._negated_search(members).query()))

    def _negated(self, members: list[_Member], state: _Fetch) -> Iterator[_Found]:
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
                _mark(state, observation)
                yield member.reverse, observation
        except FhirHttpError as exc:
            if brought or exc.status not in (400, 414, 422, 431):
                raise
            if len(members) > 1 and exc.status in (414, 431):  # the URL is too long for this server
                self.groups.shorten(len(members))
                half = len(members) // 2
                yield from self._negated(members[:half], state)
                yield from self._negated(members[half:], state)
                return
            if len(members) > 1:  # a list of patients refused (or category:not): one subject at a time from now on
                self.groups.stop()
                for member in members:
                    yield from self._by_code(member, state) if state.no_negation else self._negated([member], state)
                return
            if exc.status in (414, 431):
                raise
            # a server that lists category but refuses its :not modifier: ask by code alone, as before
            state.no_negation = True
            _note_once(state, _NO_NEGATION)
            yield from self._by_code(members[0], state)
            return
        self.groups.searched(len(members), brought)
        if stray:  # ask subject by subject, so that each result comes with its subject; what came is dropped
            for member in members:
                for reverse, observation in self._negated([member], state):
                    if str(observation.get("id")) in given:
                        state.refetched += 1
                        continue
                    yield reverse, observation

    def _by_code(self, member: _Member, state: _Fetch) -> Iterator[_Found]:
        """Catalogue codes whatever the category (a server without ``:not``); the category search had the labs."""
        _note_once(state, _NO_NEGATION)
        search = self.base.where(self.caps, code=self.code_list, **self.filters(member.patient_ref, member.floor))
        for observation in self._fresh(search.with_params(_count=PAGE), state, marked=False):
            if _lab_category(observation, self.category):
                state.refetched += 1
                continue
            _mark(state, observation)
            yield member.reverse, observation

    def _fresh(self, search: Search, state: _Fetch, *, marked: bool = True) -> Iterator[dict[str, Any]]:
        """What ``search`` brings, each Observation once (a page boundary may repeat one), marked when asked."""
        _note(state, search)
        seen: set[str] = set()
        for observation in search.fetch(self.client):
            observation_id = str(observation.get("id"))
            if observation_id in seen:
                state.refetched += 1
                continue
            seen.add(observation_id)
            if marked:
                _mark(state, observation)
            yield observation


def _group_floor(members: Sequence[_Member]) -> date | None:
    """The date floor a group search asks: the earliest of its subjects', none if one of them has none."""
    floors = [m.floor for m in members]
    return min(f for f in floors if f is not None) if all(f is not None for f in floors) else None


def _mark(state: _Fetch, observation: dict[str, Any]) -> None:
    if updated := (observation.get("meta") or {}).get("lastUpdated"):
        state.mark(updated)


def _lab_category(observation: dict[str, Any], category: str) -> bool:
    return matches(observation, "category", category)


def _patient_search(caps: Capabilities) -> Search:
    if not caps.offers("Observation", "search-type"):
        raise UnsupportedInteraction("the server cannot search Observation")
    return Search("Observation")


def _patient_param(caps: Capabilities) -> str:
    for name in ("patient", "subject"):
        if caps.searches("Observation", name):
            return name
    raise UnsupportedInteraction("the server cannot search Observation by patient or subject")


def _find_study(client: FhirClient, caps: Capabilities, systems: Sequence[str], nct_id: str, state: _Fetch) -> str:
    """The one ResearchStudy carrying the NCT id under any of ``systems`` (current first, then superseded)."""
    wanted = ",".join(f"{system}|{nct_id}".replace(",", r"\,") for system in dict.fromkeys(systems))
    search = Search("ResearchStudy").where(caps, identifier=wanted)
    _note(state, search)
    studies = list({str(found.get("id")): found for found in search.fetch(client)}.values())
    if len(studies) != 1:
        raise FhirLupusError(f"{len(studies)} ResearchStudy resources on the server carry {nct_id}; expected 1")
    return f"ResearchStudy/{studies[0]['id']}"


def _baseline(
    client: FhirClient,
    caps: Capabilities,
    visit_system: str,
    patient_ref: str,
    subject_id: str,
    research_subject: dict[str, Any],
    *,
    study: StudyDefinition,
    pack: MappingPack,
    state: _Fetch,
) -> date | None:
    """The subject's day 0 (``protocol.visit_months.anchor``).

    For ``msc_infusion``, the start of the subject's earliest completed Procedure coded with the study's
    ``infusion_code``; without one (or for ``baseline``), the BL Encounter's date, else the start of the
    ResearchSubject period.
    """
    months = study.protocol.visit_months
    if months.anchor == "msc_infusion" and caps.offers("Procedure", "search-type"):
        started = _infusion_start(client, caps, patient_ref, pack.coding(months.infusion_code), state)
        if started is not None:
            return started
    if caps.offers("Encounter", "search-type"):
        search = Search("Encounter").where(caps, identifier=f"{visit_system}|{subject_id}/BL")
        started = encounter_start(search.fetch(client))
        if started is not None:
            return started
    return period_start(research_subject)


def _infusion_start(
    client: FhirClient, caps: Capabilities, patient_ref: str, coding: dict[str, str], state: _Fetch
) -> date | None:
    """The day the subject's first completed MSC infusion Procedure started (a search by patient and code)."""
    param = next((name for name in ("patient", "subject") if caps.searches("Procedure", name)), "patient")
    search = Search("Procedure").where(caps, **{param: patient_ref}, code=f"{coding['system']}|{coding['code']}")
    _note(state, search)
    return infusion_start(search.fetch(client))


def _note(state: _Fetch, search: Search) -> None:
    for note in search.fallbacks:
        _note_once(state, note)


def _note_once(state: _Fetch, note: str) -> None:
    if note not in state.fallbacks:
        state.fallbacks.append(note)


def _moment(value: str) -> datetime:
    moment = parse_instant(value)
    if moment is None:
        raise FhirLupusError(f"not a FHIR instant: {value!r}")
    return moment


def mark_minus(mark: str, seconds: int) -> str:
    """The search start for an incremental pull: the mark moved back by the overlap (UTC)."""
    return (_moment(mark) - timedelta(seconds=seconds)).astimezone(UTC).isoformat(timespec="milliseconds")
