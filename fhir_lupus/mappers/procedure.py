"""Treatment procedure -> Procedure: the cyclophosphamide pretreatment and the MSC infusion.

R4 Procedure has no dose, route or product element; project extensions carry the dose (mg, mg/m2, cells/kg),
the route (SNOMED CT) and the MSC donor id. The drug given in the pretreatment is usedCode (RxNorm).
"""

from __future__ import annotations

from typing import Any

from fhir_lupus.mappers._context import MappingContext, Resource, fhir_datetime
from fhir_lupus.mappers._observation import json_number
from fhir_lupus.mappers.patient import patient_identifier
from fhir_lupus.model.entities import Subject, TreatmentProcedure

__all__ = ["map_procedure"]

# SNOMED CT codes used here; every one is also named in docs/terminology.md.
_ADMINISTRATION_OF_DRUG = ("18629005", "Administration of drug or medicament (procedure)")
_INTRAVENOUS_ROUTE = ("47625008", "Intravenous route (qualifier value)")
_CYCLOPHOSPHAMIDE_RXNORM = ("3002", "cyclophosphamide")


def map_procedure(procedure: TreatmentProcedure, subject: Subject, ctx: MappingContext) -> Resource:
    snomed, rxnorm = ctx.pack.system_uri("snomed"), ctx.pack.system_uri("rxnorm")
    extensions: list[dict[str, Any]] = [
        ctx.study_extension(),
        {
            "url": ctx.pack.extension_url("procedure_route"),
            "valueCodeableConcept": {
                "coding": [{"system": snomed, "code": _INTRAVENOUS_ROUTE[0], "display": _INTRAVENOUS_ROUTE[1]}]
            },
        },
    ]
    dose_url = ctx.pack.extension_url("procedure_dose")
    if procedure.kind == "cyclophosphamide_pretreatment":
        code = ctx.project_concept("cyclophosphamide-pretreatment")
        code["coding"].insert(
            0, {"system": snomed, "code": _ADMINISTRATION_OF_DRUG[0], "display": _ADMINISTRATION_OF_DRUG[1]}
        )
        if procedure.dose_mg is not None:
            extensions.append({"url": dose_url, "valueQuantity": ctx.quantity(json_number(procedure.dose_mg), "mg")})
        if procedure.dose_mg_per_m2 is not None:
            extensions.append(
                {
                    "url": dose_url,
                    "valueQuantity": ctx.quantity(json_number(procedure.dose_mg_per_m2), "mg/m2"),
                }
            )
    else:
        code = ctx.project_concept("msc-infusion")
        if procedure.cells_per_kg is not None:
            extensions.append(
                {
                    "url": dose_url,
                    "valueQuantity": ctx.quantity(json_number(procedure.cells_per_kg), "{cells}/kg"),
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
    if procedure.ended_at:
        resource["performedPeriod"] = {
            "start": fhir_datetime(procedure.started_at),
            "end": fhir_datetime(procedure.ended_at),
        }
    else:
        resource["performedDateTime"] = fhir_datetime(procedure.started_at)
    if procedure.kind == "cyclophosphamide_pretreatment":
        resource["usedCode"] = [
            {
                "coding": [
                    {
                        "system": rxnorm,
                        "code": _CYCLOPHOSPHAMIDE_RXNORM[0],
                        "display": _CYCLOPHOSPHAMIDE_RXNORM[1],
                    }
                ]
            }
        ]
    return resource
