"""Cyclophosphamide pretreatment (procedures.csv) -> MedicationAdministration (R4), beside its Procedure.

The drug (RxNorm), route (SNOMED CT) and status mapping come from mappings/terminology/medications.yaml.
``partOf`` points at the MSC infusion Procedure the pretreatment conditions: R4 MedicationAdministration.partOf
(Reference(MedicationAdministration | Procedure)) is "a larger event of which this particular event is a
component or step", which is what a conditioning dose is to the transplantation; ``supportingInformation``
would only say the infusion is background to the dose. Keys agreed with the AdverseEvent mapper: id
``resource_id("MedicationAdministration", nct_id, procedure_id)``, identifier ``medication_administration``.
"""

from __future__ import annotations

from typing import Any

from fhir_lupus.mappers._context import MappingContext, Resource, event_timing
from fhir_lupus.mappers._observation import json_number
from fhir_lupus.mappers._patient import patient_identifier
from fhir_lupus.model import Subject, TreatmentProcedure
from fhir_lupus.terminology import load_medication_catalogue

__all__ = ["conditioned_infusion", "map_medication_administration", "medication_administration_ref"]


def medication_administration_ref(procedure_id: str, ctx: MappingContext) -> dict[str, str]:
    """The reference other mappers (AdverseEvent.suspectEntity) use for a pretreatment's administration."""
    return ctx.reference("MedicationAdministration", ctx.nct_id, procedure_id)


def map_medication_administration(
    pretreatment: TreatmentProcedure,
    infusion: TreatmentProcedure | None,
    subject: Subject,
    ctx: MappingContext,
) -> Resource:
    catalogue = load_medication_catalogue(ctx.pack)
    config = catalogue.pretreatment
    dosage: dict[str, Any] = {"route": ctx.concept(catalogue.routes[pretreatment.route])}
    words = []
    if pretreatment.dose_mg is not None:
        dosage["dose"] = ctx.quantity(json_number(pretreatment.dose_mg), ctx.codes.units.dose_mg)
        words.append(f"{json_number(pretreatment.dose_mg)} mg")
    if pretreatment.dose_mg_per_m2 is not None:
        words.append(f"({json_number(pretreatment.dose_mg_per_m2)} mg/m2)")
    words.append(pretreatment.route)
    resource: Resource = {
        "resourceType": "MedicationAdministration",
        "id": medication_administration_ref(pretreatment.procedure_id, ctx)["reference"].split("/")[1],
        "extension": [ctx.study_extension()],
        "identifier": [ctx.identifier("medication_administration", pretreatment.procedure_id)],
    }
    if infusion is not None:
        resource["partOf"] = [ctx.reference("Procedure", ctx.nct_id, infusion.procedure_id)]
    resource |= {
        "status": config.administration_status[pretreatment.status],
        "medicationCodeableConcept": ctx.concept(catalogue.drugs[config.drug].code),
        "subject": ctx.patient_ref(patient_identifier(subject, ctx)),
    }
    resource |= event_timing("effective", pretreatment.started_at, pretreatment.ended_at)
    resource["dosage"] = {"text": " ".join(words), **dosage}
    return resource


def conditioned_infusion(
    pretreatment: TreatmentProcedure, procedures: list[TreatmentProcedure]
) -> TreatmentProcedure | None:
    """The MSC infusion a pretreatment prepares: the subject's first one starting at or after it, if any."""
    later = [
        p
        for p in procedures
        if p.kind == "msc_infusion"
        and p.subject_id == pretreatment.subject_id
        and p.started_at >= pretreatment.started_at
    ]
    return min(later, key=lambda p: (p.started_at, p.procedure_id), default=None)
