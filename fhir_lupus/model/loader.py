"""Read a trial data directory (docs/csv-layout.md) into checked, located records.

Three passes, each of which refuses rows rather than stopping: (1) every row against its entity model,
(2) uniqueness of business keys, (3) references between files and the terminology (a visit's subject, a
lab's analyte, unit and LOINC code, a SLEDAI total). A refused row keeps its file, line, column and reason;
rows that depend on a refused row are refused too, naming it. Nothing is dropped without a reject.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from fhir_lupus.errors import InputError, TerminologyError, UnitError
from fhir_lupus.model._history_checks import check_history
from fhir_lupus.model._records import Finding, LoadReport, Located
from fhir_lupus.model.adverse_events import ADVERSE_EVENTS, AdverseEventRow, CheckedAdverseEvent, check_adverse_events
from fhir_lupus.model.entities import (
    LabResult,
    SledaiAssessment,
    StatusChange,
    Subject,
    TreatmentProcedure,
    TregMeasurement,
    Visit,
)
from fhir_lupus.model.history import MedicationHistory, ScreeningRecord
from fhir_lupus.model.lifecycle import STATUS_HISTORY, check_status_history, load_lifecycle_rules
from fhir_lupus.model.schedule import evaluate_schedule, schedule_findings
from fhir_lupus.model.study import StudyDefinition, load_study
from fhir_lupus.scoring.sledai import (
    LabEvidence,
    SledaiDefinition,
    SledaiScore,
    load_sledai_definition,
    score_sledai,
)
from fhir_lupus.terminology import MappingPack, load_pack
from fhir_lupus.terminology.adverse_events import load_adverse_event_terms
from fhir_lupus.terminology.catalogue import LabCatalogue, LabValue, ResolvedLab, parse_lab_value

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


@dataclass(frozen=True)
class CheckedLab:
    """A lab row with its value read and its LOINC code chosen, done once at load time."""

    lab: LabResult
    value: LabValue
    resolved: ResolvedLab


@dataclass(frozen=True)
class ScoredAssessment:
    assessment: SledaiAssessment
    score: SledaiScore


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
) -> tuple[TrialData, LoadReport]:
    """Load and check a data directory. Refused rows are in the report, never raised."""
    if not data_dir.is_dir():
        raise InputError(str(data_dir), 0, None, "not a directory")
    pack = load_pack(mappings_dir)
    study = study or load_study(read_study_id(data_dir), mappings_dir)
    report = LoadReport()
    checker = _Checker(data_dir, study, pack, load_sledai_definition(mappings_dir), report)
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
    chunks = _subject_chunks(data_dir, max_rows)
    everyone = {subject for chunk in chunks for subject in chunk}
    keys = _KeyDigests()
    for number, chunk in enumerate(chunks):
        last = number == len(chunks) - 1
        members = frozenset(chunk)

        def keep(row: dict[str, str], members: frozenset[str] = members, last: bool = last) -> bool:
            subject = row.get("subject_id", "").strip()
            return subject in members or (last and subject not in everyone)

        yield _Checker(data_dir, study, pack, sledai, report, keep=keep, keys=keys).run()


def _subject_chunks(data_dir: Path, max_rows: int) -> list[list[str]]:
    """subjects.csv's subject ids, in order, cut where a chunk would pass ``max_rows`` rows over all files."""
    rows: Counter[str] = Counter()
    order: dict[str, None] = {}  # subjects.csv's ids in order, once each
    for path in sorted(data_dir.glob("*.csv")):
        try:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                for record in csv.DictReader(handle):
                    subject = (record.get("subject_id") or "").strip()
                    rows[subject] += 1
                    if path.name == SUBJECTS:
                        order.setdefault(subject)
        except (OSError, csv.Error, UnicodeDecodeError):
            continue  # the checking pass reports the file, naming it and the line
    chunks: list[list[str]] = [[]]
    size = 0
    for subject in order:
        if chunks[-1] and size + rows[subject] > max_rows:
            chunks.append([])
            size = 0
        chunks[-1].append(subject)
        size += rows[subject]
    return chunks


