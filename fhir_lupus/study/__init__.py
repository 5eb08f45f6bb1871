"""Study operations on a loaded trial: eligibility screening, the schedule report, the safety summary.

Screening decides the study file's criteria for each screened candidate (docs/csv-layout.md).

``screen_candidate`` is the pure engine (facts + criteria -> decisions and verdict); ``screen_trial`` runs it
over a loaded data directory and ``screening_findings`` reports enrolled subjects who did not screen eligible.
"""

from fhir_lupus.study._criteria import (
    CandidateFacts,
    CriterionResult,
    Decision,
    ScreeningResult,
    Verdict,
    screen_candidate,
    screening_status,
)
from fhir_lupus.study._safety import SafetySummary, summarise_safety, write_summary_csv
from fhir_lupus.study._schedule import SCHEDULE_CSV_COLUMNS, present_items, schedule_report, schedule_rows
from fhir_lupus.study._screening import ScreenedCandidate, screen_trial, screening_findings

__all__ = [
    "SCHEDULE_CSV_COLUMNS",
    "CandidateFacts",
    "CriterionResult",
    "Decision",
    "SafetySummary",
    "ScreenedCandidate",
    "ScreeningResult",
    "Verdict",
    "present_items",
    "schedule_report",
    "schedule_rows",
    "screen_candidate",
    "screen_trial",
    "screening_findings",
    "screening_status",
    "summarise_safety",
    "write_summary_csv",
]
