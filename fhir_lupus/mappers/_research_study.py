"""Study definition -> ResearchStudy (R4 shape).

The registered recruitment status has no R4 equivalent when it is "Unknown": the study definition chooses
the R4 status and the registered value travels in an extension and a note (see mappings/studies/).
The NCT number is the official identifier under its current system, and again under each superseded system
(``use: old``, mappings/project.yaml ``superseded_identifier_systems``), so that systems still searching by
an old system find the study, and push recognises a study stored under one.
"""

from __future__ import annotations

from fhir_lupus.mappers._context import MappingContext, Resource
from fhir_lupus.mappers._schedule import protocol_key

__all__ = ["map_research_study"]


def map_research_study(ctx: MappingContext) -> Resource:
    study = ctx.study
    status = study.recruitment_status
    return {
        "resourceType": "ResearchStudy",
        "id": ctx.resource_id("ResearchStudy", study.nct_id),
        "extension": [
            {
                "url": ctx.pack.extension_url("registered_status"),
                "valueCodeableConcept": {"text": status.registered},
            }
        ],
        "identifier": [
            {
                "use": "official",
                "system": ctx.pack.identifier_system("study", study=study.nct_id),
                "value": study.nct_id,
            },
            *(
                {"use": "old", "system": system, "value": study.nct_id}
                for system in ctx.pack.superseded_identifier_systems("study", study=study.nct_id)
            ),
        ],
        "title": study.title,
        "status": status.fhir_r4,
        "phase": {
            "coding": [{"system": ctx.pack.system_uri("research-study-phase"), "code": study.phase}],
            "text": study.phase.replace("-", " ").title(),
        },
        "condition": [ctx.concept(condition) for condition in study.conditions],
        "description": study.description,
        "enrollment": [ctx.reference("Group", study.nct_id, "enrollment")],
        # the schedule of activities (fhir_lupus/mappers/_schedule.py), as the SoA IG's ResearchStudySoa has it
        "protocol": [ctx.reference("PlanDefinition", study.nct_id, protocol_key())],
        "sponsor": ctx.reference("Organization", study.sponsor.key, display=study.sponsor.name),
        "site": [ctx.reference("Location", ctx.site.location.key, display=ctx.site.location.name)],
        "note": [
            {
                "text": f"Registered overall status (ClinicalTrials.gov): {status.registered}. "
                f"FHIR status '{status.fhir_r4}' is this adapter's mapping, not a verified registry value."
            }
        ],
        "arm": [{"name": arm.name, "type": {"text": arm.type}, "description": arm.description} for arm in study.arms],
        "objective": [
            {
                "name": f"{outcome.name} ({outcome.time_frame})",
                "type": {
                    "coding": [
                        {
                            "system": ctx.pack.system_uri("research-study-objective-type"),
                            "code": outcome.type,
                        }
                    ]
                },
            }
            for outcome in study.outcomes
        ],
    }