class _KeyDigests:
    """Per file, a 64-bit digest of each business key seen -> its line: duplicates across chunks, compactly."""

    def __init__(self) -> None:
        self._seen: dict[str, dict[int, int]] = defaultdict(dict)

    def first(self, file: str, key: tuple[Any, ...], line: int) -> int | None:
        """The line where ``key`` was first seen in ``file``, or None (and it is remembered at ``line``)."""
        digest = int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=8).digest(), "big")
        seen = self._seen[file]
        if digest in seen:
            return seen[digest]
        seen[digest] = line
        return None


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
        keys: _KeyDigests | None = None,
    ) -> None:
        self.keep = keep  # only the rows of one chunk's subjects (load_trial_chunks); None: every row
        self.keys = keys  # keys seen by earlier chunks (load_trial_chunks)
        self.data_dir = data_dir
        self.study = study
        self.catalogue = LabCatalogue(pack)
        self.sledai = sledai
        self.report = report
        self.schedule = {visit.code: visit for visit in study.visits()}

    def run(self) -> TrialData:
        subjects = self._subjects(self._read(SUBJECTS, Subject, ("subject_id",), required=True))
        visits = self._visits(self._read(VISITS, Visit, ("subject_id", "visit_code")), subjects)
        schedule_at = len(self.report.findings)
        visit_keys = {(v.record.subject_id, v.record.visit_code): v for v in visits}
        labs = self._labs(self._read(LABS, LabResult, ("result_id",)), subjects, visit_keys)
        sledai = self._sledai(
            self._read(SLEDAI, SledaiAssessment, ("subject_id", "visit_code")), subjects, visit_keys, labs
        )
        treg = [
            row
            for row in self._read(TREG, TregMeasurement, ("measurement_id",))
            if self._belongs(row, row.record.subject_id, row.record.visit_code, subjects, visit_keys)
        ]
        procedures = self._procedures(self._read(PROCEDURES, TreatmentProcedure, ("procedure_id",)), subjects)
        # The schedule is checked once the procedures are in (the anchor may be the MSC infusion); its findings
        # go where the visits pass left off, so the report keeps file order.
        self.report.findings[schedule_at:schedule_at] = self._schedule_findings(subjects, visits, procedures)
        status_history = check_status_history(
            [
                row
                for row in self._read(STATUS_HISTORY, StatusChange, ("subject_id", "status", "on"))
                if self._subject_ok(row, row.record.subject_id, subjects)
            ],
            subjects,
            procedures,
            load_lifecycle_rules(self.catalogue.pack.root),
            self.report,
        )
        adverse_events = check_adverse_events(
            [
                row
                for row in self._read(ADVERSE_EVENTS, AdverseEventRow, ("event_id",))
                if self._subject_ok(row, row.record.subject_id, subjects)
            ],
            subjects,
            procedures,
            load_adverse_event_terms(self.catalogue.pack.root),
            self.report,
        )
        screening, medications = check_history(
            self._read, self.report, subjects, self.catalogue.units, self.catalogue.pack.root
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
            status_history=status_history,
            screening=screening,
            medications=medications,
        )

    # -- pass 1 and 2: rows against models, keys unique ---------------------------------------------------

    def _read(self, name: str, model: type[M], key: tuple[str, ...], *, required: bool = False) -> list[Located[M]]:
        path = self.data_dir / name
        if not path.exists():
            if required:
                raise InputError(str(path), 0, None, "required file is missing")
            return []
        accepted: list[Located[M]] = []
        first_seen: dict[tuple[Any, ...], int] = {}
        across_chunks = self.keys is not None and "subject_id" not in key  # a subject's rows share its chunk
        for line, row, header_problem in _rows(path, model):
            if self.keep is not None and not self.keep(row):
                continue
            self.report.read[name] += 1
            if header_problem:
                self.report.reject((name, line, row), header_problem[0], header_problem[1])
                continue
            try:
                record = model.model_validate({k: v for k, v in row.items() if v.strip()})
            except ValidationError as exc:
                for error in exc.errors():
                    column = str(error["loc"][0]) if error["loc"] else None
                    message = error["msg"].removeprefix("Value error, ")
                    self.report.reject((name, line, row), column, message)
                continue
            business_key = tuple(getattr(record, field) for field in key)
            first = first_seen.get(business_key)
            if first is None and across_chunks and self.keys is not None:
                first = self.keys.first(name, business_key, line)
            if first is not None:
                self.report.reject(
                    (name, line, row),
                    key[-1],
                    f"duplicate {'/'.join(map(str, business_key))} (first at line {first})",
                )
                continue
            first_seen[business_key] = line
            accepted.append(Located(record, name, line, row))
        return accepted

    # -- pass 3: references and terminology ---------------------------------------------------------------

    def _subjects(self, rows: list[Located[Subject]]) -> dict[str, Located[Subject]]:
        subjects = {}
        for row in rows:
            if row.record.arm not in {arm.name for arm in self.study.arms}:
                self.report.reject(row, "arm", f"arm {row.record.arm!r} is not an arm of {self.study.nct_id}")
                continue
            subjects[row.record.subject_id] = row
        return subjects

    def _subject_ok(self, row: Located[Any], subject_id: str, subjects: dict[str, Located[Subject]]) -> bool:
        if subject_id in subjects:
            return True
        refused = [r for r in self.report.rejects if r.file == SUBJECTS and r.row.get("subject_id") == subject_id]
        reason = (
            f"subject {subject_id} was rejected ({SUBJECTS}:{refused[0].line})"
            if refused
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
            self.report.reject(row, "visit_code", f"no accepted visit {visit_code} for {subject_id} in {VISITS}")
            return False
        return True

    def _visits(self, rows: list[Located[Visit]], subjects: dict[str, Located[Subject]]) -> list[Located[Visit]]:
        accepted = []
        for row in rows:
            visit = row.record
            if not self._subject_ok(row, visit.subject_id, subjects):
                continue
            if visit.visit_code not in self.schedule:
                self.report.reject(row, "visit_code", f"{visit.visit_code!r} is not a visit of the protocol schedule")
                continue
            subject = subjects[visit.subject_id].record
            if visit.visit_date < subject.enrolled_on:
                self.report.reject(row, "visit_date", f"visit before enrolment ({subject.enrolled_on})")
                continue
            if subject.off_study_on and visit.visit_date > subject.off_study_on:
                self.report.reject(
                    row, "visit_date", f"visit after the subject left the study ({subject.off_study_on})"
                )
                continue
            accepted.append(row)
        return accepted

    def _schedule_findings(
        self,
        subjects: dict[str, Located[Subject]],
        visits: list[Located[Visit]],
        procedures: list[Located[TreatmentProcedure]],
    ) -> list[Finding]:
        """Visits outside their window, and protocol visits missed before the subject's last contact.

        The schedule logic is fhir_lupus/model/schedule.py (shared with ``fhir-lupus schedule``): months count
        from ``protocol.visit_months.anchor`` under its ``rule``; follow-ups after M24 are missed only when none
        happens within ``latest_after_previous_months`` (+ the window) of the previous visit.
        """
        schedules = evaluate_schedule(self.study, (row.record for row in subjects.values()), visits, procedures)
        return schedule_findings(self.study, schedules)

    def _labs(
        self,
        rows: list[Located[LabResult]],
        subjects: dict[str, Located[Subject]],
        visits: dict[tuple[str, str], Located[Visit]],
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
            accepted.append(Located(CheckedLab(lab, value, resolved), row.file, row.line, row.row))
        return accepted

    def _sledai(
        self,
        rows: list[Located[SledaiAssessment]],
        subjects: dict[str, Located[Subject]],
        visits: dict[tuple[str, str], Located[Visit]],
        labs: list[Located[CheckedLab]],
    ) -> list[Located[ScoredAssessment]]:
        evidence: dict[str, list[LabEvidence]] = defaultdict(list)
        for lab_row in labs:
            checked = lab_row.record
            evidence[checked.lab.subject_id].append(
                LabEvidence(
                    result_id=checked.lab.result_id,
                    analyte=checked.lab.analyte,
                    collected_at=checked.lab.collected_at,
                    value=checked.value,
                    ucum=checked.resolved.ucum,
                    ref_low=checked.lab.ref_low,
                    ref_high=checked.lab.ref_high,
                )
            )
        accepted = []
        for row in rows:
            assessment = row.record
            if not self._belongs(row, assessment.subject_id, assessment.visit_code, subjects, visits):
                continue
            known = {d.key for d in self.sledai.descriptors}
            for column, keys in (
                ("descriptors", assessment.descriptors),
                ("not_attributed", tuple(assessment.not_attribution_causes)),
            ):
                unknown = [key for key in keys if key not in known]
                if unknown:
                    self.report.reject(row, column, f"unknown SLEDAI-2K descriptor(s): {', '.join(unknown)}")
                    break
            else:
                scored = self._score(row, assessment, evidence[assessment.subject_id])
                if scored is not None:
                    accepted.append(scored)
        return accepted

    def _score(
        self, row: Located[SledaiAssessment], assessment: SledaiAssessment, labs: list[LabEvidence]
    ) -> Located[ScoredAssessment] | None:
        """Score one assessment; a CRF total is the score, lab findings it left out become findings."""
        try:
            score = score_sledai(
                self.sledai,
                flagged=assessment.descriptors,
                labs=labs,
                assessed_on=assessment.assessed_on,
                window_days=assessment.window_days,
                units=self.catalogue.units,
                not_attributed=assessment.not_attribution_causes,
                reported_total=assessment.reported_total,
            )
        except ValueError as exc:
            self.report.reject(row, "window_days", str(exc))
            return None
        where = f"{assessment.subject_id} {assessment.visit_code}"
        if score.total_from_crf and score.total != score.assessed_total:
            self.report.findings.append(
                Finding(
                    SLEDAI,
                    row.line,
                    "sledai-total-differs",
                    f"{where}: CRF total {score.total}, the descriptors it lists weigh {score.assessed_total}; "
                    "the CRF total is the score",
                )
            )
        if missed := score.uncounted_lab_findings:
            listed = ", ".join(f"{d.key} ({d.weight}; {'/'.join(d.evidence)})" for d in missed)
            self.report.findings.append(
                Finding(
                    SLEDAI,
                    row.line,
                    "sledai-lab-findings",
                    f"{where}: CRF total {score.total}; labs also meet {listed}, which would give "
                    f"{score.computed_total}. Mark them not_attributed, or add them to the CRF",
                )
            )
        return Located(ScoredAssessment(assessment, score), row.file, row.line, row.row)

    def _procedures(
        self, rows: list[Located[TreatmentProcedure]], subjects: dict[str, Located[Subject]]
    ) -> list[Located[TreatmentProcedure]]:
        accepted = [row for row in rows if self._subject_ok(row, row.record.subject_id, subjects)]
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
                    self.report.findings.append(
                        Finding(
                            PROCEDURES,
                            infusion.line,
                            "protocol-deviation",
                            f"{subject_id}: MSC infusion without a prior cyclophosphamide pretreatment",
                        )
                    )
                    continue
                latest = max(before, key=lambda p: p.record.started_at)
                hours = (started - latest.record.started_at).total_seconds() / 3600
                if not window.min <= hours <= window.max:
                    self.report.findings.append(
                        Finding(
                            PROCEDURES,
                            infusion.line,
                            "protocol-deviation",
                            f"{subject_id}: MSC infusion {hours:.1f} h after the cyclophosphamide "
                            "pretreatment "
                            f"(line {latest.line}); protocol: {window.min:g}-{window.max:g} h",
                        )
                    )
        return accepted


def _rows(path: Path, model: type[BaseModel]) -> Iterator[tuple[int, dict[str, str], tuple[str | None, str] | None]]:
    """Yield (line, row-dict, header-problem) for each non-blank record of a CSV file.

    The line is where the record starts (quoted cells may span lines). A header problem (unknown or
    missing column) refuses every row with the same reason, so a typo in one column name loses nothing.
    """
    fields = model.model_fields
    required = [name for name, info in fields.items() if info.is_required()]
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(str(path), 0, None, f"cannot be read: {exc}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = [cell.strip() for cell in next(reader)]
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError(path.name, 1, None, f"unreadable header: {exc}") from None
        problem: tuple[str | None, str] | None = None
        unknown = [name for name in header if name not in fields]
        missing = [name for name in required if name not in header]
        if unknown:
            problem = (unknown[0], f"header has unknown column(s) {', '.join(unknown)}")
        elif missing:
            problem = (missing[0], f"header lacks required column(s) {', '.join(missing)}")
        elif len(set(header)) != len(header):
            problem = (None, "header repeats a column")
        line = reader.line_num + 1
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                raise InputError(path.name, line, None, f"malformed CSV: {exc}") from None
            start, line = line, reader.line_num + 1
            if not any(cell.strip() for cell in cells):
                continue
            row = dict(zip(header, cells, strict=False))
            if len(cells) != len(header) and problem is None:
                yield start, row, (None, f"row has {len(cells)} cells, the header has {len(header)}")
                continue
            yield start, row, problem
