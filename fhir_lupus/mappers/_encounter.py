"""Visit -> Encounter: the protocol visit that labs, scores and measurements belong to."""

from __future__ import annotations

from fhir_lupus.mappers._context import MappingContext, Resource
from fhir_lupus.mappers._patient import patient_identifier
from fhir_lupus.model import Subject, Visit

__all__ = ["map_encounter"]


def map_encounter(visit: Visit, subject: Subject, ctx: MappingContext) -> Resource:
    protocol_visit = ctx.protocol_visit(visit.visit_code)
    visit_type = ctx.project_concept("protocol-visit")
    visit_type["text"] = f"{protocol_visit.name} ({protocol_visit.code})"
    return {
        "resourceType": "Encounter",
        "id": ctx.encounter_ref(visit.subject_id, visit.visit_code)["reference"].split("/")[1],
        "extension": [ctx.study_extension()],
        "identifier": [ctx.identifier("visit", f"{visit.subject_id}/{visit.visit_code}")],
        "status": "finished",
        "class": ctx.pack.coding(ctx.codes.encounter_class.of(protocol_visit.encounter_class)),
        "type": [visit_type],
        "subject": ctx.patient_ref(patient_identifier(subject, ctx)),
        "period": {"start": visit.visit_date.isoformat(), "end": visit.visit_date.isoformat()},
    }
