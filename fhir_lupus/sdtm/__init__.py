"""SDTM: the trial as CDISC SDTMIG 3.4 datasets (Dataset-JSON 1.1, XPT v5), built from the checked trial by the
mappings of mappings/sdtm/ (``_spec`` their contract, ``_engine`` the generic step, ``_sources*`` the facts of each
domain's rows, ``_build`` the run that writes them whole or not at all), with the CDISC controlled terminology they
use (``_terms``), the project's own check of their values (``_check``), and what describes them: define.xml
(``_define``) and reviewers-guide.md (``_guide``); docs/sdtm.md."""

from fhir_lupus.sdtm._build import OutputFormat, SdtmResult, build_datasets, sdtm_trial
from fhir_lupus.sdtm._check import ValueProblem, check_values, iso8601_problem
from fhir_lupus.sdtm._conformance import Conformance, check_output
from fhir_lupus.sdtm._core import (
    CORE_CT_PACKAGE,
    CoreExample,
    CoreExecutionError,
    CoreIssue,
    CoreReport,
    CoreSetup,
    CoreUnavailable,
    core_settings,
    read_core_report,
    run_core,
)
from fhir_lupus.sdtm._engine import Dataset, iso_8601, study_day
from fhir_lupus.sdtm._sources import SdtmContext
from fhir_lupus.sdtm._spec import DomainSpec, TrialDesign, ValueList, Variable
from fhir_lupus.sdtm._terms import CdiscUnit, Codelist, CtTerm, LabTest, SdtmTerms, load_sdtm_terms

__all__ = [
    "CORE_CT_PACKAGE",
    "CdiscUnit",
    "Codelist",
    "Conformance",
    "CoreExample",
    "CoreExecutionError",
    "CoreIssue",
    "CoreReport",
    "CoreSetup",
    "CoreUnavailable",
    "CtTerm",
    "Dataset",
    "DomainSpec",
    "LabTest",
    "OutputFormat",
    "SdtmContext",
    "SdtmResult",
    "SdtmTerms",
    "TrialDesign",
    "ValueList",
    "ValueProblem",
    "Variable",
    "build_datasets",
    "check_output",
    "check_values",
    "core_settings",
    "iso8601_problem",
    "iso_8601",
    "load_sdtm_terms",
    "read_core_report",
    "run_core",
    "sdtm_trial",
    "study_day",
]
