"""Trial entities, the study definition and the loader that fills them from CSV files."""

from fhir_lupus.model._records import Finding, LoadReport, Located, Reject, write_quarantine
from fhir_lupus.model.entities import (
    LabResult,
    SledaiAssessment,
    Subject,
    TreatmentProcedure,
    TregMeasurement,
    Visit,
)
from fhir_lupus.model.loader import CheckedLab, ScoredAssessment, TrialData, load_trial, read_study_id
from fhir_lupus.model.study import StudyDefinition, load_study

__all__ = [
    "CheckedLab",
    "Finding",
    "LabResult",
    "LoadReport",
    "Located",
    "Reject",
    "ScoredAssessment",
    "SledaiAssessment",
    "StudyDefinition",
    "Subject",
    "TreatmentProcedure",
    "TregMeasurement",
    "TrialData",
    "Visit",
    "load_study",
    "load_trial",
    "read_study_id",
    "write_quarantine",
]
