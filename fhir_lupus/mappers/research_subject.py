"""Subject -> ResearchSubject: the subject's participation in the study (R4 shape)."""

from __future__ import annotations

from typing import Any

from fhir_lupus.mappers._context import MappingContext, Resource
from fhir_lupus.mappers.patient import patient_identifier
from fhir_lupus.model.entities import Subject

__all__ = ["map_research_subject"]


def map_research_subject(subject: Subject, ctx: MappingContext) -> Resource:
    period: dict[str, Any] = {"start": subject.enrolled_on.isoformat()}
    if subject.off_study_on:
        period["end"] = subject.off_study_on.isoformat()
    resource: Resource = {
        "resourceType": "ResearchSubject",
        "id": ctx.research_subject_ref(subject.subject_id)["reference"].split("/")[1],
        "identifier": [ctx.identifier("subject", subject.subject_id)],
        "status": subject.status,
        "period": period,
        "study": ctx.study_ref(),
        "individual": ctx.patient_ref(patient_identifier(subject, ctx)),
        "assignedArm": subject.arm,
    }
    if subject.off_study_reason:
        # R4 ResearchSubject has no element for it (R5 has progress.reason): a project extension keeps it.
        resource["extension"] = [
            {"url": ctx.pack.extension_url("off_study_reason"), "valueString": subject.off_study_reason}
        ]
    return resource
