"""One mapper per FHIR resource type (R4 shape); ``r5.to_r5`` reshapes for R5."""

from fhir_lupus.mappers._context import MappingContext, Resource
from fhir_lupus.mappers.adverse_event import map_adverse_event
from fhir_lupus.mappers.codesystem import map_project_codesystem
from fhir_lupus.mappers.encounter import map_encounter
from fhir_lupus.mappers.group import map_enrollment_group
from fhir_lupus.mappers.location import map_site_location
from fhir_lupus.mappers.medication_administration import map_medication_administration
from fhir_lupus.mappers.medication_statement import map_medication_statement
from fhir_lupus.mappers.observation_lab import map_lab_observation
from fhir_lupus.mappers.observation_sledai import map_sledai_observation
from fhir_lupus.mappers.observation_treg import map_treg_observation
from fhir_lupus.mappers.organization import map_sponsor_organization
from fhir_lupus.mappers.patient import map_patient
from fhir_lupus.mappers.procedure import map_procedure
from fhir_lupus.mappers.r5 import to_r5
from fhir_lupus.mappers.research_study import map_research_study
from fhir_lupus.mappers.research_subject import map_research_subject

__all__ = [
    "MappingContext",
    "Resource",
    "map_adverse_event",
    "map_encounter",
    "map_enrollment_group",
    "map_lab_observation",
    "map_medication_administration",
    "map_medication_statement",
    "map_patient",
    "map_procedure",
    "map_project_codesystem",
    "map_research_study",
    "map_research_subject",
    "map_site_location",
    "map_sledai_observation",
    "map_sponsor_organization",
    "map_treg_observation",
    "to_r5",
]
