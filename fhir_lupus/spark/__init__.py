"""The lab table on Apache Spark with Pathling (the ``spark`` extra): the same rows as ``pull``, from NDJSON.

A SQL-on-FHIR ViewDefinition (mappings/views/lab_observation.json) flattens the Observations; the pull's own
rules (``pull.classify_fact``, ``pull.LabSelection``) then make the rows on the executors.
PySpark and Pathling are imported only when a Spark function runs: without the extra, the error names it.
"""

from __future__ import annotations

from fhir_lupus.spark._labs import SparkLabs, spark_labs
from fhir_lupus.spark._session import SparkUnavailable, java_home, local_session
from fhir_lupus.spark._view import facts_from_rows, load_lab_view

__all__ = [
    "SparkLabs",
    "SparkUnavailable",
    "facts_from_rows",
    "java_home",
    "load_lab_view",
    "local_session",
    "spark_labs",
]
