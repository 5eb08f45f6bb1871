"""Who is a subject of the study and which day is their day 0: set up once per pull, whoever fetched the resources.

A pull builds one ``Subjects`` and hands it to the pass that fetches the labs: the search pass (``_search_pass``),
the bulk pass (``_bulk_pass``), the NDJSON path (``_local``) and Spark (``fhir_lupus.spark``). It holds what every
path must decide alike: the study's identifier systems (current, then superseded), the enrolled statuses
(mappings/fhir/lifecycle.yaml), the visit window, the look-back before day 0, the lab selection and the
catalogue's code index. The study is found by its NCT identifier on the server (``find_study``) or among
resources at hand (``take``); its enrolled ResearchSubjects are kept and the others counted by status (``enrol``).
Day 0 (``protocol.visit_months.anchor``) follows one rule (``resolve``): the first completed MSC infusion
Procedure (anchor ``msc_infusion``), else the BL Encounter, else the start of the ResearchSubject's period. Only
where those Procedures and Encounters come from differs between the paths (``DayZeroRecords``): a search per
subject (``OnServer``) or an index of the files at hand (``AtHand``).
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Protocol

from fhir_lupus.client import Capabilities, FhirClient, location_id
from fhir_lupus.errors import FhirLupusError
from fhir_lupus.model import StudyDefinition, load_lifecycle_rules
from fhir_lupus.pull._reverse import PulledLab, UnmappedResult, code_index, load_pull_rules, reverse_map
from fhir_lupus.pull._search import PAGE, Search, parse_instant
from fhir_lupus.pull._selection import LabSelection, lab_category, patient_of
from fhir_lupus.pull._state import PassState
from fhir_lupus.terminology import LabCatalogue

__all__ = [
    "AtHand",
    "DayZeroRecords",
    "OnServer",
    "Subject",
    "SubjectRow",
    "Subjects",
    "encounter_start",
    "infusion_start",
    "period_end",
    "period_start",
    "subject_row",
    "subject_state",
]


@dataclass(frozen=True)
class SubjectRow:
    """A ResearchSubject as pull reads it: its Patient, its subject id and its current status."""

    patient_ref: str  # ``Patient/<id>``
    subject_id: str  # our subject identifier's value, else the ResearchSubject's id
    status: str | None


@dataclass(frozen=True)
class Subject:
    """An enrolled subject as the lab selection and the reverse mapping need it."""

    patient_ref: str
    subject_id: str
    anchor: date | None  # day 0 of the visit windows
    floor: date | None  # no result collected before this day is the trial's (lookback_days_before_anchor)
    end: date | None = None  # the end of participation (ResearchSubject.period.end): later results have no visit


class DayZeroRecords(Protocol):
    """Where the resources that give day 0 come from: searches on the server, or files at hand."""

    def infusions(self, patient_ref: str) -> Iterable[dict[str, Any]]:
        """The subject's MSC infusion Procedures (asked for under anchor ``msc_infusion`` only)."""
        ...

    def baseline(self, subject_id: str) -> Iterable[dict[str, Any]]:
        """The subject's BL Encounters."""
        ...


