"""Trial entities, the study definition and the loader that fills them from CSV files."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhir_lupus._exports import lazy_exports

if TYPE_CHECKING:
    from fhir_lupus.model._adverse_events import AdverseEventRow, CheckedAdverseEvent
    from fhir_lupus.model._check_rules import load_check_rules
    from fhir_lupus.model._edit_checks import finding
    from fhir_lupus.model._eligibility import BOOLEAN_SOURCES, Bounds, EligibilityRule, RegimenRule
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
    from fhir_lupus.model._history_checks import MEDICATIONS, SCREENING
    from fhir_lupus.model._inputs import require_inputs
    from fhir_lupus.model._lifecycle import load_lifecycle_rules
    from fhir_lupus.model._loader import CHUNK_ROWS, chunk_plan, load_trial, load_trial_chunks, read_study_id
    from fhir_lupus.model._queries import QueryLog, track_queries, write_queries
    from fhir_lupus.model._records import Finding, LoadReport, Located, Reject, write_quarantine
    from fhir_lupus.model._result_checks import ResultToCheck, check_results
    from fhir_lupus.model._schedule import SubjectSchedule, evaluate_schedule
    from fhir_lupus.model._scoring import CheckedLab, ScoredAssessment
    from fhir_lupus.model._study import (
        DAYS_PER_MONTH,
        Activity,
        Eligibility,
        ProtocolVisit,
        StudyDefinition,
        add_calendar_months,
        load_study,
        nearest_month,
    )
    from fhir_lupus.model._timeline import SubjectTimeline
    from fhir_lupus.model._trial import TrialData

# where each name lives, imported when first used (fhir_lupus/_exports.py): a pull needs the study definition,
# not the loader, the edit checks or the adverse events
_HOMES: dict[str, tuple[str, ...]] = {
    "fhir_lupus.model._adverse_events": ("AdverseEventRow", "CheckedAdverseEvent"),
    "fhir_lupus.model._check_rules": ("load_check_rules",),
    "fhir_lupus.model._edit_checks": ("finding",),
    "fhir_lupus.model._eligibility": ("BOOLEAN_SOURCES", "Bounds", "EligibilityRule", "RegimenRule"),
    "fhir_lupus.model._entities": (
        "LabResult",
        "SledaiAssessment",
        "StatusChange",
        "Subject",
        "TreatmentProcedure",
        "TregMeasurement",
        "Visit",
    ),
    "fhir_lupus.model._history": ("MedicationHistory", "ScreeningRecord"),
    "fhir_lupus.model._history_checks": ("MEDICATIONS", "SCREENING"),
    "fhir_lupus.model._inputs": ("require_inputs",),
    "fhir_lupus.model._lifecycle": ("load_lifecycle_rules",),
    "fhir_lupus.model._loader": ("CHUNK_ROWS", "chunk_plan", "load_trial", "load_trial_chunks", "read_study_id"),
    "fhir_lupus.model._queries": ("QueryLog", "track_queries", "write_queries"),
    "fhir_lupus.model._records": ("Finding", "LoadReport", "Located", "Reject", "write_quarantine"),
    "fhir_lupus.model._result_checks": ("ResultToCheck", "check_results"),
    "fhir_lupus.model._schedule": ("SubjectSchedule", "evaluate_schedule"),
    "fhir_lupus.model._scoring": ("CheckedLab", "ScoredAssessment"),
    "fhir_lupus.model._study": (
        "DAYS_PER_MONTH",
        "Activity",
        "Eligibility",
        "ProtocolVisit",
        "StudyDefinition",
        "add_calendar_months",
        "load_study",
        "nearest_month",
    ),
    "fhir_lupus.model._timeline": ("SubjectTimeline",),
    "fhir_lupus.model._trial": ("TrialData",),
}
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)

__all__ = [
    "BOOLEAN_SOURCES",
    "CHUNK_ROWS",
    "DAYS_PER_MONTH",
    "MEDICATIONS",
    "SCREENING",
    "Activity",
    "AdverseEventRow",
    "Bounds",
    "CheckedAdverseEvent",
    "CheckedLab",
    "Eligibility",
    "EligibilityRule",
    "Finding",
    "LabResult",
    "LoadReport",
    "Located",
    "MedicationHistory",
    "ProtocolVisit",
    "QueryLog",
    "RegimenRule",
    "Reject",
    "ResultToCheck",
    "ScoredAssessment",
    "ScreeningRecord",
    "SledaiAssessment",
    "StatusChange",
    "StudyDefinition",
    "Subject",
    "SubjectSchedule",
    "SubjectTimeline",
    "TreatmentProcedure",
    "TregMeasurement",
    "TrialData",
    "Visit",
    "add_calendar_months",
    "check_results",
    "chunk_plan",
    "evaluate_schedule",
    "finding",
    "load_check_rules",
    "load_lifecycle_rules",
    "load_study",
    "load_trial",
    "load_trial_chunks",
    "nearest_month",
    "read_study_id",
    "require_inputs",
    "track_queries",
    "write_quarantine",
    "write_queries",
]
