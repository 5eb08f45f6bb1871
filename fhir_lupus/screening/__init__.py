"""Eligibility screening: the study file's criteria decided for each screened candidate (docs/csv-layout.md).

``screen_candidate`` is the pure engine (facts + criteria -> decisions and verdict); ``screen_trial`` runs it
over a loaded data directory and ``screening_findings`` reports enrolled subjects who did not screen eligible.
"""

from fhir_lupus.screening._engine import (
    CandidateFacts,
    CriterionResult,
    Decision,
    ScreeningResult,
    Verdict,
    screen_candidate,
    screening_status,
)
from fhir_lupus.screening._trial import ScreenedCandidate, screen_trial, screening_findings

__all__ = [
    "CandidateFacts",
    "CriterionResult",
    "Decision",
    "ScreenedCandidate",
    "ScreeningResult",
    "Verdict",
    "screen_candidate",
    "screen_trial",
    "screening_findings",
    "screening_status",
]
