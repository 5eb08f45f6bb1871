"""Pull lab Observations of a study's subjects back into trial lab rows: whoever wrote them, nothing lost.

The study is found by its NCT identifier, its subjects by ResearchSubject?study, and their labs by patient and
date in one pass that fetches each result once: ``category=laboratory`` (every lab result, those whose codes
the catalogue does not know included), plus ``code=<catalogue list>&category:not=laboratory`` (results with a
catalogue code that some system wrote without the laboratory category; usually none). The two are disjoint,
so nothing is fetched twice, and together they find exactly what a search by code list and another by
category would. A server that cannot search by code or category gets one search by patient, classified here.
Every search goes through ``search.Search``, which asks the server for what its CapabilityStatement offers
and filters the rest here. Each Observation is reverse-mapped (``reverse.py``: status, codes, units,
visit window) and staged; ``pullstore.py`` merges the stage into the rows pulled before, writes the output
and only then moves the high-water mark. Incremental pulls ask ``_lastUpdated=ge`` the mark minus an overlap,
so a write committed late, or at the same instant as the mark, is fetched again and de-duplicated by id and
version rather than missed.
"""

from __future__ import annotations

import functools
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from fhir_lupus.client import Capabilities, FhirClient, FhirHttpError, UnsupportedInteraction
from fhir_lupus.errors import FhirLupusError
from fhir_lupus.model.lifecycle import load_lifecycle_rules
from fhir_lupus.model.study import StudyDefinition
from fhir_lupus.sync.journal import Journal
from fhir_lupus.sync.pullstore import PullStore, Removal
from fhir_lupus.sync.reverse import (
    PulledLab,
    UnmappedResult,
    code_index,
    load_pull_rules,
    reverse_map,
)
from fhir_lupus.sync.search import Search, parse_instant
from fhir_lupus.terminology import LabCatalogue, MappingPack

__all__ = ["PullResult", "fetch_labs", "pull_labs"]

