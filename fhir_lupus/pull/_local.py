"""The lab table from resources at hand (a bulk export's NDJSON, ``fhir-lupus map --format ndjson``): pull's rules.

The search-based pull asks a server for each subject's labs; here the resources are already fetched, so the
same questions are answered over them: which ResearchStudy is the study (its NCT identifier under the current
or a superseded system), who is enrolled (``subjects.subject_row`` and mappings/fhir/lifecycle.yaml), each
subject's day 0 (``subjects.infusion_start``, ``encounter_start``, ``period_start``), which Observations are
the trial's lab results (``subjects.LabSelection``: the lab category or a catalogue code, on or after the
subject's date floor), and each result's row (``reverse.reverse_map``: status, codes, units, visit window).
A result of a Patient who is no enrolled subject is not the trial's and is only counted.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson

from fhir_lupus.client import location_id
from fhir_lupus.errors import FhirLupusError, NdjsonError
from fhir_lupus.model import StudyDefinition, load_lifecycle_rules
from fhir_lupus.pull._reverse import CodeIndex, PulledLab, PullRules, UnmappedResult, code_index, load_pull_rules
from fhir_lupus.pull._reverse import reverse_map as _reverse_map
from fhir_lupus.pull._search import parse_instant
from fhir_lupus.pull._subjects import (
    LabSelection,
    SubjectRow,
    encounter_start,
    enrolled_rows,
    infusion_start,
    lab_category,
    patient_of,
    period_end,
    period_start,
)
from fhir_lupus.terminology import LabCatalogue

__all__ = [
    "CONTEXT_TYPES",
    "LocalSubject",
    "LocalSubjects",
    "NdjsonError",
    "anchors_from",
    "labs_from_ndjson",
    "read_ndjson",
    "split_ndjson",
    "study_subjects",
    "subjects_of_study",
]

CONTEXT_TYPES = ("ResearchStudy", "ResearchSubject", "Encounter", "Procedure")  # who is a subject, and day 0

AnchorOf = Callable[[SubjectRow, dict[str, Any]], date | None]  # a subject's day 0, from its ResearchSubject


@dataclass(frozen=True)
class LocalSubject:
    """An enrolled subject as the lab selection and the reverse mapping need it."""

    patient_ref: str
    subject_id: str
    anchor: date | None  # day 0 of the visit windows
    floor: date | None  # no result collected before this day is the trial's (lookback_days_before_anchor)
    end: date | None = None  # the end of participation (ResearchSubject.period.end): later results have no visit


@dataclass
class LocalSubjects:
    """The study's enrolled subjects by Patient, and how a result of theirs becomes a row.

    Anchors are found when a subject's first result comes (``anchor_of``): from resources at hand, or by a
    search when only the changed resources are (an incremental bulk export).
    """

    study: StudyDefinition
    catalogue: LabCatalogue
    rules: PullRules
    window: int
    lookback: int | None
    rows: dict[str, tuple[SubjectRow, dict[str, Any]]]  # Patient/<id> -> (subject row, its ResearchSubject)
    anchor_of: AnchorOf
    skipped: Counter[str] = field(default_factory=Counter)  # ResearchSubjects not enrolled, by status
    others: int = 0  # results of Patients who are no enrolled subject (counted, not the trial's)
    high_water: str | None = None  # the latest meta.lastUpdated of a result taken
    _subjects: dict[str, LocalSubject] = field(default_factory=dict)
    _by_code: CodeIndex = field(init=False)
    selection: LabSelection = field(init=False)  # which Observations are the trial's lab results

    def __post_init__(self) -> None:
        self._by_code = code_index(self.catalogue)
        self.selection = LabSelection(lab_category(self.catalogue.pack), frozenset(self._by_code))

    def __len__(self) -> int:
        return len(self.rows)

    def subject(self, patient_ref: str) -> LocalSubject | None:
        """The enrolled subject whose Patient is ``patient_ref`` (day 0 found on first use), None if none is."""
        found = self._subjects.get(patient_ref)
        if found is None and patient_ref in self.rows:
            row, research_subject = self.rows[patient_ref]
            anchor = self.anchor_of(row, research_subject)
            floor = anchor - timedelta(days=self.lookback) if anchor and self.lookback is not None else None
            found = self._subjects[patient_ref] = LocalSubject(
                patient_ref, row.subject_id, anchor, floor, period_end(research_subject)
            )
        return found

    def reverse(self, observation: dict[str, Any], subject: LocalSubject) -> PulledLab | UnmappedResult:
        return _reverse_map(
            observation,
            subject_id=subject.subject_id,
            by_code=self._by_code,
            catalogue=self.catalogue,
            study=self.study,
            anchor=subject.anchor,
            window=self.window,
            rules=self.rules,
            end=subject.end,
        )

    def labs(self, observations: Iterable[dict[str, Any]]) -> Iterator[PulledLab | UnmappedResult]:
        """Each of ``observations`` that is a lab result of an enrolled subject, once, as a row or set aside."""
        seen: set[str] = set()
        for observation in observations:
            if observation.get("resourceType") != "Observation":
                continue
            subject = self.subject(patient_of(observation))
            if subject is None:
                self.others += 1
                continue
            if not self.selection.wanted(observation, subject.floor):
                continue
            observation_id = str(observation.get("id"))
            if observation_id in seen:  # a bulk export may list a result under two _typeFilter queries
                continue
            seen.add(observation_id)
            updated = (observation.get("meta") or {}).get("lastUpdated")
            if updated and (self.high_water is None or _later(updated, self.high_water)):
                self.high_water = updated
            yield self.reverse(observation, subject)


def subjects_of_study(
    study: StudyDefinition,
    catalogue: LabCatalogue,
    research_subjects: Iterable[dict[str, Any]],
    *,
    anchor_of: AnchorOf,
    study_id: str | None = None,
    window_days: int | None = None,
    lookback_days: int | None = None,
    mappings_dir: Path | None = None,
) -> LocalSubjects:
    """The enrolled subjects among ``research_subjects`` (those of ResearchStudy ``study_id`` when it is given)."""
    pack = catalogue.pack
    rules = load_pull_rules(mappings_dir)
    enrolled = load_lifecycle_rules(mappings_dir).enrolled
    subject_system = pack.identifier_system("subject", study=study.nct_id)
    state_system = pack.system_uri("research-subject-state")
    local = LocalSubjects(
        study=study,
        catalogue=catalogue,
        rules=rules,
        window=window_days if window_days is not None else study.protocol.visit_window_days,
        lookback=lookback_days if lookback_days is not None else rules.lookback_days_before_anchor,
        rows={},
        anchor_of=anchor_of,
    )
    if study_id is not None:
        research_subjects = (
            rs
            for rs in research_subjects
            if location_id(str((rs.get("study") or {}).get("reference") or ""), "ResearchStudy") == study_id
        )
    rows = enrolled_rows(
        research_subjects,
        subject_system=subject_system,
        state_system=state_system,
        enrolled=enrolled,
        skipped=local.skipped,
    )
    for row, research_subject in rows:
        local.rows[row.patient_ref] = (row, research_subject)
    return local


def study_subjects(
    study: StudyDefinition,
    catalogue: LabCatalogue,
    resources: Mapping[str, Iterable[dict[str, Any]]],
    *,
    window_days: int | None = None,
    lookback_days: int | None = None,
    mappings_dir: Path | None = None,
) -> LocalSubjects:
    """The study's enrolled subjects and their day 0 from ``resources`` (ResearchStudy, ResearchSubject,
    Encounter, Procedure, by type), as the search-based pull finds them on a server."""
    pack = catalogue.pack
    systems = {
        pack.identifier_system("study", study=study.nct_id),
        *pack.superseded_identifier_systems("study", study=study.nct_id),
    }
    studies = {
        str(found.get("id"))
        for found in resources.get("ResearchStudy", ())
        if any(i.get("system") in systems and i.get("value") == study.nct_id for i in found.get("identifier", []))
    }
    if len(studies) != 1:
        raise FhirLupusError(f"{len(studies)} ResearchStudy resources carry {study.nct_id}; expected 1")
    return subjects_of_study(
        study,
        catalogue,
        resources.get("ResearchSubject", ()),
        anchor_of=anchors_from(study, catalogue, resources.get("Procedure", ()), resources.get("Encounter", ())),
        study_id=studies.pop(),
        window_days=window_days,
        lookback_days=lookback_days,
        mappings_dir=mappings_dir,
    )


def anchors_from(
    study: StudyDefinition,
    catalogue: LabCatalogue,
    procedures: Iterable[dict[str, Any]],
    encounters: Iterable[dict[str, Any]],
) -> AnchorOf:
    """Day 0 from Procedures and Encounters at hand, by the rule of the search-based pull: the first completed
    MSC infusion (``anchor: msc_infusion``), else the BL Encounter, else the ResearchSubject's period start."""
    pack = catalogue.pack
    months = study.protocol.visit_months
    infusion = pack.coding(months.infusion_code)
    infusions: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    if months.anchor == "msc_infusion":
        for procedure in procedures:
            codings = (procedure.get("code") or {}).get("coding") or []
            if any(c.get("system") == infusion["system"] and c.get("code") == infusion["code"] for c in codings):
                reference = (procedure.get("subject") or procedure.get("patient") or {}).get("reference", "")
                infusions[f"Patient/{location_id(str(reference), 'Patient')}"].append(procedure)
    visit_system = pack.identifier_system("visit", study=study.nct_id)
    baseline: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for encounter in encounters:
        for identifier in encounter.get("identifier", []):
            if identifier.get("system") == visit_system and str(identifier.get("value", "")).endswith("/BL"):
                baseline[str(identifier["value"])].append(encounter)

    def anchor_of(row: SubjectRow, research_subject: dict[str, Any]) -> date | None:
        started = infusion_start(infusions.get(row.patient_ref, ()))
        if started is None:
            started = encounter_start(baseline.get(f"{row.subject_id}/BL", ()))
        return started if started is not None else period_start(research_subject)

    return anchor_of


