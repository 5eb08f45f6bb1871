"""Who is a subject of the study and which day is their day 0: pure rules over resources, whoever fetched them.

The search-based pull finds ResearchSubjects, Procedures and Encounters by searches; the bulk pull and the
local (NDJSON) path have them from files. Both hand what they found to the functions here, so the enrolled
statuses, the subject id and the anchor of the visit windows (``protocol.visit_months.anchor``) are decided
once, the same way, whatever the transport. Which lab results count is decided here too (``LabSelection``):
the lab category or a catalogue code, collected on or after the subject's date floor.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fhir_lupus.client import location_id
from fhir_lupus.pull._search import matches, parse_instant
from fhir_lupus.terminology import MappingPack, fhir_codes

__all__ = [
    "LabSelection",
    "SubjectRow",
    "encounter_start",
    "enrolled_rows",
    "infusion_start",
    "lab_category",
    "patient_of",
    "period_end",
    "period_start",
    "reaches",
    "subject_row",
    "subject_state",
]


@dataclass(frozen=True)
class SubjectRow:
    """A ResearchSubject as pull reads it: its Patient, its subject id and its current status."""

    patient_ref: str  # ``Patient/<id>``
    subject_id: str  # our subject identifier's value, else the ResearchSubject's id
    status: str | None


def subject_row(research_subject: dict[str, Any], *, subject_system: str, state_system: str) -> SubjectRow | None:
    """The subject's Patient, id and status; None when it names no Patient (a subject we cannot pull)."""
    reference = research_subject.get("individual", research_subject.get("subject", {})).get("reference", "")
    patient_id = location_id(str(reference), "Patient")
    if not patient_id:
        return None
    subject_id = next(
        (i["value"] for i in research_subject.get("identifier", []) if i.get("system") == subject_system),
        research_subject.get("id", ""),
    )
    return SubjectRow(f"Patient/{patient_id}", str(subject_id), subject_state(research_subject, state_system))


def enrolled_rows(
    research_subjects: Iterable[dict[str, Any]],
    *,
    subject_system: str,
    state_system: str,
    enrolled: Collection[str],
    skipped: Counter[str],
) -> Iterator[tuple[SubjectRow, dict[str, Any]]]:
    """The enrolled subjects among ``research_subjects`` (lazily), with their ResearchSubject; the others, which
    are candidates, eligible or ineligible people and no subjects of the study, counted by status in ``skipped``."""
    for research_subject in research_subjects:
        row = subject_row(research_subject, subject_system=subject_system, state_system=state_system)
        if row is None:
            continue
        if row.status not in enrolled:
            skipped[row.status or "no status"] += 1
            continue
        yield row, research_subject


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


def patient_of(observation: dict[str, Any]) -> str:
    """``Patient/<id>`` of the Observation's subject, whether the reference is relative, absolute or versioned."""
    reference = str((observation.get("subject") or {}).get("reference") or "")
    patient_id = location_id(reference, "Patient")
    return f"Patient/{patient_id}" if patient_id else reference


def lab_category(pack: MappingPack) -> str:
    """``system|code`` of the laboratory category, from the entry the mappers write (mappings/fhir/codes.yaml
    ``lab_category``): the search's ``category``, the bulk ``_typeFilter`` and the NDJSON and Spark selection all
    ask for this one token, so pull finds what push wrote."""
    category = fhir_codes(pack).lab_category
    return f"{pack.system_uri(category.system)}|{category.code}"


@dataclass(frozen=True)
class LabSelection:
    """Which Observations of a subject are lab results of the trial, as pull's searches ask for them.

    ``category`` is ``system|code`` of the laboratory category; ``codes`` the catalogue's ``system|code``
    keys. A result counts when it has the category or one of the codes, and (``date=ge<floor>``) when its
    effective time reaches the subject's date floor.
    """

    category: str
    codes: frozenset[str]

    def wanted(self, observation: dict[str, Any], floor: date | None) -> bool:
        if floor is not None and not reaches(observation, floor):
            return False
        if matches(observation, "category", self.category):
            return True
        codings = (observation.get("code") or {}).get("coding") or []
        return any(f"{c.get('system', '')}|{c.get('code', '')}" in self.codes for c in codings)


def reaches(observation: dict[str, Any], floor: date) -> bool:
    """Whether ``date=ge<floor>`` matches the Observation, as FHIR search reads it: its effective time ends on or
    after the floor's start (a date or partial date lasts until its end; a period without an end goes on), the
    floor read as UTC midnight. An effective time we cannot read keeps the result: nothing is dropped on a guess.
    """
    start = datetime(floor.year, floor.month, floor.day, tzinfo=UTC)
    ends: list[datetime | None] = [
        _end_of(str(observation[key])) for key in ("effectiveDateTime", "effectiveInstant") if observation.get(key)
    ]
    period = observation.get("effectivePeriod") or {}
    if period.get("end"):
        ends.append(_end_of(str(period["end"])))
    elif period.get("start"):
        ends.append(None)  # still going on
    if observation.get("effectiveTiming"):
        ends.append(None)  # not read here
    return any(end is None or end > start for end in ends)


def _end_of(value: str) -> datetime | None:
    """The exclusive end of a FHIR date, dateTime or instant (``2008`` ends at 2009-01-01); None if unreadable."""
    text = value.strip()
    try:
        if "T" in text:
            moment = parse_instant(text)
            return moment + timedelta(microseconds=1) if moment else None
        parts = [int(p) for p in text.split("-")]
        if len(parts) == 1:
            return datetime(parts[0] + 1, 1, 1, tzinfo=UTC)
        if len(parts) == 2:
            year, month = parts
            return datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        year, month, day = parts[:3]
        return datetime(year, month, day, tzinfo=UTC) + timedelta(days=1)
    except ValueError:
        return None