# Asked for as the page size; servers cap it (HAPI as configured here: 500, Medplum: 1000) and next links bring
# the rest. Fewer, larger pages: HAPI answers a page of 500 in about the time of two pages of 200.
PAGE = "1000"
STAGE_BATCH = 500
# Subjects fetched at once (each subject's labs in order; the store sorts the output, so the result does not
# depend on it). 1 = one after the other; bench/bench_pull.py measures what more gives.
DEFAULT_WORKERS = 1
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
) -> PullResult:
    """Fetch, merge into the journal's store, write ``output`` (and its ``.unmapped`` file), move the mark.

    ``since`` is what the search asks for (``_lastUpdated=ge``); ``mark_from`` is the mark before this pull
    (it only moves forward); ``replace_all`` makes the store mirror exactly what was fetched (a full pull).
    """
    server = client.base_url
    store = PullStore(journal.connection, server, study.nct_id)
    store.clear_stage()
    fetch = _Fetch()
    batch: list[PulledLab | UnmappedResult] = []
    fetched = 0
    for record in fetch_labs(
        client,
        study,
        catalogue,
        since=since,
        window_days=window_days,
        lookback_days=lookback_days,
        state=fetch,
        mappings_dir=mappings_dir,
        workers=workers,
    ):
        batch.append(record)
        fetched += 1
        if len(batch) >= STAGE_BATCH:
            store.stage(batch)
            batch.clear()
    store.stage(batch)
    marks = [m for m in (fetch.high_water, mark_from) if m]
    high_water = max(marks, key=_moment) if marks else None
    with journal.transaction():
        merged = store.merge(replace_all=replace_all)
        outputs = store.write(output) if output else ()
        if high_water and high_water != mark_from:
            journal.set_high_water(server, study.nct_id, high_water)
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
    ``lookback_days_before_anchor`` of mappings/fhir/pull.yaml, which reaches screening labs). With
    ``workers`` > 1, that many subjects are fetched at once (through the one client, its retries and auth);
    results still come out subject by subject, in the order of the ResearchSubject search.
    """
    state = state or _Fetch()
    pack = catalogue.pack
    rules = load_pull_rules(mappings_dir)
    caps = client.capabilities()
    caps.require_search("ResearchSubject")
    window = window_days if window_days is not None else study.protocol.visit_window_days
    lookback = lookback_days if lookback_days is not None else rules.lookback_days_before_anchor
    study_systems = [
        pack.identifier_system("study", study=study.nct_id),
        *pack.superseded_identifier_systems("study", study=study.nct_id),
    ]
    study_ref = _find_study(client, caps, study_systems, study.nct_id, state)
    by_code = code_index(catalogue)
    code_list = ",".join(sorted(by_code))
    category = f"{pack.system_uri(rules.lab_category.system)}|{rules.lab_category.code}"
    subject_system = pack.identifier_system("subject", study=study.nct_id)
    visit_system = pack.identifier_system("visit", study=study.nct_id)
    enrolled = load_lifecycle_rules(mappings_dir).enrolled
    state_system = pack.system_uri("research-subject-state")
    subjects = Search("ResearchSubject").where(caps, study=study_ref).with_params(_count=PAGE)
    _note(state, subjects)

    def enrolled_subjects() -> Iterator[tuple[str, str, dict[str, Any]]]:
        for research_subject in subjects.fetch(client):
            patient_ref = research_subject.get("individual", research_subject.get("subject", {})).get("reference", "")
            if not patient_ref.startswith("Patient/"):
                continue
            status = _subject_state(research_subject, state_system)
            if status not in enrolled:  # a candidate, eligible or ineligible person: not a subject of the study
                state.skipped[status or "no status"] += 1
                continue
            subject_id = next(
                (i["value"] for i in research_subject.get("identifier", []) if i.get("system") == subject_system),
                research_subject.get("id", ""),
            )
            state.subjects += 1
            yield patient_ref, subject_id, research_subject

    def one_subject(
        patient_ref: str, subject_id: str, research_subject: dict[str, Any], into: _Fetch
    ) -> Iterator[PulledLab | UnmappedResult]:
        anchor = _baseline(
            client, caps, visit_system, patient_ref, subject_id, research_subject, study=study, pack=pack, state=into
        )
        yield from _subject_labs(
            client,
            caps,
            patient_ref,
            since=since,
            floor=anchor - timedelta(days=lookback) if anchor and lookback is not None else None,
            code_list=code_list,
            category=category,
            state=into,
            reverse=functools.partial(
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

    if workers <= 1:
        for job in enrolled_subjects():
            yield from one_subject(*job, into=state)
        return
    # a few subjects in flight, each fetched whole by a worker into its own state; handed on in order
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pull")
    pending: deque[tuple[Future[list[PulledLab | UnmappedResult]], _Fetch]] = deque()

    def hand_on() -> Iterator[PulledLab | UnmappedResult]:
        future, own = pending.popleft()
        yield from future.result()
        state.absorb(own)

    try:
        for job in enrolled_subjects():
            own = _Fetch(no_negation=state.no_negation)
            pending.append((pool.submit(_collect, one_subject(*job, into=own)), own))
            if len(pending) > workers:
                yield from hand_on()
        while pending:
            yield from hand_on()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _collect(records: Iterator[PulledLab | UnmappedResult]) -> list[PulledLab | UnmappedResult]:
    """Run a subject's generator to its end (in a worker thread)."""
    return list(records)


def _subject_state(research_subject: dict[str, Any], state_system: str) -> str | None:
    """The subject's current status: R4 ``status``; R5 ``progress`` (the state without an end, else the last)."""
    progress = [p for p in research_subject.get("progress") or [] if p.get("subjectState")]
    if not progress:
        status = research_subject.get("status")
        return str(status) if status else None
    current = next((p for p in reversed(progress) if not p.get("endDate")), progress[-1])
    codings = current["subjectState"].get("coding") or []
    coding = next((c for c in codings if c.get("system") == state_system), codings[0] if codings else {})
    code = coding.get("code")
    return str(code) if code else None


