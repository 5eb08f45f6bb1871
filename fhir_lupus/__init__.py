"""fhir_lupus: FHIR interoperability adapter for the NCT00698191 MSC-for-refractory-SLE trial.

The public surface is small: load a data directory, map it, bundle it. Everything else lives in
sub-packages (``model``, ``terminology``, ``scoring``, ``mappers``) for those who need the parts.

    trial = TrialSource.directory(Path("examples/nct00698191"))  # fhir_lupus.source: loaded when asked
    result = map_trial(trial)                        # validated R4 resources; refused rows in trial.report
    bundle = transaction_bundle(result.resources)    # conditional, dependency-ordered transaction
"""

from fhir_lupus._version import __version__ as __version__
from fhir_lupus.bundle import dumps, transaction_bundle
from fhir_lupus.errors import (
    FhirLupusError,
    InputError,
    MappingError,
    ResourceInvalidError,
    TerminologyError,
    UnitError,
)
from fhir_lupus.model import LoadReport, TrialData, load_study, load_trial, write_quarantine
from fhir_lupus.pipeline import MapResult, map_trial
from fhir_lupus.validation import check_invariants, validate_resource

__all__ = [
    "FhirLupusError",
    "InputError",
    "LoadReport",
    "MapResult",
    "MappingError",
    "ResourceInvalidError",
    "TerminologyError",
    "TrialData",
    "UnitError",
    "check_invariants",
    "dumps",
    "load_study",
    "load_trial",
    "map_trial",
    "transaction_bundle",
    "validate_resource",
    "write_quarantine",
]
