"""Pull: a study's lab results from a FHIR server back into the trial's table, incremental and unit-normalised.

The path of a pull (docs/architecture.md): ``_subjects`` says who is a subject and what is day 0; ``_search``
is the one search object; ``_runner`` runs the search pass (or ``_bulk``'s export, or ``_local``'s NDJSON);
``_reverse`` turns each Observation into a row (``_visits`` places it in the schedule); ``_store`` merges
rows and keeps the table; ``_study`` is the study-level entry (high-water mark, audit).
"""

from fhir_lupus.pull._bulk import BulkOptions, BulkSummary, Level
from fhir_lupus.pull._local import split_ndjson, study_subjects
from fhir_lupus.pull._reverse import (
    CodeIndex,
    LabFact,
    PulledLab,
    PullRules,
    UnmappedResult,
    classify_fact,
    code_index,
    normal_range,
    number_text,
    observation_fact,
)
from fhir_lupus.pull._roundtrip import compare_round_trip
from fhir_lupus.pull._runner import PullResult, fetch_labs, pull_labs
from fhir_lupus.pull._store import PullStore, Removal, newer_record, table_order, unmapped_path, write_rows
from fhir_lupus.pull._study import DEFAULT_OVERLAP_SECONDS, pull_study
from fhir_lupus.pull._subjects import LabSelection, patient_of

__all__ = [
    "DEFAULT_OVERLAP_SECONDS",
    "BulkOptions",
    "BulkSummary",
    "CodeIndex",
    "LabFact",
    "LabSelection",
    "Level",
    "PullResult",
    "PullRules",
    "PullStore",
    "PulledLab",
    "Removal",
    "UnmappedResult",
    "classify_fact",
    "code_index",
    "compare_round_trip",
    "fetch_labs",
    "newer_record",
    "normal_range",
    "number_text",
    "observation_fact",
    "patient_of",
    "pull_labs",
    "pull_study",
    "split_ndjson",
    "study_subjects",
    "table_order",
    "unmapped_path",
    "write_rows",
]
