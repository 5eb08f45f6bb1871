"""The lab table from NDJSON on Spark: Pathling runs the lab view, the executors classify, Spark writes.

What runs where:
- the driver reads the small resource types (ResearchStudy, ResearchSubject, Encounter, Procedure) with plain
  Python and decides, with the pull's ``Subjects``, who is enrolled and each subject's day 0, exactly as the
  local and the search-based pulls do; the subjects travel to the executors with the task (a few KB);
- the executors read the Observation lines as text, numbered per file, and screen each (``_screen.Screen``):
  a line that is no FHIR resource goes to the rejects with its file, line and reason; an Observation the parser
  may refuse is read from its JSON; the others go to Pathling, which runs mappings/views/lab_observation.json;
  the same lines give the three literal values the view cannot keep (``view.RAW_FIELDS``), joined by id;
- the executors fold the view's rows into LabFacts and apply pull's rules: the lab selection
  (``LabSelection.wanted``), then ``reverse.classify_fact`` (status, catalogue code, unit normalisation,
  reference range, visit window), since a view can neither convert units nor assign windows;
- Spark keeps one record per Observation id (the newest version, ``pull.newer_record``, as the pull store
  merges), sorts by the pull's order (``pull.table_key``) and writes the outputs (``_write.write_table``).
The driver receives counts only, never a row. Nothing here names a local path but the outputs' directory: the
input must be readable by the driver and the executors alike (a shared or distributed file system on a cluster).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from fhir_lupus.errors import FhirLupusError
from fhir_lupus.model import StudyDefinition
from fhir_lupus.pull import (
    CodeIndex,
    LabFact,
    LabSelection,
    PulledLab,
    PullRules,
    Subject,
    Subjects,
    UnmappedResult,
    classify_fact,
    newer_record,
    normal_range,
    patient_of,
    split_ndjson,
    table_key,
    unmapped_path,
)
from fhir_lupus.spark._screen import Reject, Screen, Where
from fhir_lupus.spark._session import local_session, require_spark
from fhir_lupus.spark._view import RAW_FIELDS, fact_resource, facts_from_rows, load_lab_view, with_raw
from fhir_lupus.spark._write import BUCKETS, remove_output, write_table
from fhir_lupus.terminology import LabCatalogue

__all__ = ["SparkLabs", "rejects_path", "spark_labs"]

_READ_ERRORS = (AttributeError, KeyError, TypeError, ValueError)  # a fact read from odd JSON, classified


@dataclass
class SparkLabs:
    """What a run wrote, and its counts: the rows themselves are in the outputs, never in the driver."""

    output: Path  # the lab rows (a Parquet directory, or a .csv file)
    unmapped_output: Path  # results set aside by the pull's rules, as pull's labs.unmapped
    rejects_output: Path  # lines no rule could read: file, line, observation id, reason
    rows: int = 0
    unmapped: int = 0
    rejected: int = 0
    outside: int = 0  # rows outside every visit window
    subjects: int = 0
    skipped_subjects: Counter[str] = field(default_factory=Counter)  # ResearchSubjects not enrolled, by status
    others: int = 0  # Observations of Patients who are no enrolled subject
    files: int = 0  # NDJSON files with Observations handed to Spark


def rejects_path(output: Path) -> Path:
    """Where the rejects of ``output`` go: ``labs.csv`` -> ``labs.rejects.csv`` (as ``pull.unmapped_path``)."""
    return output.with_name(output.stem + ".rejects" + output.suffix)


@dataclass(frozen=True)
class _Task:
    """What an executor needs to classify facts: small, picklable, shipped with each task."""

    subjects: dict[str, Subject]  # Patient/<id> -> the enrolled subject, with day 0, floor, end of participation
    selection: LabSelection
    by_code: CodeIndex
    catalogue: LabCatalogue
    study: StudyDefinition
    window: int
    rules: PullRules

    def classify(self, facts: Iterable[tuple[Where | None, LabFact]]) -> Iterator[tuple[str, Any]]:
        """``("row", PulledLab)`` / ``("unmapped", UnmappedResult)`` per selected fact, ``("other", id)`` for
        a result of a Patient who is no subject, nothing for a result the selection leaves out; a fact read
        from the JSON (``where`` given) that the rules cannot read gives ``("reject", Reject)``."""
        for where, fact in facts:
            if where is None:
                yield from self._one(fact)
                continue
            try:
                yield from list(self._one(fact))
            except _READ_ERRORS as exc:
                yield "reject", Reject(*where, fact.observation_id, f"unreadable Observation ({exc!r})")

    def _one(self, fact: LabFact) -> Iterator[tuple[str, Any]]:
        resource = fact_resource(fact)
        subject = self.subjects.get(patient_of(resource))
        if subject is None:
            yield "other", fact.observation_id
            return
        if not self.selection.wanted(resource, subject.floor):
            return
        record = classify_fact(
            fact,
            subject.subject_id,
            self.by_code,
            self.catalogue,
            self.study,
            subject.anchor,
            self.window,
            self.rules,
            end=subject.end,
        )
        yield ("row" if isinstance(record, PulledLab) else "unmapped"), record


def spark_labs(
    ndjson_dir: Path | str,
    study: StudyDefinition,
    catalogue: LabCatalogue,
    output: Path | str,
    *,
    spark: Any = None,
    master: str = "local[*]",
    pathling_jar: Path | None = None,
    window_days: int | None = None,
    lookback_days: int | None = None,
    buckets: int = BUCKETS,
) -> SparkLabs:
    """The study's lab table from the NDJSON files of ``ndjson_dir`` (a bulk export, ``map --format ndjson``),
    written by Spark to ``output`` (a Parquet directory partitioned by subject bucket, or one CSV file when it
    ends in ``.csv``), with ``pull.unmapped_path(output)`` and ``rejects_path(output)`` beside it.

    ``spark``: a running SparkSession with the Pathling jar (a cluster's); else a session on ``master`` is made
    (``session.local_session``). The rows equal ``pull._local.labs_from_ndjson``'s over the same files, in its
    order. The mappings are the catalogue's pack (``catalogue.pack``): its pull rules, lifecycle and lab view.
    """
    require_spark()
    folder, output = Path(ndjson_dir), Path(output)
    if not folder.is_dir():
        raise FhirLupusError(f"{folder}: not a directory of NDJSON files")
    context, with_observations = split_ndjson(sorted(folder.glob("*.ndjson")))
    subjects = Subjects(study, catalogue, window_days=window_days, lookback_days=lookback_days)
    day_zero = subjects.take(context)
    enrolled = {ref: subjects.subject(ref, day_zero) for ref in subjects.rows}
    task = _Task(
        subjects={ref: s for ref, s in enrolled.items() if s is not None},
        selection=subjects.selection,
        by_code=subjects.by_code,
        catalogue=catalogue,
        study=study,
        window=subjects.window,
        rules=subjects.rules,
    )
    view = load_lab_view(normal_range(catalogue), catalogue.pack)
    result = SparkLabs(output, unmapped_path(output), rejects_path(output), subjects=len(task.subjects))
    result.skipped_subjects, result.files = subjects.skipped, len(with_observations)
    session = spark if spark is not None else local_session(master, pathling_jar=pathling_jar)
    try:
        _run(session, with_observations, view, task, result, buckets)
    except Exception as exc:  # Py4JJavaError; its text carries HAPI's reason
        if "DataFormatException" not in str(exc):
            raise
        reason = next((line for line in str(exc).splitlines() if "DataFormatException" in line), str(exc))
        raise FhirLupusError(
            f"{folder}: an Observation is not valid FHIR R4 for Pathling's parser "
            f"({reason.split('DataFormatException:')[-1].strip()}), in a way the Spark path's screen does not "
            "foresee (docs/spark.md); `fhir-lupus pull` and the local path set such a result aside"
        ) from None
    return result


def _run(session: Any, files: list[Path], view: dict[str, Any], task: _Task, result: SparkLabs, buckets: int) -> None:
    """The Spark part of ``spark_labs``: screen, view, classify, keep the newest, write; counts into ``result``."""
    from pyspark import StorageLevel

    rules, normal = task.rules, normal_range(task.catalogue)
    screen = Screen(rules.rows | rules.pending | rules.withdrawn, rules.quantity_comparators, normal)
    screened = _lines(session, files).mapPartitions(screen).persist(StorageLevel.MEMORY_AND_DISK)
    texts = screened.filter(lambda kv: kv[0] == "view").map(lambda kv: (kv[1],))
    viewed = _view_facts(session, session.createDataFrame(texts, "value string"), view)
    from_json = screened.filter(lambda kv: kv[0] == "fact").map(lambda kv: kv[1])
    classified = viewed.union(from_json).mapPartitions(task.classify).persist(StorageLevel.MEMORY_AND_DISK)
    kept = (
        classified.filter(lambda kr: kr[0] in ("row", "unmapped"))
        .map(lambda kr: (kr[1].observation_id, kr))
        .reduceByKey(_newest)
        .map(lambda pair: (pair[1][0], table_key(pair[1][1]), dict(vars(pair[1][1]))))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    rejects = screened.filter(lambda kv: kv[0] == "reject").union(classified.filter(lambda kr: kr[0] == "reject"))
    try:
        tags = kept.map(lambda k: "outside" if k[0] == "row" and k[2]["window"] != "in-window" else k[0])
        others = classified.map(lambda kr: "other" if kr[0] == "other" else "")
        counted = Counter(tags.union(others).union(rejects.map(lambda _: "reject")).countByValue())
        outputs = (("row", PulledLab, result.output), ("unmapped", UnmappedResult, result.unmapped_output))
        for kind, row_type, path in outputs:
            records = kept.filter(lambda k, kind=kind: k[0] == kind).map(lambda k: (k[1], k[2]))
            write_table(session, records, _columns(row_type), path, buckets=buckets)
        if counted["reject"]:  # a rejects output only when there are some: an empty one would cost a sort
            reject_records = rejects.map(
                lambda kr: (f"{kr[1].file}\x1f{kr[1].line:012d}", {k: str(v) for k, v in asdict(kr[1]).items()})
            )
            write_table(session, reject_records, _columns(Reject), result.rejects_output, buckets=buckets)
        else:
            remove_output(result.rejects_output)  # a previous run's, which would now be wrong
    finally:
        for cached in (kept, classified, screened):
            cached.unpersist()
    result.outside = counted["outside"]
    result.rows, result.unmapped = counted["row"] + result.outside, counted["unmapped"]
    result.others, result.rejected = counted["other"], counted["reject"]


def _newest(kept: tuple[str, Any], other: tuple[str, Any]) -> tuple[str, Any]:
    """Of two copies of one Observation, the one the pull store keeps (``newer_record``)."""
    return other if newer_record(other[1], kept[1]) else kept


def _columns(row_type: type) -> list[str]:
    return [f.name for f in fields(row_type)]


def _lines(session: Any, files: list[Path]) -> Any:
    """An RDD of ``((file, line number), text)`` over ``files``: each file numbered from 1, as an editor counts
    (a per-partition count runs first; only those counts reach the driver). ``file:`` URIs: the same path on the
    driver and every executor (a cluster's default file system, HDFS say, is not where the driver listed them)."""
    context = session.sparkContext
    numbered = [
        context.textFile(path.resolve().as_uri())
        .zipWithIndex()
        .map(lambda pair, name=str(path): ((name, pair[1] + 1), pair[0]))
        for path in files
    ]
    return context.union(numbered) if numbered else context.emptyRDD()


def _view_facts(session: Any, lines: Any, view: dict[str, Any]) -> Any:
    """An RDD of ``(None, LabFact)`` for the Observation ``lines`` (a frame of one text column ``value``): by the
    view, plus the literal text of ``RAW_FIELDS`` joined by id and version."""
    from pathling import PathlingContext
    from pyspark.sql import functions as F

    pathling = PathlingContext.create(spark=session, enable_terminology=False)
    encoded = pathling.encode(lines, "Observation")
    view_rows = pathling.read.datasets({"Observation": encoded}).view(json=json.dumps(view))
    # every column as text: the rows of Pathling 9.4's view fail on their way to Python (``.rdd``: index out of
    # bounds in EvaluatePython) until each column is cast to a plain Spark type
    rows = view_rows.select(*(F.col(name).cast("string") for name in view_rows.columns))
    raw = lines.select(
        F.get_json_object("value", "$.id").alias("id"),
        F.get_json_object("value", "$.meta.versionId").alias("version"),
        *(F.get_json_object("value", path).alias(name) for name, path in RAW_FIELDS.items()),
    )
    names = list(RAW_FIELDS)
    # keyed by id and versionId: copies of one version are the same resource (a bulk export may list a result
    # twice), so the join never pairs one version's view row with another version's text
    facts = rows.rdd.mapPartitions(
        lambda part: (((f.observation_id, f.version_id), f) for f in facts_from_rows(r.asDict() for r in part))
    )
    texts = raw.rdd.map(lambda r: ((r["id"] or "", r["version"] or ""), tuple(r[n] for n in names))).distinct()
    return facts.join(texts).map(lambda pair: (None, with_raw(pair[1][0], *pair[1][1])))
