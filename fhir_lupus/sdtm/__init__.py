"""SDTM: the trial as CDISC SDTMIG 3.4 datasets (Dataset-JSON 1.1, XPT v5), built from the checked trial by the
mappings of mappings/sdtm/ (``_spec`` their contract, ``_engine`` the generic step, ``_sources`` the facts of each
domain's rows, ``_build`` the run that writes them whole or not at all); docs/sdtm.md."""

from fhir_lupus.sdtm._build import OutputFormat, SdtmResult, build_datasets, sdtm_trial
from fhir_lupus.sdtm._engine import Dataset, iso_8601, study_day
from fhir_lupus.sdtm._sources import SdtmContext
from fhir_lupus.sdtm._spec import DomainSpec, TrialDesign, Variable

__all__ = [
    "Dataset",
    "DomainSpec",
    "OutputFormat",
    "SdtmContext",
    "SdtmResult",
    "TrialDesign",
    "Variable",
    "build_datasets",
    "iso_8601",
    "sdtm_trial",
    "study_day",
]
