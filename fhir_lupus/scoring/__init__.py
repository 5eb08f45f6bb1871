"""Clinical scores computed from trial data (SLEDAI-2K)."""

from fhir_lupus.scoring._sledai import (
    LabEvidence,
    ScoredDescriptor,
    SledaiDefinition,
    SledaiScore,
    UnjudgedLab,
    load_sledai_definition,
    score_sledai,
)

__all__ = [
    "LabEvidence",
    "ScoredDescriptor",
    "SledaiDefinition",
    "SledaiScore",
    "UnjudgedLab",
    "load_sledai_definition",
    "score_sledai",
]