class Subjects:
    """The study's enrolled subjects, each one's day 0, and how a result of theirs becomes a row.

    Built once per pull and passed down to the pass, so that no path decides any of it its own way (three
    set-ups of their own had drifted: the search pass ignored the end of participation that the others applied).
    """

    def __init__(
        self,
        study: StudyDefinition,
        catalogue: LabCatalogue,
        *,
        window_days: int | None = None,
        lookback_days: int | None = None,
        patients: Collection[str] | None = None,
    ) -> None:
        """``patients``: the server's Patient ids (without ``Patient/``) to pull for, None for every enrolled subject;
        the others are left out of the pull as if they were not in the study (``ignored`` counts the ids given
        that are no enrolled subject)."""
        pack = catalogue.pack  # the mappings of the catalogue are the pull's: its rules and lifecycle too
        self.study = study
        self.catalogue = catalogue
        self.rules = load_pull_rules(pack)
        self.window = window_days if window_days is not None else study.protocol.visit_window_days
        self.lookback = lookback_days if lookback_days is not None else self.rules.lookback_days_before_anchor
        self.by_code = code_index(catalogue)
        self.selection = LabSelection(lab_category(pack), frozenset(self.by_code))  # which Observations are lab results
        self.study_systems = (
            pack.identifier_system("study", study=study.nct_id),
            *pack.superseded_identifier_systems("study", study=study.nct_id),
        )
        # current system first; then those it replaced (mappings/project.yaml, the site profile's superseded values)
        self.subject_systems = (
            pack.identifier_system("subject", study=study.nct_id),
            *pack.superseded_identifier_systems("subject", study=study.nct_id),
        )
        self.visit_systems = (
            pack.identifier_system("visit", study=study.nct_id),
            *pack.superseded_identifier_systems("visit", study=study.nct_id),
        )
        self.visit_system = self.visit_systems[0]
        self.state_system = pack.system_uri("research-subject-state")
        self.enrolled = load_lifecycle_rules(pack).enrolled
        months = study.protocol.visit_months
        self.infusion = pack.coding(months.infusion_code) if months.anchor == "msc_infusion" else None
        self.rows: dict[str, tuple[SubjectRow, dict[str, Any]]] = {}  # Patient/<id> -> (row, its ResearchSubject)
        self.skipped: Counter[str] = Counter()  # ResearchSubjects not enrolled, by status
        self.others = 0  # results at hand of Patients who are no enrolled subject (counted, not the trial's)
        self.high_water: str | None = None  # the latest meta.lastUpdated of a result taken by ``labs``
        self.only = frozenset(f"Patient/{p}" for p in patients) if patients is not None else None
        self._resolved: dict[str, Subject] = {}

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def ignored(self) -> int:
        """Patient ids given (``patients``) that are no enrolled subject of the study (unknown, or not enrolled)."""
        return len(self.only - self.rows.keys()) if self.only is not None else 0

    def subject_ids(self) -> frozenset[str]:
        """The subject ids of the enrolled subjects taken so far: the scope a pull may reconcile."""
        return frozenset(row.subject_id for row, _ in self.rows.values())

    # -- the study and who is enrolled in it -----------------------------------------------------------------

    def find_study(self, client: FhirClient, caps: Capabilities, state: PassState) -> str:
        """``ResearchStudy/<id>`` of the one study on the server carrying the NCT id under one of its systems."""
        nct_id = self.study.nct_id
        wanted = ",".join(f"{system}|{nct_id}".replace(",", r"\,") for system in dict.fromkeys(self.study_systems))
        search = Search("ResearchStudy").where(caps, identifier=wanted)
        state.note(search)
        studies = list({str(found.get("id")): found for found in search.fetch(client)}.values())
        if len(studies) != 1:
            raise FhirLupusError(f"{len(studies)} ResearchStudy resources on the server carry {nct_id}; expected 1")
        return f"ResearchStudy/{studies[0]['id']}"

    def research_subjects(
        self, client: FhirClient, caps: Capabilities, study_ref: str, state: PassState
    ) -> Iterator[dict[str, Any]]:
        """The ResearchSubjects of ``study_ref`` as a search brings them: lazily, a page at a time."""
        search = Search("ResearchSubject").where(caps, study=study_ref).with_params(_count=PAGE)
        state.note(search)
        return search.fetch(client)

    def take(self, resources: Mapping[str, Iterable[dict[str, Any]]]) -> AtHand:
        """The study, its enrolled subjects and what gives their day 0, from resources at hand (ResearchStudy,
        ResearchSubject, Encounter, Procedure, by type), as the search pass finds them on a server."""
        systems = set(self.study_systems)
        nct_id = self.study.nct_id
        studies = {
            str(found.get("id"))
            for found in resources.get("ResearchStudy", ())
            if any(i.get("system") in systems and i.get("value") == nct_id for i in found.get("identifier", []))
        }
        if len(studies) != 1:
            raise FhirLupusError(f"{len(studies)} ResearchStudy resources carry {nct_id}; expected 1")
        self.keep(resources.get("ResearchSubject", ()), study_id=studies.pop())
        return AtHand(self, resources.get("Procedure", ()), resources.get("Encounter", ()))

    def keep(self, research_subjects: Iterable[dict[str, Any]], *, study_id: str) -> None:
        """Take every enrolled subject of ResearchStudy ``study_id`` among ``research_subjects`` at once."""
        deque(self.enrol(research_subjects, study_id=study_id), maxlen=0)

    def enrol(
        self, research_subjects: Iterable[dict[str, Any]], *, study_id: str | None = None
    ) -> Iterator[tuple[SubjectRow, dict[str, Any]]]:
        """The enrolled subjects among ``research_subjects`` (lazily, each kept), with their ResearchSubject; the
        others, which are candidates, eligible or ineligible people and no subjects of the study, counted by
        status in ``skipped``. ``study_id``: only those whose ResearchSubject.study is that ResearchStudy."""
        for research_subject in research_subjects:
            if study_id is not None:
                study_ref = str((research_subject.get("study") or {}).get("reference") or "")
                if location_id(study_ref, "ResearchStudy") != study_id:
                    continue
            row = subject_row(research_subject, subject_systems=self.subject_systems, state_system=self.state_system)
            if row is None or (self.only is not None and row.patient_ref not in self.only):
                continue
            if row.status not in self.enrolled:
                self.skipped[row.status or "no status"] += 1
                continue
            self.rows[row.patient_ref] = (row, research_subject)
            yield row, research_subject

    # -- day 0 -------------------------------------------------------------------------------------------------

    def resolve(self, row: SubjectRow, research_subject: dict[str, Any], records: DayZeroRecords) -> Subject:
        """The subject with its day 0 by the one rule, its date floor and the end of its participation."""
        anchor = infusion_start(records.infusions(row.patient_ref)) if self.infusion is not None else None
        if anchor is None:
            anchor = encounter_start(records.baseline(row.subject_id))
        if anchor is None:
            anchor = period_start(research_subject)
        floor = anchor - timedelta(days=self.lookback) if anchor and self.lookback is not None else None
        return Subject(row.patient_ref, row.subject_id, anchor, floor, period_end(research_subject))

    def subject(self, patient_ref: str, records: DayZeroRecords) -> Subject | None:
        """The enrolled subject whose Patient is ``patient_ref`` (day 0 found on first use), None if none is."""
        found = self._resolved.get(patient_ref)
        if found is None and patient_ref in self.rows:
            found = self._resolved[patient_ref] = self.resolve(*self.rows[patient_ref], records)
        return found

    # -- their lab results -------------------------------------------------------------------------------------

    def reverse(self, observation: dict[str, Any], subject: Subject) -> PulledLab | UnmappedResult:
        """The row of ``observation``, a result of ``subject``, or the reason it is set aside."""
        return reverse_map(
            observation,
            subject_id=subject.subject_id,
            by_code=self.by_code,
            catalogue=self.catalogue,
            study=self.study,
            anchor=subject.anchor,
            window=self.window,
            rules=self.rules,
            end=subject.end,
        )

    def labs(
        self, observations: Iterable[dict[str, Any]], records: DayZeroRecords
    ) -> Iterator[PulledLab | UnmappedResult]:
        """Each of ``observations`` (resources at hand) that is a lab result of an enrolled subject, once, as a
        row or set aside; a result of a Patient who is no enrolled subject is only counted (``others``)."""
        seen: set[str] = set()
        for observation in observations:
            if observation.get("resourceType") != "Observation":
                continue
            subject = self.subject(patient_of(observation), records)
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


