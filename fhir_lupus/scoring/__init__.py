"""Clinical scores computed from trial data (SLEDAI-2K)."""

from fhir_lupus.scoring._sledai import (
    Condition,
    LabEvidence,
    ScoredDescriptor,
    SledaiDefinition,
    SledaiScore,
    Threshold,
    UnjudgedLab,
    load_sledai_definition,
    score_sledai,
)

__all__ = [
    "Condition",
    "LabEvidence",
    "ScoredDescriptor",
    "SledaiDefinition",
    "SledaiScore",
    "Threshold",
    "UnjudgedLab",
    "load_sledai_definition",
    "score_sledai",
]
