"""Read a trial data directory (docs/csv-layout.md) into checked, located records.

Three passes, each of which refuses rows rather than stopping: (1) every row against its entity model,
(2) uniqueness of business keys, (3) references between files and the terminology (a visit's subject, a
lab's analyte, unit and LOINC code, a SLEDAI total), the subject's timeline (fhir_lupus/model/_timeline.py:
nothing dated after the end of participation or in the future) and the edit checks of mappings/checks/
(fhir_lupus/model/_edit_checks.py: impossible values refused, implausible ones queried). A refused row keeps its
file, line, column and reason; rows that depend on a refused row are refused too, naming it. Nothing is dropped
without a reject. A file-level problem (a header with a missing or unknown column, a byte that is not UTF-8) is
an InputError naming the file and line (fhir_lupus/model/_csv.py).

This module reads and checks the rows of each file and drives the steps that need several files, each a module of
its own, in an order the report depends on (findings come in that order): the treatment (``_treatment``:
procedures against the protocol, adverse events against them), lab rows coded (``_lab_rows``), SLEDAI-2K scored
from them (``_scoring``), the schedule's day 0 and the visit windows (``_windows``), the screening history.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

from fhir_lupus.errors import InputError
from fhir_lupus.model._adverse_events import ADVERSE_EVENTS, AdverseEventRow, check_adverse_events
from fhir_lupus.model._check_rules import load_check_rules, load_input_rules, load_lab_limits
from fhir_lupus.model._edit_checks import Flags, LabChecks, sledai_jumps
from fhir_lupus.model._entities import (
    LabResult,
    SledaiAssessment,
    StatusChange,
    Subject,
    TreatmentProcedure,
    TregMeasurement,
    Visit,
)
from fhir_lupus.model._history_checks import HistoryChecks, check_history
from fhir_lupus.model._lab_rows import check_labs
from fhir_lupus.model._lifecycle import STATUS_HISTORY, LifecycleRules, check_status_history, load_lifecycle_rules
from fhir_lupus.model._reading import KeyDigests, RowReader, subject_chunks
from fhir_lupus.model._records import LoadReport, Located
from fhir_lupus.model._scoring import AssessmentScorer, CheckedLab, ScoredAssessment, score_assessments
from fhir_lupus.model._study import StudyDefinition, load_study
from fhir_lupus.model._timeline import DateChecks, resolve_timelines, with_infusions
from fhir_lupus.model._treatment import check_procedures, events_on_timeline
from fhir_lupus.model._trial import LABS, PROCEDURES, SLEDAI, SUBJECTS, TREG, VISITS, TrialData
from fhir_lupus.model._windows import place_visits
from fhir_lupus.scoring import SledaiDefinition, load_sledai_definition
from fhir_lupus.terminology import LabCatalogue, MappingPack, load_adverse_event_terms, load_pack

__all__ = [
    "CHUNK_ROWS",
    "CheckedLab",
    "ScoredAssessment",
    "TrialData",
    "chunk_plan",
    "load_trial",
    "load_trial_chunks",
    "read_study_id",
]


def read_study_id(data_dir: Path) -> str:
    """The NCT id a data directory declares in trial.txt."""
    path = data_dir / "trial.txt"
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise InputError(str(path), 1, None, "missing: it names the study (one line, the NCT id)") from None


def load_trial(
    data_dir: Path,
    *,
    study: StudyDefinition | None = None,
    pack: MappingPack | None = None,
    today: date | None = None,
    report: LoadReport | None = None,
) -> tuple[TrialData, LoadReport]:
    """Load and check a data directory. Refused rows are in the report (a new one, or ``report``), never raised.
    ``today`` is the day after which no date may be (default: the machine's date); ``pack``: the mappings the
    rows are checked against (default: ``load_pack()``)."""
    if not data_dir.is_dir():
        raise InputError(str(data_dir), 0, None, "not a directory")
    pack = pack or load_pack()
    study = study or load_study(read_study_id(data_dir), pack)
    report = report if report is not None else LoadReport()
    checker = _Checker(data_dir, study, pack, load_sledai_definition(pack), report, today=today)
    return checker.run(), report


# Rows a chunk of subjects holds at most (unless one subject has more): about 4 times the example trial, so
# it loads as one chunk, and a chunk's entities take some 150 MB (about 3 KB a row, measured).
CHUNK_ROWS = 40_000


def chunk_plan(data_dir: Path, max_rows: int | None = None) -> list[list[str]]:
    """The subject ids of each chunk ``load_trial_chunks`` loads (``max_rows``, default ``CHUNK_ROWS`` read when
    called), from a cheap pass over the raw cells: a caller that knows how many chunks come can plan for them."""
    return subject_chunks(data_dir, max_rows or CHUNK_ROWS)


def load_trial_chunks(
    data_dir: Path,
    report: LoadReport,
    *,
    max_rows: int | None = None,
    plan: list[list[str]] | None = None,
    study: StudyDefinition | None = None,
    pack: MappingPack | None = None,
    today: date | None = None,
) -> Iterator[TrialData]:
    """Load a data directory a few subjects at a time, so memory holds one chunk's entities, not the trial's.

    The subjects of subjects.csv, in its order, are cut into chunks of at most ``max_rows`` rows over all files
    (counted in a first, cheap pass over the raw cells: ``chunk_plan``, or ``plan`` when the caller made it);
    each chunk is loaded and checked as ``load_trial`` checks the whole directory, with the rows of its subjects
    only. Rows whose subject is in no chunk (unknown subjects, screening candidates who did not enrol) go with the
    last chunk. Every row is read, counted and refused (into ``report``) once. Business keys without the subject
    in them (result ids, ...) are kept as 64-bit digests across chunks, so a duplicate in a later chunk is still
    refused, naming the first line. Differences from ``load_trial``, only when there are several chunks: rejects
    and findings come chunk by chunk, and a key repeated across chunks counts as first where its chunk comes first.
    """
    if not data_dir.is_dir():
        raise InputError(str(data_dir), 0, None, "not a directory")
    pack = pack or load_pack()
    study = study or load_study(read_study_id(data_dir), pack)
    sledai = load_sledai_definition(pack)
    chunks = plan if plan is not None else chunk_plan(data_dir, max_rows)
    everyone = {subject for chunk in chunks for subject in chunk}
    keys = KeyDigests()
    for number, chunk in enumerate(chunks):
        last = number == len(chunks) - 1
        members = frozenset(chunk)

        def keep(row: dict[str, str], members: frozenset[str] = members, last: bool = last) -> bool:
            subject = row.get("subject_id", "").strip()
            return subject in members or (last and subject not in everyone)

        yield _Checker(data_dir, study, pack, sledai, report, keep=keep, keys=keys, today=today).run()


class _Checker:
    def __init__(
        self,
        data_dir: Path,
        study: StudyDefinition,
        pack: MappingPack,
        sledai: SledaiDefinition,
        report: LoadReport,
        *,
        keep: Callable[[dict[str, str]], bool] | None = None,
        keys: KeyDigests | None = None,
        today: date | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.study = study
        self.catalogue = LabCatalogue(pack)
        self.sledai = sledai
        self.report = report
        self.schedule = {visit.code: visit for visit in study.visits()}
        self.rules = load_check_rules(pack)
        self.flags = Flags(self.rules, report)
        # the date rules (fhir_lupus/model/_timeline.py): "not in the future" at once, the timelines once resolved
        self.dates = DateChecks({}, self.flags, today or date.today())
        self.refused_subjects: dict[str, int] = {}
        self.refused_visits: dict[tuple[str, str], int] = {}
        molar_masses = {key: analyte.molar_mass for key, analyte in pack.labs.analytes.items()}
        self.lab_checks = LabChecks(load_lab_limits(pack), self.catalogue.units, self.flags, molar_masses)
        # passes 1 and 2 (rows against models, keys unique); ``keep`` and ``keys`` for load_trial_chunks
        reader = RowReader(data_dir, report, self.flags, load_input_rules(pack), keep=keep, keys=keys)
        self._read = reader.read

    def run(self) -> TrialData:
        pack = self.catalogue.pack
        subjects = self._subjects(self._read(SUBJECTS, Subject, ("subject_id",)))
        procedures = [
            row
            for row in self._read(PROCEDURES, TreatmentProcedure, ("procedure_id",))
            if self._subject_ok(row, row.record.subject_id, subjects)
        ]
        lifecycle = load_lifecycle_rules(pack)
        histories = check_status_history(
            [
                row
                for row in self._read(STATUS_HISTORY, StatusChange, ("subject_id", "status", "on"))
                if self._subject_ok(row, row.record.subject_id, subjects)
                and not self._history_row_refused(row, lifecycle)
            ],
            subjects,
            procedures,
            lifecycle,
            self.report,
        )
        terms = load_adverse_event_terms(pack)
        events = check_adverse_events(
            [
                row
                for row in self._read(ADVERSE_EVENTS, AdverseEventRow, ("event_id",))
                if self._subject_ok(row, row.record.subject_id, subjects)
            ],
            subjects,
            procedures,
            terms,
            self.report,
        )
        # the subject's timeline: enrolment, leaving, death (fhir_lupus/model/_timeline.py); every dated row below
        # is checked against it
        timelines = resolve_timelines(
            subjects,
            histories,
            [Located(e.record.event, e.file, e.line, e.row) for e in events],
            lifecycle,
            self.flags,
            events_recorded=self.report.holds(ADVERSE_EVENTS),
        )
        dates = self.dates
        dates.timelines = timelines
        procedures = check_procedures(procedures, self.study, dates, self.flags)
        timelines = with_infusions(timelines, procedures)
        dates.timelines = timelines
        adverse_events = events_on_timeline(events, procedures, dates, self.report)
        visits = self._visits(self._read(VISITS, Visit, ("subject_id", "visit_code")), subjects, dates)
        schedule_at = len(self.report.findings)
        visit_keys = {(v.record.subject_id, v.record.visit_code): v for v in visits}

        def belongs(row: Located[Any], subject_id: str, visit_code: str) -> bool:
            return self._belongs(row, subject_id, visit_code, subjects, visit_keys)

        labs = check_labs(
            self._read(LABS, LabResult, ("result_id",)), belongs, self.catalogue, self.lab_checks, dates, self.report
        )
        treg = [
            row
            for row in self._read(TREG, TregMeasurement, ("measurement_id",))
            if belongs(row, row.record.subject_id, row.record.visit_code)
            and not dates.dated(row, row.record.subject_id, row.record.measured_at.date(), "measured_at", "Treg")
        ]
        assessments = self._read(SLEDAI, SledaiAssessment, ("subject_id", "visit_code"))
        scorer = AssessmentScorer(self.sledai, self.catalogue, self.flags, self.report, labs, set(subjects))
        sledai = score_assessments(assessments, belongs, scorer, self.sledai, dates)
        # the schedule, once the procedures are in (day 0 may be the MSC infusion); its day 0 places the labs
        outside = place_visits(
            self.study,
            (row.record for row in subjects.values()),
            visits,
            procedures,
            timelines,
            (labs, treg, sledai),
            self.flags,
            findings_at=schedule_at,
        )
        screening, medications = check_history(
            self._read,
            self.report,
            subjects,
            self.catalogue.units,
            pack,
            HistoryChecks(self.rules, self.flags, self.lab_checks, dates),
        )
        self.lab_checks.deltas(self.rules.lab_delta.ratio, self._kept(LABS))
        sledai_jumps(
            self.rules,
            (
                (row, row.record.assessment.subject_id, row.record.assessment.assessed_on, row.record.score.total)
                for row in sledai
            ),
            self.flags,
        )
        return TrialData(
            self.study,
            list(subjects.values()),
            visits,
            labs,
            sledai,
            treg,
            procedures,
            adverse_events=adverse_events,
            status_history={sid: tuple(row.record for row in rows) for sid, rows in histories.items()},
            screening=screening,
            medications=medications,
            timelines=timelines,
            outside_visit=frozenset(outside),
            absent=dict(self.report.absent),
        )

    def _kept(self, file: str) -> Callable[[Located[Any]], bool]:
        """Whether a row of ``file`` is still accepted (no reject names its line)."""
        refused = {r.line for r in self.report.rejects if r.file == file}
        return lambda row: row.line not in refused

    # -- pass 3: references, terminology, dates and values -----------------------------------------------

    def _subjects(self, rows: list[Located[Subject]]) -> dict[str, Located[Subject]]:
        subjects = {}
        lifecycle = load_lifecycle_rules(self.catalogue.pack)
        for row in rows:
            subject = row.record
            if subject.arm not in {arm.name for arm in self.study.arms}:
                self.report.reject(row, "arm", f"arm {subject.arm!r} is not an arm of {self.study.nct_id}")
                continue
            code = subject.off_study_reason_code
            if code is not None and code not in lifecycle.off_study_reasons:
                known = ", ".join(lifecycle.off_study_reasons)
                self.report.reject(row, "off_study_reason_code", f"{code!r} is not one of {known} (lifecycle.yaml)")
                continue
            if code is not None and subject.off_study_on is None and subject.status not in lifecycle.left_study:
                self.report.reject(
                    row, "off_study_reason_code", f"a coded off-study reason for a subject who is {subject.status}"
                )
                continue
            refused = [
                self.dates.future(row, subject.enrolled_on, "enrolled_on"),
                self.dates.future(row, subject.off_study_on, "off_study_on"),
            ]
            if not any(refused):
                subjects[subject.subject_id] = row
        # refused subjects, found once: every row of theirs names the line (the first, as the report lists them)
        for reject in self.report.rejects:
            if reject.file == SUBJECTS:
                self.refused_subjects.setdefault(reject.row.get("subject_id", ""), reject.line)
        return subjects

    def _history_row_refused(self, row: Located[StatusChange], lifecycle: LifecycleRules) -> bool:
        change = row.record
        if change.reason_code is not None and change.reason_code not in lifecycle.off_study_reasons:
            known = ", ".join(lifecycle.off_study_reasons)
            self.report.reject(row, "reason_code", f"{change.reason_code!r} is not one of {known} (lifecycle.yaml)")
            return True
        return self.dates.future(row, change.on, "on")

    def _subject_ok(self, row: Located[Any], subject_id: str, subjects: dict[str, Located[Subject]]) -> bool:
        if subject_id in subjects:
            return True
        refused = self.refused_subjects.get(subject_id)
        reason = (
            f"subject {subject_id} was rejected ({SUBJECTS}:{refused})"
            if refused is not None
            else f"unknown subject {subject_id} (not in {SUBJECTS})"
        )
        self.report.reject(row, "subject_id", reason)
        return False

    def _belongs(
        self,
        row: Located[Any],
        subject_id: str,
        visit_code: str,
        subjects: dict[str, Located[Subject]],
        visits: dict[tuple[str, str], Located[Visit]],
    ) -> bool:
        if not self._subject_ok(row, subject_id, subjects):
            return False
        if (subject_id, visit_code) not in visits:
            refused = self.refused_visits.get((subject_id, visit_code))
            why = f"was refused ({VISITS}:{refused})" if refused is not None else f"is not in {VISITS}"
            self.report.reject(row, "visit_code", f"visit {visit_code} of {subject_id} {why}")
            return False
        return True

    def _visits(
        self, rows: list[Located[Visit]], subjects: dict[str, Located[Subject]], dates: DateChecks
    ) -> list[Located[Visit]]:
        accepted = []
        for row in rows:
            visit = row.record
            if not self._subject_ok(row, visit.subject_id, subjects):
                continue
            if visit.visit_code not in self.schedule:
                self.report.reject(row, "visit_code", f"{visit.visit_code!r} is not a visit of the protocol schedule")
                continue
            if dates.dated(row, visit.subject_id, visit.visit_date, "visit_date", "visit", from_enrolment=True):
                continue
            accepted.append(row)
        for reject in self.report.rejects:  # found once: a lab of a refused visit names its line
            if reject.file == VISITS:
                key = (reject.row.get("subject_id", "").strip(), reject.row.get("visit_code", "").strip())
                self.refused_visits.setdefault(key, reject.line)
        return accepted