class AtHand:
    """Day 0's Procedures and Encounters among resources at hand (an export's files, NDJSON), indexed once."""

    def __init__(
        self, subjects: Subjects, procedures: Iterable[dict[str, Any]], encounters: Iterable[dict[str, Any]]
    ) -> None:
        infusion = subjects.infusion
        self._infusions: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        if infusion is not None:
            for procedure in procedures:
                codings = (procedure.get("code") or {}).get("coding") or []
                if any(c.get("system") == infusion["system"] and c.get("code") == infusion["code"] for c in codings):
                    reference = (procedure.get("subject") or procedure.get("patient") or {}).get("reference", "")
                    self._infusions[f"Patient/{location_id(str(reference), 'Patient')}"].append(procedure)
        self._baseline: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        for encounter in encounters:
            for identifier in encounter.get("identifier", []):
                value = str(identifier.get("value", ""))
                if identifier.get("system") in subjects.visit_systems and value.endswith("/BL"):
                    self._baseline[value].append(encounter)

    def infusions(self, patient_ref: str) -> Iterable[dict[str, Any]]:
        return self._infusions.get(patient_ref, ())

    def baseline(self, subject_id: str) -> Iterable[dict[str, Any]]:
        return self._baseline.get(f"{subject_id}/BL", ())


