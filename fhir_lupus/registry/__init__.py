"""Registry submission: de-identified packages of the trial's enrolled subjects, and their submission.

Rules (what is removed, re-keyed, shifted, generalised) are data in mappings/registry/deidentification.yaml
(``_rules``); ``_deidentify`` applies them, with the walks over a resource of ``_tree``; ``_key`` holds the
registry key; ``_package`` builds a package from a ``TrialSource`` (sorted on disk by ``_runs``); ``_submit``
checks one against its manifest and pushes it.
"""

from fhir_lupus.registry._deidentify import DeidentificationError, Deidentified, LinkRow, date_shift, deidentify
from fhir_lupus.registry._key import KEY_ENV, RegistryConfigError, RegistryKey, load_key
from fhir_lupus.registry._package import (
    MANIFEST,
    VALIDATION,
    PackageResult,
    default_link_table,
    package_trial,
    write_package,
    write_package_batches,
)
from fhir_lupus.registry._rules import DeidentificationRules, load_rules
from fhir_lupus.registry._submit import (
    Package,
    SubmitResult,
    read_package,
    refuse_placeholder_package,
    submit_package,
)
from fhir_lupus.registry._tree import shift_date

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
    "date_shift",
    "default_link_table",
    "deidentify",
    "load_key",
    "load_rules",
    "package_trial",
    "read_package",
    "refuse_placeholder_package",
    "shift_date",
    "submit_package",
    "write_package",
    "write_package_batches",
]
