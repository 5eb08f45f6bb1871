"""Terminology: the mapping pack (mappings/), the lab catalogue and UCUM unit handling."""

from fhir_lupus.terminology._adverse_events import AdverseEventTerms, load_adverse_event_terms
from fhir_lupus.terminology._catalogue import LabCatalogue, LabValue, ResolvedLab, parse_lab_value
from fhir_lupus.terminology._censored import proves_above, proves_below
from fhir_lupus.terminology._codes import FhirCodes, Interpretation, load_fhir_codes
from fhir_lupus.terminology._locate import default_mappings_dir
from fhir_lupus.terminology._medications import MedicationCatalogue, load_medication_catalogue
from fhir_lupus.terminology._pack import CodeChoice, CodeRef, MappingPack, load_pack
from fhir_lupus.terminology._site import (
    EXAMPLE_PROFILE,
    SITE_TEMPLATE,
    SiteProfile,
    is_loopback,
    is_placeholder,
    load_site_profile,
    placeholders,
    profile_named,
    refuse_changed_systems,
    refuse_placeholders,
)
from fhir_lupus.terminology._units import UnitConverter
from fhir_lupus.terminology._units import warm_up as warm_up_units
from fhir_lupus.terminology._yaml import parse_model, read_yaml

__all__ = [
    "EXAMPLE_PROFILE",
    "SITE_TEMPLATE",
    "AdverseEventTerms",
    "CodeChoice",
    "CodeRef",
    "FhirCodes",
    "Interpretation",
    "LabCatalogue",
    "LabValue",
    "MappingPack",
    "MedicationCatalogue",
    "ResolvedLab",
    "SiteProfile",
    "UnitConverter",
    "default_mappings_dir",
    "is_loopback",
    "is_placeholder",
    "load_adverse_event_terms",
    "load_fhir_codes",
    "load_medication_catalogue",
    "load_pack",
    "load_site_profile",
    "parse_lab_value",
    "parse_model",
    "placeholders",
    "profile_named",
    "proves_above",
    "proves_below",
    "read_yaml",
    "refuse_changed_systems",
    "refuse_placeholders",
    "warm_up_units",
]