class OnServer:
    """Day 0's Procedures and Encounters by search, subject by subject; a type the server cannot search gives none."""

    def __init__(self, subjects: Subjects, client: FhirClient, caps: Capabilities, state: PassState) -> None:
        self.subjects = subjects
        self.client = client
        self.caps = caps
        self.state = state  # the fallbacks of a Procedure search are noted here

    def infusions(self, patient_ref: str) -> Iterable[dict[str, Any]]:
        """A search by patient and the study's infusion code."""
        coding = self.subjects.infusion
        if coding is None or not self.caps.offers("Procedure", "search-type"):
            return ()
        param = next((name for name in ("patient", "subject") if self.caps.searches("Procedure", name)), "patient")
        code = f"{coding['system']}|{coding['code']}"
        search = Search("Procedure").where(self.caps, **{param: patient_ref}, code=code)
        self.state.note(search)
        return search.fetch(self.client)

    def baseline(self, subject_id: str) -> Iterable[dict[str, Any]]:
        """A search by the BL visit's identifier."""
        if not self.caps.offers("Encounter", "search-type"):
            return ()
        wanted = ",".join(f"{system}|{subject_id}/BL".replace(",", r"\,") for system in self.subjects.visit_systems)
        search = Search("Encounter").where(self.caps, identifier=wanted)
        return search.fetch(self.client)


def subject_row(
    research_subject: dict[str, Any], *, subject_systems: tuple[str, ...], state_system: str
) -> SubjectRow | None:
    """The subject's Patient, id (under the first of ``subject_systems`` it carries) and status; None when it
    names no Patient (a subject we cannot pull)."""
    reference = research_subject.get("individual", research_subject.get("subject", {})).get("reference", "")
    patient_id = location_id(str(reference), "Patient")
    if not patient_id:
        return None
    values = {i.get("system"): i.get("value") for i in research_subject.get("identifier", []) if i.get("value")}
    subject_id = next((values[s] for s in subject_systems if s in values), research_subject.get("id", ""))
    return SubjectRow(f"Patient/{patient_id}", str(subject_id), subject_state(research_subject, state_system))


def subject_state(research_subject: dict[str, Any], state_system: str) -> str | None:
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


def infusion_start(procedures: Iterable[dict[str, Any]]) -> date | None:
    """The day the earliest completed Procedure among ``procedures`` started (R4 performed*, R5 occurrence*).

    ``procedures`` are the subject's MSC infusion Procedures (the study's ``infusion_code``), as a search by
    patient and code brings them; others are the caller's to leave out.
    """
    starts = []
    for procedure in procedures:
        if procedure.get("status") != "completed":
            continue
        for key in ("performedDateTime", "occurrenceDateTime"):
            if procedure.get(key):
                starts.append(str(procedure[key])[:10])
        for key in ("performedPeriod", "occurrencePeriod"):
            if (procedure.get(key) or {}).get("start"):
                starts.append(str(procedure[key]["start"])[:10])
    return date.fromisoformat(min(starts)) if starts else None


def encounter_start(encounters: Iterable[dict[str, Any]]) -> date | None:
    """The start of the first of the subject's BL Encounters that has one (R4 period, R5 actualPeriod)."""
    for encounter in encounters:
        period = encounter.get("period") or encounter.get("actualPeriod") or {}
        if period.get("start"):
            return date.fromisoformat(str(period["start"])[:10])
    return None


def period_end(research_subject: dict[str, Any]) -> date | None:
    """The end of the ResearchSubject's period: the end of participation (leaving the study, or death)."""
    end = (research_subject.get("period") or {}).get("end")
    try:
        return date.fromisoformat(str(end)[:10]) if end else None
    except ValueError:
        return None  # a period end we cannot read ends nothing: the result keeps its visit


def period_start(research_subject: dict[str, Any]) -> date | None:
    """The start of the ResearchSubject's period: day 0 when neither an infusion nor a BL visit is known."""
    start = (research_subject.get("period") or {}).get("start")
    return date.fromisoformat(str(start)[:10]) if start else None


def _later(first: str, second: str) -> bool:
    one, two = parse_instant(first), parse_instant(second)
    return bool(one and two and one > two)
