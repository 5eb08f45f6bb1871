"""Terminology: the mapping pack (mappings/), the lab catalogue and UCUM unit handling."""

from fhir_lupus.terminology._pack import (
    CodeChoice,
    CodeRef,
    MappingPack,
    default_mappings_dir,
    load_mapping_file,
    load_pack,
    mappings_root,
    parse_model,
    read_yaml,
)
from fhir_lupus.terminology.catalogue import LabCatalogue, LabValue, ResolvedLab, parse_lab_value
from fhir_lupus.terminology.units import UnitConverter

__all__ = [
    "CodeChoice",
    "CodeRef",
    "LabCatalogue",
    "LabValue",
    "MappingPack",
    "ResolvedLab",
    "UnitConverter",
    "default_mappings_dir",
    "load_mapping_file",
    "load_pack",
    "mappings_root",
    "parse_lab_value",
    "parse_model",
    "read_yaml",
]
