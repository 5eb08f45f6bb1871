"""One mapper per FHIR resource type (R4 shape); ``r5.to_r5`` reshapes for R5."""

from fhir_lupus.mappers._adverse_event import map_adverse_event
from fhir_lupus.mappers._codesystem import map_project_codesystem
from fhir_lupus.mappers._context import MappingContext, Resource
from fhir_lupus.mappers._detected_issue import IssueFacts, implicated_result, map_detected_issue
from fhir_lupus.mappers._encounter import map_encounter
from fhir_lupus.mappers._group import map_enrollment_group
from fhir_lupus.mappers._location import map_site_location
from fhir_lupus.mappers._medication_administration import conditioned_infusion, map_medication_administration
from fhir_lupus.mappers._medication_statement import map_medication_statement
from fhir_lupus.mappers._observation_lab import interpretation, map_lab_observation
from fhir_lupus.mappers._observation_sledai import map_sledai_observation
from fhir_lupus.mappers._observation_treg import map_treg_observation
from fhir_lupus.mappers._organization import map_sponsor_organization
from fhir_lupus.mappers._patient import map_patient
from fhir_lupus.mappers._procedure import map_procedure
from fhir_lupus.mappers._r5 import to_r5
from fhir_lupus.mappers._research_study import map_research_study
from fhir_lupus.mappers._research_subject import map_research_subject
from fhir_lupus.mappers._schedule import map_schedule_of_activities

__all__ = [
    "IssueFacts",
    "MappingContext",
    "Resource",
    "conditioned_infusion",
    "implicated_result",
    "interpretation",
    "map_adverse_event",
    "map_detected_issue",
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
    "map_schedule_of_activities",
    "map_site_location",
    "map_sledai_observation",
    "map_sponsor_organization",
    "map_treg_observation",
    "to_r5",
]
