"""adverse_events.csv: one row per adverse event, checked on its own and against subjects and procedures.

The row model checks types and ranges (grade 1-5, dates, code shapes); ``check_adverse_events`` checks what the
mapping file (mappings/terminology/adverse_events.yaml) and the other files decide: known outcome, causality and
suspect keys, seriousness criteria, the grade-5/fatal rule, dates in the subject's study time, and that each suspected
study treatment is a procedures.csv row of that subject given before the onset. Every problem names its column; a
refused row is in the report (and the quarantine), never dropped silently. The onset against the end of the
subject's participation (after death: refused; after leaving the study: kept, a note) is the timeline's
(fhir_lupus/model/_timeline.py).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fhir_lupus.model._entities import Subject, TreatmentProcedure
from fhir_lupus.model._records import LoadReport, Located
from fhir_lupus.terminology import AdverseEventTerms

__all__ = ["ADVERSE_EVENTS", "FATAL_OUTCOME", "AdverseEventRow", "CheckedAdverseEvent", "check_adverse_events"]

ADVERSE_EVENTS = "adverse_events.csv"
FATAL_OUTCOME = "fatal"  # the outcome key that is the subject's death (a grade 5 event has it)
_KEY = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# procedure statuses that mean the treatment was (at least partly) given, so it can be a suspect
_GIVEN = frozenset({"completed", "in-progress", "stopped", "on-hold"})


class AdverseEventRow(BaseModel):
    """One row of adverse_events.csv; field names are the column names (docs/csv-layout.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    event_id: str = Field(pattern=_KEY)
    subject_id: str = Field(pattern=_KEY)
    term: str = Field(min_length=1)
    meddra_code: str | None = Field(default=None, pattern=r"^\d{8}$")
    ctcae_term: str | None = None
    ctcae_code: str | None = Field(default=None, pattern=r"^C\d+$")
    grade: int = Field(ge=1, le=5)
    serious: Literal["yes", "no"]
    seriousness_criteria: tuple[str, ...] = ()
    outcome: str
    onset_on: date
    resolved_on: date | None = None
    related_to: str
    causality: str | None = None
    reporter: str | None = None
    recorded_on: date | None = None

    @field_validator("seriousness_criteria", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(";") if part.strip())
        return value

    @field_validator("seriousness_criteria")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("a criterion is listed twice")
        return value


@dataclass(frozen=True)
class CheckedAdverseEvent:
    """An accepted event and its suspects: (related_to suspect key, procedure_id of the treatment given)."""

    event: AdverseEventRow
    suspects: tuple[tuple[str, str], ...]


def row_problems(event: AdverseEventRow, terms: AdverseEventTerms) -> list[tuple[str, str]]:
    """(column, reason) for each rule of the row itself and the mapping file that the row breaks."""
    problems: list[tuple[str, str]] = []

    def known(column: str, value: str | None, keys: Collection[str]) -> bool:
        if value is not None and value not in keys:
            problems.append((column, f"{value!r} is not one of {', '.join(keys)}"))
            return False
        return True

    outcome_ok = known("outcome", event.outcome, terms.outcomes)
    related_ok = known("related_to", event.related_to, terms.related_to)
    known("causality", event.causality, terms.causality)
    unknown = [c for c in event.seriousness_criteria if c not in terms.seriousness_criteria]
    if unknown:
        problems.append(
            (
                "seriousness_criteria",
                f"unknown criterion {', '.join(unknown)} (one of {', '.join(terms.seriousness_criteria)})",
            )
        )
    if event.serious == "yes" and not event.seriousness_criteria:
        problems.append(("seriousness_criteria", "a serious event names at least one criterion (e.g. hospitalization)"))
    if event.serious == "no" and event.seriousness_criteria:
        problems.append(("seriousness_criteria", "a non-serious event has no seriousness criteria"))
    if related_ok:
        if terms.related_to[event.related_to] and event.causality is None:
            problems.append(("causality", f"related_to {event.related_to} needs the causality assessment"))
        if not terms.related_to[event.related_to] and event.causality is not None:
            problems.append(("causality", f"related_to {event.related_to} names no suspect to assess"))
    if event.resolved_on and event.resolved_on < event.onset_on:
        problems.append(("resolved_on", f"resolved_on {event.resolved_on} is before onset_on {event.onset_on}"))
    if event.recorded_on and event.recorded_on < event.onset_on:
        problems.append(("recorded_on", f"recorded_on {event.recorded_on} is before onset_on {event.onset_on}"))
    if outcome_ok:
        if event.resolved_on and event.outcome not in terms.resolved_outcomes:
            problems.append(("resolved_on", f"an event with outcome {event.outcome} has not resolved"))
        if event.grade == 5 and event.outcome != FATAL_OUTCOME:
            problems.append(("outcome", "a grade 5 event (death related to the event) has outcome fatal"))
        if event.outcome == FATAL_OUTCOME and event.grade != 5:
            problems.append(("grade", "a fatal event is grade 5 (CTCAE: death related to the adverse event)"))
        if event.outcome == FATAL_OUTCOME and "death" not in event.seriousness_criteria:
            problems.append(("seriousness_criteria", "a fatal event is serious with the criterion death"))
    return problems


def check_adverse_events(
    rows: list[Located[AdverseEventRow]],
    subjects: dict[str, Located[Subject]],
    procedures: list[Located[TreatmentProcedure]],
    terms: AdverseEventTerms,
    report: LoadReport,
) -> list[Located[CheckedAdverseEvent]]:
    """Accepted events with their suspect procedures; every refused row goes to ``report`` with its column.

    ``rows`` belong to known subjects already (the loader checks that, as for every file).
    """
    given: dict[tuple[str, str], list[TreatmentProcedure]] = {}
    for procedure in procedures:
        if procedure.record.status in _GIVEN:
            given.setdefault((procedure.record.subject_id, procedure.record.kind), []).append(procedure.record)
    accepted = []
    for row in rows:
        event = row.record
        problems = row_problems(event, terms)
        subject = subjects[event.subject_id].record
        if event.onset_on < subject.enrolled_on:
            problems.append(("onset_on", f"onset before enrolment ({subject.enrolled_on})"))
        suspects: list[tuple[str, str]] = []
        for suspect in terms.related_to.get(event.related_to, ()):
            kind = terms.suspects[suspect].procedure_kind
            candidates = sorted(given.get((event.subject_id, kind), []), key=lambda p: p.started_at)
            before = [p for p in candidates if p.started_at.date() <= event.onset_on]
            if not candidates:
                problems.append(("related_to", f"{event.subject_id} has no {kind} given in procedures.csv"))
            elif not before:
                problems.append(
                    ("related_to", f"onset {event.onset_on} is before the {kind} ({candidates[0].started_at.date()})")
                )
            else:
                suspects.append((suspect, before[-1].procedure_id))
        if problems:
            for column, reason in problems:
                report.reject(row, column, reason)
            continue
        accepted.append(Located(CheckedAdverseEvent(event, tuple(suspects)), row.file, row.line, row.row))
    return accepted