def labs_from_ndjson(
    paths: Iterable[Path],
    study: StudyDefinition,
    catalogue: LabCatalogue,
    *,
    window_days: int | None = None,
    lookback_days: int | None = None,
    mappings_dir: Path | None = None,
) -> tuple[LocalSubjects, Iterator[PulledLab | UnmappedResult]]:
    """The study's subjects and a lazy stream of their lab rows from NDJSON files (any names, any order).

    The small resource types (``CONTEXT_TYPES``) are read first and kept; the Observations are then streamed,
    so a file of millions of results is never held whole. A file whose first resource is an Observation is
    taken for a file of Observations (as a bulk export and ``map --format ndjson`` write them) and read once.
    """
    context, with_observations = split_ndjson(sorted(paths))
    subjects = study_subjects(
        study, catalogue, context, window_days=window_days, lookback_days=lookback_days, mappings_dir=mappings_dir
    )

    def observations() -> Iterator[dict[str, Any]]:
        for path in with_observations:
            yield from read_ndjson(path)

    return subjects, subjects.labs(observations())


def split_ndjson(paths: Iterable[Path]) -> tuple[dict[str, list[dict[str, Any]]], list[Path]]:
    """The resources of ``CONTEXT_TYPES`` in ``paths`` (read here, kept), and the files holding Observations.

    A file whose first resource is an Observation is taken for a file of Observations and left for the caller
    to stream; any other file is read whole here, and listed too when it also holds Observations.
    """
    context: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTEXT_TYPES}
    with_observations: list[Path] = []
    for path in paths:
        resources = read_ndjson(path)
        first = next(resources, None)
        if first is None:
            continue
        if first["resourceType"] == "Observation":
            resources.close()  # the file is read again, line by line, by the caller
            with_observations.append(path)
            continue
        mixed = False
        for resource in itertools.chain([first], resources):
            kind = resource["resourceType"]
            if kind in context:
                context[kind].append(resource)
            mixed = mixed or kind == "Observation"
        if mixed:
            with_observations.append(path)
    return context, with_observations


def read_ndjson(path: Path, *, source: str | None = None) -> Generator[dict[str, Any], None, None]:
    """The resources of an NDJSON file, one a line (blank lines skipped); NdjsonError names the file and line."""
    where = source or str(path)
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                resource = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise NdjsonError(f"{where}, line {number}: not JSON ({exc})") from None
            if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
                raise NdjsonError(f"{where}, line {number}: not a FHIR resource (no resourceType)")
            yield resource


def _later(first: str, second: str) -> bool:
    one, two = parse_instant(first), parse_instant(second)
    return bool(one and two and one > two)
