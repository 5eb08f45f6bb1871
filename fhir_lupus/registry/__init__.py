"""Registry submission: de-identified packages of the trial's enrolled subjects, and their submission.

Rules (what is removed, re-keyed, shifted, generalised) are data in mappings/registry/deidentification.yaml.
"""

from fhir_lupus.registry._deidentify import (
    DeidentificationError,
    DeidentificationRules,
    Deidentified,
    LinkRow,
    deidentify,
    load_rules,
    shift_date,
)
from fhir_lupus.registry._key import KEY_ENV, RegistryConfigError, RegistryKey, load_key
from fhir_lupus.registry._package import (
    MANIFEST,
    VALIDATION,
    Package,
    PackageResult,
    SubmitResult,
    default_link_table,
    package_directory,
    package_trial,
    read_package,
    submit_package,
    write_package,
    write_package_batches,
)

__all__ = [
    "KEY_ENV",
    "MANIFEST",
    "VALIDATION",
    "DeidentificationError",
    "DeidentificationRules",
    "Deidentified",
    "LinkRow",
    "Package",
    "PackageResult",
    "RegistryConfigError",
    "RegistryKey",
    "SubmitResult",
    "default_link_table",
    "deidentify",
    "load_key",
    "load_rules",
    "package_directory",
    "package_trial",
    "read_package",
    "shift_date",
    "submit_package",
    "write_package",
    "write_package_batches",
]
