"""Clinical scores computed from trial data (SLEDAI-2K)."""

from fhir_lupus.scoring.sledai import (
    LabEvidence,
    ScoredDescriptor,
    SledaiDefinition,
    SledaiScore,
    load_sledai_definition,
    score_sledai,
)

__all__ = [
    "LabEvidence",
    "ScoredDescriptor",
    "SledaiDefinition",
    "SledaiScore",
    "load_sledai_definition",
    "score_sledai",
]