def _subject_labs(
    client: FhirClient,
    caps: Capabilities,
    patient_ref: str,
    *,
    since: str | None,
    floor: date | None,
    code_list: str,
    category: str,
    state: _Fetch,
    reverse: Callable[[dict[str, Any]], PulledLab | UnmappedResult],
) -> Iterator[PulledLab | UnmappedResult]:
    """The patient's lab results, each fetched once: what the catalogue codes or the lab category find."""
    filters = {_patient_param(caps): patient_ref}
    if since:
        filters["_lastUpdated"] = f"ge{since}"
    if floor:
        filters["date"] = f"ge{floor.isoformat()}"
    base = _patient_search(caps)
    seen: set[str] = set()

    def fresh(search: Search) -> Iterator[dict[str, Any]]:
        _note(state, search)
        for observation in search.fetch(client):
            observation_id = str(observation.get("id"))
            if observation_id in seen:  # only when a server ignores category:not, or refuses it
                state.refetched += 1
                continue
            seen.add(observation_id)
            if updated := (observation.get("meta") or {}).get("lastUpdated"):
                state.mark(updated)
            yield observation

    for search, negated in _lab_searches(caps, base, filters, code_list, category, state):
        brought = 0
        try:
            for observation in fresh(search):
                brought += 1
                yield reverse(observation)
        except FhirHttpError as exc:
            # a server that lists category but refuses its :not modifier: ask by code alone, as before
            if not negated or brought or exc.status not in (400, 422):
                raise
            state.no_negation = True
            _note_once(state, _NO_NEGATION)
            by_code = base.where(caps, **filters, code=code_list).with_params(_count=PAGE)
            for observation in fresh(by_code):
                yield reverse(observation)


def _lab_searches(
    caps: Capabilities, base: Search, filters: dict[str, str], code_list: str, category: str, state: _Fetch
) -> list[tuple[Search, bool]]:
    """The searches that together bring every result with a catalogue code or the lab category, each once.

    Today's labs carry the category; a result with a catalogue code but without it (or with another
    category only) is what the second, negated search brings, so nothing found by code alone is lost.
    """
    if caps.searches("Observation", "code") and caps.searches("Observation", "category"):
        by_category = base.where(caps, **filters, category=category).with_params(_count=PAGE)
        if state.no_negation:
            _note_once(state, _NO_NEGATION)
            by_code = base.where(caps, **filters, code=code_list).with_params(_count=PAGE)
            return [(by_category, False), (by_code, False)]
        rest = base.where(caps, **filters, code=code_list, **{"category:not": category}).with_params(_count=PAGE)
        return [(by_category, False), (rest, True)]
    # the server cannot apply one of them: one search by patient, and the OR of both applied here
    either = base.where(caps, **filters).where_any(caps, code=code_list, category=category)
    return [(either.with_params(_count=PAGE), False)]


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
        for encounter in search.fetch(client):
            period = encounter.get("period") or encounter.get("actualPeriod") or {}
            if period.get("start"):
                return date.fromisoformat(period["start"][:10])
    start = (research_subject.get("period") or {}).get("start")
    return date.fromisoformat(start[:10]) if start else None


def _infusion_start(
    client: FhirClient, caps: Capabilities, patient_ref: str, coding: dict[str, str], state: _Fetch
) -> date | None:
    """The date the subject's first completed MSC infusion Procedure started (R4 performed*, R5 occurrence*)."""
    param = next((name for name in ("patient", "subject") if caps.searches("Procedure", name)), "patient")
    search = Search("Procedure").where(caps, **{param: patient_ref}, code=f"{coding['system']}|{coding['code']}")
    _note(state, search)
    starts = []
    for procedure in search.fetch(client):
        if procedure.get("status") != "completed":
            continue
        for key in ("performedDateTime", "occurrenceDateTime"):
            if procedure.get(key):
                starts.append(str(procedure[key])[:10])
        for key in ("performedPeriod", "occurrencePeriod"):
            if (procedure.get(key) or {}).get("start"):
                starts.append(str(procedure[key]["start"])[:10])
    return date.fromisoformat(min(starts)) if starts else None


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
