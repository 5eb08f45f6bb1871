"""Treg measurement -> Observation: CD4+CD25+FOXP3+ cells as % of CD4+ T cells (project code, no LOINC)."""

from __future__ import annotations

from fhir_lupus.mappers._context import MappingContext, Resource, fhir_datetime
from fhir_lupus.mappers._observation import json_number, observation_base
from fhir_lupus.model import Subject, TregMeasurement

__all__ = ["map_treg_observation"]


def map_treg_observation(measurement: TregMeasurement, subject: Subject, ctx: MappingContext) -> Resource:
    resource = observation_base(
        ctx=ctx,
        identifier=ctx.identifier("treg", measurement.measurement_id),
        key=("treg", measurement.measurement_id),
        subject=subject,
        visit_code=measurement.visit_code,
        category=ctx.codes.lab_category,
        code=ctx.project_concept("treg-percent"),
        effective=fhir_datetime(measurement.measured_at),
    )
    resource["valueQuantity"] = ctx.quantity(json_number(measurement.percent), ctx.codes.units.percent)
    if measurement.lab:
        resource["performer"] = [{"display": measurement.lab}]
    return resource
