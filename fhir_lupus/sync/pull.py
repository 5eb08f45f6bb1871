"""Pull lab Observations of a study's subjects back into trial lab rows: whoever wrote them, nothing lost.

The study is found by its NCT identifier, its subjects by ResearchSubject?study, and their labs by patient,
catalogue code list and date, then again by category (laboratory results whose codes the catalogue does not
know). Every search goes through ``search.Search``, which asks the server for what its CapabilityStatement
offers and filters the rest here. Each Observation is reverse-mapped (``reverse.py``: status, codes, units,
visit window) and staged; ``pullstore.py`` merges the stage into the rows pulled before, writes the output
and only then moves the high-water mark. Incremental pulls ask ``_lastUpdated=ge`` the mark minus an overlap,
so a write committed late, or at the same instant as the mark, is fetched again and de-duplicated by id and
version rather than missed.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from fhir_lupus.client import Capabilities, FhirClient, UnsupportedInteraction
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

PAGE = "200"
STAGE_BATCH = 500


@dataclass
class PullResult:
    rows: list[PulledLab] = field(default_factory=list)  # new, or newer versions, in this pull
    unmapped: list[UnmappedResult] = field(default_factory=list)  # set aside in this pull, with the reason
    removed: list[Removal] = field(default_factory=list)  # rows pulled earlier that are rows no more
    subjects: int = 0
    # ResearchSubjects not enrolled (mappings/fhir/lifecycle.yaml `enrolled`), by status: never pulled
    skipped_subjects: dict[str, int] = field(default_factory=dict)
    since: str | None = None  # what the search asked (_lastUpdated ge), None for everything
    high_water: str | None = None
    fetched: int = 0
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
    marks: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)


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
    ):
        batch.append(record)
        fetched += 1
        if len(batch) >= STAGE_BATCH:
            store.stage(batch)
            batch.clear()
    store.stage(batch)
    marks = [m for m in (*fetch.marks, mark_from) if m]
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
) -> Iterator[PulledLab | UnmappedResult]:
    """Every lab result of the study's subjects (updated since ``since``), reverse-mapped; nothing dropped.

    Results collected more than ``lookback_days`` before a subject's anchor are not asked for (default:
    ``lookback_days_before_anchor`` of mappings/fhir/pull.yaml, which reaches screening labs).
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
        anchor = _baseline(
            client, caps, visit_system, patient_ref, subject_id, research_subject, study=study, pack=pack, state=state
        )
        yield from _subject_labs(
            client,
            caps,
            patient_ref,
            since=since,
            floor=anchor - timedelta(days=lookback) if anchor and lookback is not None else None,
            searches=({"code": code_list}, {"category": category}),
            state=state,
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
    searches: tuple[dict[str, str], ...],
    state: _Fetch,
    reverse: Callable[[dict[str, Any]], PulledLab | UnmappedResult],
) -> Iterator[PulledLab | UnmappedResult]:
    base = _patient_search(caps)
    filters: dict[str, str] = {}
    if since:
        filters["_lastUpdated"] = f"ge{since}"
    if floor:
        filters["date"] = f"ge{floor.isoformat()}"
    seen: set[str] = set()
    for extra in searches:
        search = base.where(caps, **{_patient_param(caps): patient_ref}, **filters, **extra).with_params(_count=PAGE)
        _note(state, search)
        for observation in search.fetch(client):
            observation_id = str(observation.get("id"))
            if observation_id in seen:
                continue
            seen.add(observation_id)
            if updated := (observation.get("meta") or {}).get("lastUpdated"):
                state.marks.append(updated)
            yield reverse(observation)


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
