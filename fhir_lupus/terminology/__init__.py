"""Terminology: the mapping pack (mappings/), the lab catalogue and UCUM unit handling."""

from fhir_lupus.terminology._adverse_events import AdverseEventTerms, load_adverse_event_terms
from fhir_lupus.terminology._catalogue import LabCatalogue, LabValue, ResolvedLab, parse_lab_value
from fhir_lupus.terminology._censored import proves_above, proves_below
from fhir_lupus.terminology._codes import FhirCodes, Interpretation, load_fhir_codes
from fhir_lupus.terminology._medications import MedicationCatalogue, load_medication_catalogue
from fhir_lupus.terminology._pack import (
    CodeChoice,
    CodeRef,
    MappingPack,
    default_mappings_dir,
    load_pack,
    parse_model,
    read_yaml,
)
from fhir_lupus.terminology._units import UnitConverter
from fhir_lupus.terminology._units import warm_up as warm_up_units

__all__ = [
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
    "UnitConverter",
    "default_mappings_dir",
    "load_adverse_event_terms",
    "load_fhir_codes",
    "load_medication_catalogue",
    "load_pack",
    "parse_lab_value",
    "parse_model",
    "proves_above",
    "proves_below",
    "read_yaml",
    "warm_up_units",
]
