"""Medication history row -> MedicationStatement (R4): a prior regimen and its outcome.

The drug (RxNorm), route (SNOMED CT), frequency (Timing) and outcome (project code) come from
mappings/terminology/medications.yaml. R4 MedicationStatement has no element for a regimen's outcome (failed,
responded, stopped for intolerance), so the project extension ``prior-therapy-outcome`` carries it; a course
stopped for intolerance also has status ``stopped`` with the outcome as statusReason. A course with no end date
is ``active``.
"""

from __future__ import annotations

from typing import Any

from fhir_lupus.mappers._context import MappingContext, Resource
from fhir_lupus.mappers._observation import json_number
from fhir_lupus.mappers._patient import patient_identifier
from fhir_lupus.model import MedicationHistory, Subject
from fhir_lupus.terminology import MedicationCatalogue, load_medication_catalogue

__all__ = ["map_medication_statement", "medication_dosage"]


def map_medication_statement(medication: MedicationHistory, subject: Subject, ctx: MappingContext) -> Resource:
    catalogue = load_medication_catalogue(ctx.pack)
    outcome = catalogue.outcomes[medication.outcome]
    outcome_concept = ctx.concept(outcome.code)
    period = {"start": medication.started_on.isoformat()}
    if medication.ended_on is not None:
        period["end"] = medication.ended_on.isoformat()
    resource: Resource = {
        "resourceType": "MedicationStatement",
        "id": ctx.resource_id("MedicationStatement", ctx.nct_id, medication.medication_id),
        "extension": [
            ctx.study_extension(),
            {"url": ctx.pack.extension_url("prior_therapy_outcome"), "valueCodeableConcept": outcome_concept},
        ],
        "identifier": [ctx.identifier("medication_statement", medication.medication_id)],
        "status": "active" if medication.ended_on is None else outcome.status,
        "medicationCodeableConcept": ctx.concept(catalogue.drugs[medication.drug].code),
        "subject": ctx.patient_ref(patient_identifier(subject, ctx)),
        "effectivePeriod": period,
    }
    if resource["status"] == "stopped":
        resource["statusReason"] = [outcome_concept]
    dosage = medication_dosage(medication, catalogue, ctx)
    if dosage:
        resource["dosage"] = [dosage]
    if medication.note:
        resource["note"] = [{"text": medication.note}]
    return resource


def medication_dosage(
    medication: MedicationHistory, catalogue: MedicationCatalogue, ctx: MappingContext
) -> dict[str, Any]:
    """Dosage: text, Timing from the frequency, route, dose in UCUM (empty when the row gives none of them)."""
    dosage: dict[str, Any] = {}
    words: list[str] = []
    if medication.dose is not None and medication.dose_unit:
        ucum = ctx.units.to_ucum(medication.dose_unit)
        dosage["doseAndRate"] = [{"doseQuantity": ctx.quantity(json_number(medication.dose), ucum)}]
        words.append(f"{json_number(medication.dose)} {ctx.units.display(ucum)}")
    if medication.frequency:
        frequency = catalogue.frequencies[medication.frequency]
        words.append(frequency.text)
        if frequency.frequency is None:
            dosage["timing"] = {"repeat": {"count": 1}}
        else:
            dosage["timing"] = {
                "repeat": {
                    "frequency": frequency.frequency,
                    "period": json_number(frequency.period or 0),
                    "periodUnit": frequency.period_unit,
                }
            }
    if medication.route:
        dosage["route"] = ctx.concept(catalogue.routes[medication.route])
        words.append(medication.route)
    if words:
        dosage = {"text": " ".join(words), **dosage}
    return dosage
