"""A flare signal as an R4 DetectedIssue (docs/terminology.md "Flare signals": why DetectedIssue, not Flag).

The definition is the code (the project-owned flare-signal CodeSystem, whose concepts are the ids of
mappings/signals/flares.yaml), the values that crossed are ``implicated`` (the server's Observation when the
pulled table knows its id, else a logical reference by the trial's result id), the source's address is
``reference``. One business identifier (definition, subject, result) makes a publish idempotent; the id is the
UUIDv5 of that identifier, as every mapper's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fhir_lupus._resource import Resource
from fhir_lupus.mappers._context import _uuid5
from fhir_lupus.terminology import MappingPack

__all__ = ["IssueFacts", "implicated_result", "map_detected_issue"]


@dataclass(frozen=True)
class IssueFacts:
    """What the mapper needs of a signal, in the signal's own words (fhir_lupus/signals builds it)."""

    key: str  # the business identifier's value
    code: str  # the definition's id
    display: str  # the definition's title
    subject_id: str
    identified: str  # FHIR dateTime: when the value that raised it was collected
    detail: str
    reference: str  # the source's URL
    implicated: Sequence[dict[str, Any]]
    patient: str | None = None  # "Patient/<server id>" when the server's Patient is known


def implicated_result(
    pack: MappingPack, *, study: str, result_id: str, observation_id: str, system: str = "lab_result"
) -> dict[str, Any]:
    """A reference to a result's Observation: literal when the server's id is known, else by its identifier
    (``system``: project.yaml's identifier system of the result, a lab result or a SLEDAI-2K assessment)."""
    if observation_id:
        return {"reference": f"Observation/{observation_id}"}
    return {"identifier": {"system": pack.identifier_system(system, study=study), "value": result_id}}


def map_detected_issue(
    facts: IssueFacts, pack: MappingPack, *, study: str, system: str, status: str, severity: str
) -> Resource:
    """The DetectedIssue of one signal; ``system`` names the definitions' CodeSystem (systems.yaml short name),
    ``status`` and ``severity`` are mappings/signals/flares.yaml ``detected_issue``."""
    identifier = {"system": pack.identifier_system("flare_signal", study=study), "value": facts.key}
    return {
        "resourceType": "DetectedIssue",
        "id": _uuid5("|".join(("DetectedIssue", identifier["system"], facts.key))),
        "identifier": [identifier],
        "status": status,
        "code": {
            "coding": [{"system": pack.system_uri(system), "code": facts.code, "display": facts.display}],
            "text": facts.display,
        },
        "severity": severity,
        # the subject's study id is a ResearchSubject identifier, not a Patient's: without the server's Patient
        # the reference names the subject in words only
        "patient": {"reference": facts.patient, "display": facts.subject_id}
        if facts.patient
        else {"display": facts.subject_id},
        "identifiedDateTime": facts.identified,
        "implicated": list(facts.implicated),
        "detail": facts.detail,
        "reference": facts.reference,
    }
