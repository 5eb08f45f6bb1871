"""What a load hands on: every accepted record of a data directory, located, with the subjects' timelines.

Its own module, below the loader and the steps it calls (scoring, schedule, adverse events), so that each of them
can name the trial without importing the loader.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fhir_lupus.model._adverse_events import CheckedAdverseEvent
from fhir_lupus.model._entities import StatusChange, Subject, TreatmentProcedure, TregMeasurement, Visit
from fhir_lupus.model._history import MedicationHistory, ScreeningRecord
from fhir_lupus.model._records import Located
from fhir_lupus.model._scoring import CheckedLab, ScoredAssessment
from fhir_lupus.model._study import StudyDefinition
from fhir_lupus.model._timeline import SubjectTimeline

__all__ = ["LABS", "PROCEDURES", "SLEDAI", "SUBJECTS", "TREG", "VISITS", "TrialData"]

SUBJECTS, VISITS, LABS, SLEDAI, TREG, PROCEDURES = (
    "subjects.csv",
    "visits.csv",
    "labs.csv",
    "sledai.csv",
    "treg.csv",
    "procedures.csv",
)


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
