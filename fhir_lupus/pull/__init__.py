"""Pull: a study's lab results from a FHIR server back into the trial's table, incremental and unit-normalised.

The path of a pull (docs/architecture.md): ``_study`` is the study-level entry (which mark, the audit entry);
``_runner`` builds the pull's one ``Subjects`` (``_subjects``: the study, who is enrolled, each one's day 0) and
runs a pass over it: the search pass (``_search_pass``, its group searches cut by the pure ``_planner``, every
request a ``_search.Search``) or the bulk pass (``_bulk_pass``, the export job of ``_bulk``). Each Observation
is read into a fact (``_fact``), selected (``_selection``) and made a row or set aside (``_reverse``; ``_visits``
places it in the schedule); ``_deletions`` finds what an incremental pull must remove (deleted on the server
since, or missing from a listing of ids); ``_store`` stages, merges, removes and writes the rows and moves the
mark on its own connection. ``_local`` gives the same rows from NDJSON files at hand, and ``fhir_lupus.spark`` on Spark.
"""

from fhir_lupus.pull._bulk import BulkOptions, BulkSummary, Level
from fhir_lupus.pull._fact import LabFact, normal_range, number_text, observation_fact
from fhir_lupus.pull._local import split_ndjson
from fhir_lupus.pull._reverse import CodeIndex, PulledLab, PullRules, UnmappedResult, classify_fact, code_index
from fhir_lupus.pull._roundtrip import compare_round_trip
from fhir_lupus.pull._runner import PullResult, pull_labs
from fhir_lupus.pull._search_pass import fetch_labs
from fhir_lupus.pull._selection import LabSelection, lab_category, patient_of
from fhir_lupus.pull._store import PullStore, Removal, newer_record, table_key, table_order, unmapped_path, write_rows
from fhir_lupus.pull._study import DEFAULT_OVERLAP_SECONDS, pull_study
from fhir_lupus.pull._subjects import Subject, Subjects

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
    "Subject",
    "Subjects",
    "UnmappedResult",
    "classify_fact",
    "code_index",
    "compare_round_trip",
    "fetch_labs",
    "lab_category",
    "newer_record",
    "normal_range",
    "number_text",
    "observation_fact",
    "patient_of",
    "pull_labs",
    "pull_study",
    "split_ndjson",
    "table_key",
    "table_order",
    "unmapped_path",
    "write_rows",
]
