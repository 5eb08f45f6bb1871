"""The lab table's outputs, written by Spark itself: nothing of a row passes through the driver.

Parquet (the default): a directory of files partitioned by ``subject_bucket``, a hash of the subject id modulo
``buckets``. A subject's rows all land in one bucket, so a reader that wants one subject reads one directory;
the directory count stays bounded however many subjects a registry has (a directory per subject would make
10^5 small files, which Parquet readers and object stores handle badly). Each bucket is written by one task,
sorted in the pull's order (``pull.table_key``, then the observation id), so a file read alone is in the
table's order; a reader of the whole table sorts by ``subject_id, collected_at, analyte, result_id``.

CSV (an output named ``*.csv``, for outputs small enough to open in a spreadsheet): Spark sorts the rows in the
pull's order and one task writes them as text, each line made by Python's ``csv`` module on the executors (the
bytes the pull's writer makes, ``\\r\\n`` and all), after a header row sorted first; the one ``part-*`` file is
then renamed to the name asked for. That rename is the only step on the driver: the output must be on a file
system the driver sees (on a cluster, a shared one).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["BUCKETS", "ORDER", "csv_line", "remove_output", "write_table"]

BUCKETS = 16  # subject buckets of a Parquet output (``--buckets``)
ORDER = "_order"  # the column of ``pull.table_key``, sorted on and never written


def csv_line(values: Iterable[str]) -> str:
    """One CSV record as ``pull.write_rows`` writes it (Python's ``csv``, excel dialect), without its ``\\r\\n``."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue()[:-2]


def write_table(session: Any, records: Any, columns: list[str], path: Path, *, buckets: int = BUCKETS) -> Path:
    """Write ``records`` (an RDD of ``(table_key, {column: text})``, ``columns`` naming an ``observation_id``) to
    ``path``: CSV when it ends in ``.csv``, else a Parquet directory partitioned by subject bucket when the
    columns have a ``subject_id`` (the module's docstring), one file otherwise. Replaces what is there."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    if path.suffix == ".csv":
        schema = StructType([StructField(n, StringType()) for n in (ORDER, "observation_id", "line")])
        lines = records.map(lambda kr: (kr[0], kr[1]["observation_id"], csv_line(kr[1].get(c, "") for c in columns)))
        header = session.createDataFrame([("", "", csv_line(columns))], schema)  # every key has \x1f in it: first
        table = session.createDataFrame(lines, schema).unionByName(header)
        return _single_text(table.orderBy(ORDER, "observation_id").select("line").coalesce(1), path)
    schema = StructType([StructField(ORDER, StringType())] + [StructField(c, StringType()) for c in columns])
    frame = session.createDataFrame(records.map(lambda kr: (kr[0], *(kr[1].get(c, "") for c in columns))), schema)
    if "subject_id" not in columns:  # the rejects: few, unsorted by subject; one file in their order
        frame.orderBy(ORDER, "observation_id").drop(ORDER).coalesce(1).write.mode("overwrite").parquet(
            path.resolve().as_uri()
        )
        return path
    bucket = F.pmod(F.xxhash64("subject_id"), F.lit(buckets))
    (
        frame.withColumn("subject_bucket", bucket)
        .repartition("subject_bucket")
        .sortWithinPartitions("subject_bucket", ORDER, "observation_id")
        .drop(ORDER)
        .write.mode("overwrite")
        .partitionBy("subject_bucket")
        .parquet(path.resolve().as_uri())
    )
    return path


def _single_text(frame: Any, path: Path) -> Path:
    """Write a one-partition frame of one text column as the file ``path`` (Spark's one ``part-*`` file)."""
    scratch = path.with_name(f".{path.name}.spark-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        frame.write.mode("overwrite").option("lineSep", "\r\n").text(scratch.resolve().as_uri())
        (part,) = sorted(scratch.glob("part-*"))
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return path


def remove_output(path: Path) -> None:
    """Remove an output file or directory of an earlier run, if there is one."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
