"""The lab table on Apache Spark with Pathling (the ``spark`` extra): the same rows as ``pull``, from NDJSON.

A SQL-on-FHIR ViewDefinition (mappings/views/lab_observation.json) flattens the Observations; the pull's own
rules (``pull.classify_fact``, ``pull.LabSelection``) then make the rows on the executors, and Spark writes them
(partitioned Parquet, or one sorted CSV); lines no rule can read go to a rejects output.
PySpark and Pathling are imported only when a Spark function runs: without the extra, the error names it.
"""

from __future__ import annotations

from fhir_lupus.spark._labs import SparkLabs, rejects_path, spark_labs
from fhir_lupus.spark._screen import Reject, Screen
from fhir_lupus.spark._session import SparkUnavailable, java_home, local_session
from fhir_lupus.spark._view import facts_from_rows, load_lab_view
from fhir_lupus.spark._write import BUCKETS, csv_line

__all__ = [
    "BUCKETS",
    "Reject",
    "Screen",
    "SparkLabs",
    "SparkUnavailable",
    "csv_line",
    "facts_from_rows",
    "java_home",
    "load_lab_view",
    "local_session",
    "rejects_path",
    "spark_labs",
]
