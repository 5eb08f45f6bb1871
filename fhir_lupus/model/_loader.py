"""Read a trial data directory (docs/csv-layout.md) into checked, located records.

Three passes, each of which refuses rows rather than stopping: (1) every row against its entity model,
(2) uniqueness of business keys, (3) references between files and the terminology (a visit's subject, a
lab's analyte, unit and LOINC code, a SLEDAI total), the subject's timeline (fhir_lupus/model/_timeline.py:
nothing dated after the end of participation or in the future) and the edit checks of mappings/checks/
(fhir_lupus/model/_edit_checks.py: impossible values refused, implausible ones queried). A refused row keeps its
file, line, column and reason; rows that depend on a refused row are refused too, naming it. Nothing is dropped
without a reject. A file-level problem (a header with a missing or unknown column, a byte that is not UTF-8) is
an InputError naming the file and line (fhir_lupus/model/_csv.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from fhir_lupus.errors import InputError, TerminologyError, UnitError
from fhir_lupus.model._adverse_events import ADVERSE_EVENTS, AdverseEventRow, CheckedAdverseEvent, check_adverse_events
from fhir_lupus.model._check_rules import load_check_rules, load_input_rules, load_lab_limits
from fhir_lupus.model._csv import number_problem
from fhir_lupus.model._edit_checks import Flags, LabChecks, sledai_jumps, visit_windows
from fhir_lupus.model._entities import (
    LabResult,
    SledaiAssessment,
    StatusChange,
    Subject,
    TreatmentProcedure,
    TregMeasurement,
    Visit,
)
from fhir_lupus.model._history import MedicationHistory, ScreeningRecord
from fhir_lupus.model._history_checks import HistoryChecks, check_history
from fhir_lupus.model._lifecycle import STATUS_HISTORY, LifecycleRules, check_status_history, load_lifecycle_rules
from fhir_lupus.model._reading import KeyDigests, RowReader, subject_chunks
from fhir_lupus.model._records import LoadReport, Located
from fhir_lupus.model._schedule import evaluate_schedule, schedule_findings
from fhir_lupus.model._scoring import AssessmentScorer, CheckedLab, ScoredAssessment
from fhir_lupus.model._study import StudyDefinition, load_study
from fhir_lupus.model._timeline import DateChecks, SubjectTimeline, resolve_timelines, with_infusions
from fhir_lupus.scoring import SledaiDefinition, load_sledai_definition
from fhir_lupus.terminology import LabCatalogue, MappingPack, load_adverse_event_terms, load_pack, parse_lab_value

__all__ = [
    "CHUNK_ROWS",
    "CheckedLab",
    "ScoredAssessment",
    "TrialData",
    "load_trial",
    "load_trial_chunks",
    "read_study_id",
]

M = TypeVar("M", bound=BaseModel)

SUBJECTS, VISITS, LABS, SLEDAI, TREG, PROCEDURES = (
    "subjects.csv",
    "visits.csv",
    "labs.csv",
    "sledai.csv",
    "treg.csv",
    "procedures.csv",
)


_COLUMNS = ("value", "unit", "method", "specimen")  # lab columns a TerminologyError may blame


@dataclass
class TrialData:
    """Everything accepted from one data directory, each record with its source location."""

    study: StudyDefinition
    subjects: list[Located[Subject]]
    visits: list[Located[Visit]]
    labs: list[Located[CheckedLab]]
    sledai: list[Located[ScoredAssessment]]
    treg: list[Located[TregMeasurement]]
    procedures: list[Located[TreatmentProcedure]]
    # status_history.csv, per subject, in order (mappings/fhir/lifecycle.yaml); a subject without one: absent
    status_history: dict[str, tuple[StatusChange, ...]] = field(default_factory=dict)
    adverse_events: list[Located[CheckedAdverseEvent]] = field(default_factory=list)
    # screening.csv (enrolled and non-enrolled candidates) and medications.csv (their prior regimens)
    screening: list[Located[ScreeningRecord]] = field(default_factory=list)
    medications: list[Located[MedicationHistory]] = field(default_factory=list)
    # each subject's participation: enrolment, infusion, leaving, death (fhir_lupus/model/_timeline.py)
    timelines: dict[str, SubjectTimeline] = field(default_factory=dict)
    # (file, line) of lab, Treg and SLEDAI-2K rows dated outside their visit's window (a query): `schedule` does
    # not count them as measured at that visit
    outside_visit: frozenset[tuple[str, int]] = frozenset()
    # files absent ("missing") or without rows ("empty"): what depends on them is unknown
    absent: dict[str, str] = field(default_factory=dict)


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
    mappings_dir: Path | None = None,
    today: date | None = None,
) -> tuple[TrialData, LoadReport]:
    """Load and check a data directory. Refused rows are in the report, never raised. ``today`` is the day
    after which no date may be (default: the machine's date)."""
    if not data_dir.is_dir():
        raise InputError(str(data_dir), 0, None, "not a directory")
    pack = load_pack(mappings_dir)
    study = study or load_study(read_study_id(data_dir), mappings_dir)
    report = LoadReport()
    checker = _Checker(data_dir, study, pack, load_sledai_definition(mappings_dir), report, today=today)
    return checker.run(), report


# Rows a chunk of subjects holds at most (unless one subject has more): about 4 times the example trial, so
# it loads as one chunk, and a chunk's entities take some 150 MB (about 3 KB a row, measured).
CHUNK_ROWS = 40_000


def load_trial_chunks(
    data_dir: Path,
    report: LoadReport,
    *,
    max_rows: int = CHUNK_ROWS,
    study: StudyDefinition | None = None,
    mappings_dir: Path | None = None,
    today: date | None = None,
) -> Iterator[TrialData]:
    """Load a data directory a few subjects at a time, so memory holds one chunk's entities, not the trial's.

    The subjects of subjects.csv, in its order, are cut into chunks of at most ``max_rows`` rows over all files
    (counted in a first, cheap pass over the raw cells); each chunk is loaded and checked as ``load_trial``
    checks the whole directory, with the rows of its subjects only. Rows whose subject is in no chunk (unknown
    subjects, screening candidates who did not enrol) go with the last chunk. Every row is read, counted and
    refused (into ``report``) once. Business keys without the subject in them (result ids, ...) are kept as
    64-bit digests across chunks, so a duplicate in a later chunk is still refused, naming the first line.
    Differences from ``load_trial``, only when there are several chunks: rejects and findings come chunk by
    chunk, and a key repeated across chunks counts as first where its chunk comes first.
    """
    if not data_dir.is_dir():
        raise InputError(str(data_dir), 0, None, "not a directory")
    pack = load_pack(mappings_dir)
    study = study or load_study(read_study_id(data_dir), mappings_dir)
    sledai = load_sledai_definition(mappings_dir)
    chunks = subject_chunks(data_dir, max_rows)
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
        self.rules = load_check_rules(pack.root)
        self.flags = Flags(self.rules, report)
        # the date rules (fhir_lupus/model/_timeline.py): "not in the future" at once, the timelines once resolved
        self.dates = DateChecks({}, self.flags, today or date.today())
        self.refused_subjects: dict[str, int] = {}
        self.refused_visits: dict[tuple[str, str], int] = {}
        molar_masses = {key: analyte.molar_mass for key, analyte in pack.labs.analytes.items()}
        self.lab_checks = LabChecks(load_lab_limits(pack.root), self.catalogue.units, self.flags, molar_masses)
        # passes 1 and 2 (rows against models, keys unique); ``keep`` and ``keys`` for load_trial_chunks
        reader = RowReader(data_dir, report, self.flags, load_input_rules(pack.root), keep=keep, keys=keys)
        self._read = reader.read

    def run(self) -> TrialData:
        root = self.catalogue.pack.root
        subjects = self._subjects(self._read(SUBJECTS, Subject, ("subject_id",)))
        procedures = [
            row
            for row in self._read(PROCEDURES, TreatmentProcedure, ("procedure_id",))
            if self._subject_ok(row, row.record.subject_id, subjects)
        ]
        lifecycle = load_lifecycle_rules(root)
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
        terms = load_adverse_event_terms(root)
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
        procedures = self._procedures(procedures, dates)
        timelines = with_infusions(timelines, procedures)
        dates.timelines = timelines
        adverse_events = self._events(events, procedures, dates)
        visits = self._visits(self._read(VISITS, Visit, ("subject_id", "visit_code")), subjects, dates)
        schedule_at = len(self.report.findings)
        visit_keys = {(v.record.subject_id, v.record.visit_code): v for v in visits}
        labs = self._labs(self._read(LABS, LabResult, ("result_id",)), subjects, visit_keys, dates)
        treg = [
            row
            for row in self._read(TREG, TregMeasurement, ("measurement_id",))
            if self._belongs(row, row.record.subject_id, row.record.visit_code, subjects, visit_keys)
            and not dates.dated(row, row.record.subject_id, row.record.measured_at.date(), "measured_at", "Treg")
        ]
        sledai = self._sledai(
            self._read(SLEDAI, SledaiAssessment, ("subject_id", "visit_code")), subjects, visit_keys, labs, dates
        )
        # The schedule is checked once the procedures are in (the anchor may be the MSC infusion); its findings
        # go where the visits pass left off, so the report keeps file order. Its day 0 also places the labs.
        schedules = evaluate_schedule(
            self.study, (row.record for row in subjects.values()), visits, procedures, timelines=timelines
        )
        self.report.findings[schedule_at:schedule_at] = schedule_findings(self.study, schedules)
        anchors = {schedule.subject_id: schedule.anchor for schedule in schedules if schedule.anchor is not None}
        outside = self._visit_windows(anchors, visits, labs, treg, sledai)
        screening, medications = check_history(
            self._read,
            self.report,
            subjects,
            self.catalogue.units,
            root,
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
        lifecycle = load_lifecycle_rules(self.catalogue.pack.root)
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

    def _visit_windows(
        self,
        anchors: dict[str, date],
        visits: list[Located[Visit]],
        labs: list[Located[CheckedLab]],
        treg: list[Located[TregMeasurement]],
        sledai: list[Located[ScoredAssessment]],
    ) -> set[tuple[str, int]]:
        """Labs, Treg and SLEDAI-2K rows dated away from their visit (edit_checks.visit_windows); ``anchors``:
        each subject's day 0 as the schedule counts it."""
        held = {(v.record.subject_id, v.record.visit_code): v.record.visit_date for v in visits}
        rows: list[tuple[Located[Any], str, str, date, str]] = []
        rows += [
            (r, r.record.lab.subject_id, r.record.lab.visit_code, r.record.lab.collected_at.date(), "collected_at")
            for r in labs
        ]
        rows += [
            (r, r.record.subject_id, r.record.visit_code, r.record.measured_at.date(), "measured_at") for r in treg
        ]
        rows += [
            (
                r,
                r.record.assessment.subject_id,
                r.record.assessment.visit_code,
                r.record.assessment.assessed_on,
                "assessed_on",
            )
            for r in sledai
        ]
        return visit_windows(self.study, anchors, held, rows, self.flags)

    def _labs(
        self,
        rows: list[Located[LabResult]],
        subjects: dict[str, Located[Subject]],
        visits: dict[tuple[str, str], Located[Visit]],
        dates: DateChecks,
    ) -> list[Located[CheckedLab]]:
        accepted = []
        ordinals = self.catalogue.pack.ordinals
        for row in rows:
            lab = row.record
            if not self._belongs(row, lab.subject_id, lab.visit_code, subjects, visits):
                continue
            if lab.analyte not in self.catalogue.pack.labs.analytes:
                self.report.reject(row, "analyte", f"analyte {lab.analyte!r} is not in the lab catalogue")
                continue
            try:
                value = parse_lab_value(lab.value, ordinals)
            except ValueError as exc:
                self.report.reject(row, "value", str(exc))
                continue
            if value.number is not None and (problem := number_problem(value.number, lab.value)):
                self.report.reject(row, "value", problem)
                continue
            if value.kind != "quantity" and (lab.ref_low is not None or lab.ref_high is not None):
                self.report.reject(row, "ref_low", f"a reference range needs a numeric result, not a {value.kind}")
                continue
            try:
                resolved = self.catalogue.resolve(lab.analyte, value, lab.unit, lab.method, lab.specimen)
            except UnitError as exc:
                self.report.reject(row, "unit", str(exc))
                continue
            except TerminologyError as exc:
                fallback = "method" if lab.method else "unit" if lab.unit else "value"
                self.report.reject(row, exc.field if exc.field in _COLUMNS else fallback, str(exc))
                continue
            if dates.dated(row, lab.subject_id, lab.collected_at.date(), "collected_at", f"{lab.analyte} result"):
                continue
            if self.lab_checks.check(
                row,
                lab.analyte,
                resolved.ucum,
                value.number,
                lab.ref_low,
                lab.ref_high,
                subject_id=lab.subject_id,
                when=lab.collected_at,
                comparator=value.comparator,
            ):
                continue
            accepted.append(Located(CheckedLab(lab, value, resolved), row.file, row.line, row.row))
        return accepted

    def _sledai(
        self,
        rows: list[Located[SledaiAssessment]],
        subjects: dict[str, Located[Subject]],
        visits: dict[tuple[str, str], Located[Visit]],
        labs: list[Located[CheckedLab]],
        dates: DateChecks,
    ) -> list[Located[ScoredAssessment]]:
        scorer = AssessmentScorer(self.sledai, self.catalogue, self.flags, self.report, labs, set(subjects))
        accepted = []
        known = {d.key for d in self.sledai.descriptors}
        for row in rows:
            assessment = row.record
            if not self._belongs(row, assessment.subject_id, assessment.visit_code, subjects, visits):
                continue
            for column, keys in (
                ("descriptors", assessment.descriptors),
                ("not_attributed", tuple(assessment.not_attribution_causes)),
            ):
                unknown = [key for key in keys if key not in known]
                if unknown:
                    self.report.reject(row, column, f"unknown SLEDAI-2K descriptor(s): {', '.join(unknown)}")
                    break
            else:
                if dates.dated(row, assessment.subject_id, assessment.assessed_on, "assessed_on", "SLEDAI-2K"):
                    continue
                scored = scorer.score(row)
                if scored is not None:
                    accepted.append(scored)
        return accepted

    def _procedures(
        self, rows: list[Located[TreatmentProcedure]], dates: DateChecks
    ) -> list[Located[TreatmentProcedure]]:
        accepted = [
            row
            for row in rows
            if not dates.dated(
                row,
                row.record.subject_id,
                row.record.started_at.date(),
                "started_at",
                row.record.kind,
                from_enrolment=True,
            )
        ]
        window = self.study.protocol.pretreatment_to_infusion_hours
        by_subject: dict[str, list[Located[TreatmentProcedure]]] = defaultdict(list)
        for row in accepted:
            by_subject[row.record.subject_id].append(row)
        for subject_id, procedures in sorted(by_subject.items()):
            pretreatments = [
                p
                for p in procedures
                if p.record.kind == "cyclophosphamide_pretreatment" and p.record.status == "completed"
            ]
            for infusion in (
                p for p in procedures if p.record.kind == "msc_infusion" and p.record.status == "completed"
            ):
                started = infusion.record.started_at
                before = [p for p in pretreatments if p.record.started_at <= started]
                if not before:
                    self.flags.raise_(
                        "protocol-deviation",
                        infusion,
                        "started_at",
                        f"{subject_id}: MSC infusion without a prior cyclophosphamide pretreatment",
                    )
                    continue
                latest = max(before, key=lambda p: p.record.started_at)
                hours = (started - latest.record.started_at).total_seconds() / 3600
                if not window.min <= hours <= window.max:
                    self.flags.raise_(
                        "protocol-deviation",
                        infusion,
                        "started_at",
                        f"{subject_id}: MSC infusion {hours:.1f} h after the cyclophosphamide "
                        "pretreatment "
                        f"(line {latest.line}); protocol: {window.min:g}-{window.max:g} h",
                    )
        return accepted

    def _events(
        self,
        events: list[Located[CheckedAdverseEvent]],
        procedures: list[Located[TreatmentProcedure]],
        dates: DateChecks,
    ) -> list[Located[CheckedAdverseEvent]]:
        """The accepted events whose suspected treatments are still accepted, checked against the timeline."""
        given = {row.record.procedure_id for row in procedures}
        refused_lines = {
            r.row.get("procedure_id", "").strip(): r.line for r in self.report.rejects if r.file == PROCEDURES
        }
        accepted = []
        for row in events:
            event = row.record.event
            gone = [pid for _, pid in row.record.suspects if pid not in given]
            if gone:
                listed = ", ".join(f"{pid} ({PROCEDURES}:{refused_lines.get(pid, '?')})" for pid in gone)
                self.report.reject(row, "related_to", f"the suspected treatment {listed} was refused")
                continue
            if dates.adverse_event(Located(event, row.file, row.line, row.row)):
                continue
            accepted.append(row)
        return accepted
