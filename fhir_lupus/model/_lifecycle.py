"""The subject lifecycle: status_history.csv checked against mappings/fhir/lifecycle.yaml and subjects.csv.

A subject's history is its rows in file order (dates may repeat, never go back). It is used whole or not at all:
the first row that breaks a rule (a transition the lifecycle does not allow, a date going backwards, a missing
reason, a disagreement with subjects.csv) is refused with its reason, the subject's other rows are refused
naming it, and the subject keeps its subjects.csv status alone, as without a history (a finding says so).
The MSC infusion is cross-checked with procedures.csv; a mismatch is a finding, not a refusal.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date
from typing import get_args

from pydantic import BaseModel, ConfigDict, model_validator

from fhir_lupus.model._entities import StatusChange, Subject, SubjectStatus, TreatmentProcedure
from fhir_lupus.model._records import Finding, LoadReport, Located
from fhir_lupus.terminology import CodeRef, MappingPack, load_pack

__all__ = ["STATUS_HISTORY", "LifecycleRules", "OffStudyReason", "check_status_history", "load_lifecycle_rules"]

STATUS_HISTORY = "status_history.csv"
SUBJECTS = "subjects.csv"
PROCEDURES = "procedures.csv"
STATUSES: frozenset[str] = frozenset(get_args(SubjectStatus))


class OffStudyReason(BaseModel):
    """A coded reason for leaving the study (mappings/fhir/lifecycle.yaml ``off_study_reasons``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cdisc: str
    display: str
    death: bool = False


class LifecycleRules(BaseModel):
    """mappings/fhir/lifecycle.yaml; every status a FHIR R4 research-subject-status code (checked at load)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    first: frozenset[SubjectStatus]
    transitions: dict[SubjectStatus, frozenset[SubjectStatus]]
    reason_required: frozenset[SubjectStatus]
    on_study: frozenset[SubjectStatus]
    intervention: SubjectStatus
    left_study: frozenset[SubjectStatus]
    enrolled: frozenset[SubjectStatus]
    progress_type: CodeRef
    milestones: dict[SubjectStatus, CodeRef] = {}
    off_study_reasons: dict[str, OffStudyReason] = {}

    @model_validator(mode="after")
    def _ends_have_no_exit(self) -> LifecycleRules:
        for status in self.left_study:
            if self.transitions.get(status):
                raise ValueError(f"{status} ends participation (left_study) but has transitions")
        return self

    def allowed_after(self, status: str) -> frozenset[str]:
        return next((after for before, after in self.transitions.items() if before == status), frozenset())

    def milestone(self, status: str) -> CodeRef | None:
        return next((ref for reached, ref in self.milestones.items() if reached == status), None)

    def means_death(self, reason_code: str | None) -> bool:
        """Whether a coded off-study reason is death (``death: true``); free text is never read."""
        reason = self.off_study_reasons.get(reason_code) if reason_code else None
        return reason is not None and reason.death


def load_lifecycle_rules(pack: MappingPack | None = None) -> LifecycleRules:
    return (pack or load_pack()).load(LifecycleRules, "fhir/lifecycle.yaml")


Problem = tuple[Located[StatusChange], str, str]  # the row, its column, the reason


def check_status_history(
    rows: Sequence[Located[StatusChange]],
    subjects: dict[str, Located[Subject]],
    procedures: Sequence[Located[TreatmentProcedure]],
    rules: LifecycleRules,
    report: LoadReport,
) -> dict[str, tuple[Located[StatusChange], ...]]:
    """The accepted history of each subject, in order, with its rows; refused rows and findings go to ``report``.

    ``rows`` are the rows of status_history.csv that passed the model and name a subject of subjects.csv.
    """
    by_subject: dict[str, list[Located[StatusChange]]] = defaultdict(list)
    for row in rows:
        by_subject[row.record.subject_id].append(row)
    infusions: dict[str, list[Located[TreatmentProcedure]]] = defaultdict(list)
    for procedure in procedures:
        if procedure.record.kind == "msc_infusion" and procedure.record.status == "completed":
            infusions[procedure.record.subject_id].append(procedure)
    accepted: dict[str, tuple[Located[StatusChange], ...]] = {}
    for subject_id, subject in subjects.items():
        history = by_subject.get(subject_id, [])
        earlier = next(
            (r for r in report.rejects if r.file == STATUS_HISTORY and r.row.get("subject_id") == subject_id), None
        )
        if earlier is not None:
            _refuse(history, subject, f"{STATUS_HISTORY}:{earlier.line} was refused", report)
            continue
        if not history:
            if report.read[STATUS_HISTORY]:
                report.findings.append(
                    Finding(
                        STATUS_HISTORY,
                        None,
                        "no-status-history",
                        f"{subject_id} has no history: its status is subjects.csv's {subject.record.status} alone",
                    )
                )
            continue
        problem = _first_problem(history, rules) or _disagreement(history, subject, rules)
        if problem is not None:
            row, column, reason = problem
            report.reject(row, column, reason)
            _refuse([r for r in history if r is not row], subject, f"{STATUS_HISTORY}:{row.line} was refused", report)
            continue
        report.findings.extend(_infusion_findings(history, infusions.get(subject_id, []), rules))
        accepted[subject_id] = tuple(history)
    return accepted


def _refuse(rest: Sequence[Located[StatusChange]], subject: Located[Subject], cause: str, report: LoadReport) -> None:
    subject_id = subject.record.subject_id
    for row in rest:
        report.reject(row, None, f"the history of {subject_id} is refused whole: {cause}")
    report.findings.append(
        Finding(
            STATUS_HISTORY,
            None,
            "status-history-refused",
            f"{subject_id}: history not used ({cause}); the subject keeps its {SUBJECTS} status "
            f"{subject.record.status} ({SUBJECTS}:{subject.line})",
        )
    )


def _first_problem(history: Sequence[Located[StatusChange]], rules: LifecycleRules) -> Problem | None:
    """The first row, in file order, that breaks a rule of the lifecycle."""
    previous: Located[StatusChange] | None = None
    for row in history:
        change = row.record
        if change.status in rules.reason_required and not change.reason:
            return row, "reason", f"{change.status} needs a reason"
        if change.reason_code and change.status not in rules.left_study:
            return (
                row,
                "reason_code",
                f"a coded off-study reason belongs to {_listed(rules.left_study)}, not {change.status}",
            )
        if previous is None:
            if change.status not in rules.first:
                return row, "status", f"a history starts with {_listed(rules.first)}, not {change.status}"
        else:
            before = previous.record
            if change.on < before.on:
                return (
                    row,
                    "on",
                    f"date goes backwards: {change.on} is before {before.status} on {before.on} (line {previous.line})",
                )
            allowed = rules.allowed_after(before.status)
            if change.status not in allowed:
                after = _listed(allowed) if allowed else "nothing (it ends the history)"
                return (
                    row,
                    "status",
                    f"{before.status} -> {change.status} is not an allowed transition (line {previous.line}; "
                    f"after {before.status}: {after}; mappings/fhir/lifecycle.yaml)",
                )
        previous = row
    return None


def _disagreement(
    history: Sequence[Located[StatusChange]], located: Located[Subject], rules: LifecycleRules
) -> Problem | None:
    """Where the history and the subject's row of subjects.csv say different things."""
    subject, where = located.record, f"{SUBJECTS}:{located.line}"
    last = history[-1]
    if last.record.status != subject.status:
        return last, "status", f"the history ends with {last.record.status}, {where} says {subject.status}"
    first_on_study = next((row for row in history if row.record.status in rules.on_study), None)
    if first_on_study is not None and first_on_study.record.on != subject.enrolled_on:
        return (
            first_on_study,
            "on",
            f"the first on-study status ({first_on_study.record.status} on {first_on_study.record.on}) is not "
            f"enrolled_on {subject.enrolled_on} of {where}",
        )
    if last.record.status in rules.left_study:
        if subject.off_study_on and subject.off_study_on != last.record.on:
            said = f"{where} says off_study_on {subject.off_study_on}"
            return last, "on", f"{last.record.status} on {last.record.on}, {said}"
        if subject.off_study_reason and last.record.reason and subject.off_study_reason != last.record.reason:
            return (
                last,
                "reason",
                f"reason {last.record.reason!r}, {where} says off_study_reason {subject.off_study_reason!r}",
            )
        code, said_code = last.record.reason_code, subject.off_study_reason_code
        if code and said_code and code != said_code:
            return last, "reason_code", f"reason_code {code!r}, {where} says off_study_reason_code {said_code!r}"
    elif subject.off_study_on:
        return (
            last,
            "status",
            f"{where} gives off_study_on {subject.off_study_on}, the history ends with {last.record.status}",
        )
    return None


def _infusion_findings(
    history: Sequence[Located[StatusChange]], infusions: Sequence[Located[TreatmentProcedure]], rules: LifecycleRules
) -> list[Finding]:
    """The intervention status against the subject's completed MSC infusions (local start dates)."""
    findings = []
    started: dict[date, Located[TreatmentProcedure]] = {}
    for infusion in infusions:
        started.setdefault(infusion.record.started_at.date(), infusion)
    entries = [row for row in history if row.record.status == rules.intervention]
    subject_id = history[0].record.subject_id
    for row in entries:
        if row.record.on in started:
            continue
        said = f"{subject_id}: {rules.intervention} on {row.record.on}"
        if started:
            listed = ", ".join(f"{day} ({PROCEDURES}:{p.line})" for day, p in sorted(started.items()))
            message = f"{said}, the MSC infusion started on {listed}"
        else:
            message = f"{said}, no completed MSC infusion in {PROCEDURES}"
        findings.append(Finding(STATUS_HISTORY, row.line, "status-history-infusion", message))
    if started and not entries:
        first = min(started)
        findings.append(
            Finding(
                STATUS_HISTORY,
                None,
                "status-history-infusion",
                f"{subject_id}: MSC infusion on {first} ({PROCEDURES}:{started[first].line}), "
                f"the history has no {rules.intervention}",
            )
        )
    return findings


def _listed(statuses: frozenset[str]) -> str:
    return " or ".join(sorted(statuses))
