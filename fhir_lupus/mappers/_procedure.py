"""Treatment procedure -> Procedure: the cyclophosphamide pretreatment and the MSC infusion.

R4 Procedure has no dose, route or product element; project extensions carry the dose (mg, mg/m2, cells/kg),
the route (SNOMED CT) and the MSC donor id. The drug given in the pretreatment is usedCode (RxNorm). The route,
the drug and the pretreatment's SNOMED CT code are data: mappings/terminology/medications.yaml.
"""

from __future__ import annotations

from typing import Any

from fhir_lupus.mappers._context import MappingContext, Resource, event_timing
from fhir_lupus.mappers._observation import json_number
from fhir_lupus.mappers._patient import patient_identifier
from fhir_lupus.model import Subject, TreatmentProcedure
from fhir_lupus.terminology import load_medication_catalogue

__all__ = ["map_procedure"]


def map_procedure(procedure: TreatmentProcedure, subject: Subject, ctx: MappingContext) -> Resource:
    medications = load_medication_catalogue(ctx.pack)
    pretreatment = medications.pretreatment
    extensions: list[dict[str, Any]] = [
        ctx.study_extension(),
        {
            "url": ctx.pack.extension_url("procedure_route"),
            "valueCodeableConcept": {"coding": [ctx.pack.coding(medications.routes[procedure.route])]},
        },
    ]
    dose_url = ctx.pack.extension_url("procedure_dose")
    units = ctx.codes.units
    if procedure.kind == "cyclophosphamide_pretreatment":
        code = ctx.project_concept("cyclophosphamide-pretreatment")
        code["coding"].insert(0, ctx.pack.coding(pretreatment.procedure_code))
        if procedure.dose_mg is not None:
            extensions.append(
                {"url": dose_url, "valueQuantity": ctx.quantity(json_number(procedure.dose_mg), units.dose_mg)}
            )
        if procedure.dose_mg_per_m2 is not None:
            extensions.append(
                {
                    "url": dose_url,
                    "valueQuantity": ctx.quantity(json_number(procedure.dose_mg_per_m2), units.dose_mg_per_m2),
                }
            )
    else:
        code = ctx.project_concept("msc-infusion")
        if procedure.cells_per_kg is not None:
            extensions.append(
                {
                    "url": dose_url,
                    "valueQuantity": ctx.quantity(json_number(procedure.cells_per_kg), units.cells_per_kg),
                }
            )
        if procedure.donor_id:
            extensions.append(
                {
                    "url": ctx.pack.extension_url("msc_donor"),
                    "valueIdentifier": ctx.identifier("msc_donor", procedure.donor_id),
                }
            )
    resource: Resource = {
        "resourceType": "Procedure",
        "id": ctx.resource_id("Procedure", ctx.nct_id, procedure.procedure_id),
        "extension": extensions,
        "identifier": [ctx.identifier("procedure", procedure.procedure_id)],
        "status": procedure.status,
        "code": code,
        "subject": ctx.patient_ref(patient_identifier(subject, ctx)),
    }
    resource |= event_timing("performed", procedure.started_at, procedure.ended_at)
    if procedure.kind == "cyclophosphamide_pretreatment":
        resource["usedCode"] = [{"coding": [ctx.pack.coding(medications.drugs[pretreatment.drug].code)]}]
    return resource
