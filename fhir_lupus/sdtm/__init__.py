"""SDTM datasets of the trial (issue 23): the CDISC controlled terminology they use and the check of their values."""

from fhir_lupus.sdtm._check import ValueProblem, check_values, iso8601_problem
from fhir_lupus.sdtm._terms import CdiscUnit, Codelist, CtTerm, LabTest, SdtmTerms, load_sdtm_terms

__all__ = [
    "CdiscUnit",
    "Codelist",
    "CtTerm",
    "LabTest",
    "SdtmTerms",
    "ValueProblem",
    "check_values",
    "iso8601_problem",
    "load_sdtm_terms",
]
