"""The lab table from NDJSON on Spark: Pathling runs the lab view, the executors classify its facts.

What runs where:
- the driver reads the small resource types (ResearchStudy, ResearchSubject, Encounter, Procedure) with plain
  Python and decides, with the pull's ``Subjects``, who is enrolled and each subject's day 0, exactly as the
  local and the search-based pulls do; the subjects travel to the executors with the task (a few KB);
- Spark reads the Observation lines; Pathling encodes them and runs mappings/views/lab_observation.json; the
  same lines give the three literal values the view cannot keep (``view.RAW_FIELDS``), joined by id;
- each executor folds the view's rows into LabFacts and applies pull's rules: the lab selection
  (``LabSelection.wanted``), then ``reverse.classify_fact`` (status, catalogue code, unit normalisation,
  reference range, visit window), since a view can neither convert units nor assign windows;
- the driver collects the rows, keeps one per Observation id (the newest version, as the pull store does) and
  sorts them as the pull's table is sorted (``pull.table_order``).
Nothing here names a local path: the input directory must be readable by the driver and the executors alike
(a shared or distributed file system on a cluster).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

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
    observation_fact,
    patient_of,
    split_ndjson,
    table_order,
)
from fhir_lupus.spark._session import local_session, require_spark
from fhir_lupus.spark._view import RAW_FIELDS, fact_resource, facts_from_rows, load_lab_view, with_raw
from fhir_lupus.terminology import LabCatalogue

__all__ = ["SparkLabs", "spark_labs"]


@dataclass
class SparkLabs:
    """The lab table of an NDJSON directory: rows and results set aside, in the pull's order, and counts."""

    rows: list[PulledLab]
    unmapped: list[UnmappedResult]
    subjects: int
    skipped_subjects: Counter[str] = field(default_factory=Counter)  # ResearchSubjects not enrolled, by status
    others: int = 0  # Observations of Patients who are no enrolled subject
    files: int = 0  # NDJSON files with Observations handed to Spark


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

    def classify(self, facts: Iterable[LabFact]) -> Iterator[tuple[str, Any]]:
        """``("row", PulledLab)`` / ``("unmapped", UnmappedResult)`` per selected fact, ``("other", id)`` for
        a result of a Patient who is no subject, nothing for a result the selection leaves out."""
        for fact in facts:
            resource = fact_resource(fact)
            subject = self.subjects.get(patient_of(resource))
            if subject is None:
                yield "other", fact.observation_id
                continue
            if not self.selection.wanted(resource, subject.floor):
                continue
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
    *,
    spark: Any = None,
    master: str = "local[*]",
    pathling_jar: Path | None = None,
    window_days: int | None = None,
    lookback_days: int | None = None,
) -> SparkLabs:
    """The study's lab table from the NDJSON files of ``ndjson_dir`` (a bulk export, ``map --format ndjson``).

    ``spark``: a running SparkSession with the Pathling jar (a cluster's); else a session on ``master`` is made
    (``session.local_session``). The result equals ``pull._local.labs_from_ndjson`` over the same files. The
    mappings are the catalogue's pack (``catalogue.pack``): its pull rules, lifecycle and lab view.
    """
    require_spark()
    folder = Path(ndjson_dir)
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
    result = SparkLabs(rows=[], unmapped=[], subjects=len(task.subjects), skipped_subjects=subjects.skipped)
    result.files = len(with_observations)
    if not with_observations:
        return result

    session = spark if spark is not None else local_session(master, pathling_jar=pathling_jar)
    facts = _facts(session, with_observations, view, task.rules, normal_range(catalogue))
    try:
        records: list[tuple[str, Any]] = facts.mapPartitions(task.classify).collect()
    except Exception as exc:  # Py4JJavaError; its text carries HAPI's reason
        if "DataFormatException" not in str(exc):
            raise
        reason = next((line for line in str(exc).splitlines() if "DataFormatException" in line), str(exc))
        raise FhirLupusError(
            f"{folder}: an Observation is not valid FHIR R4 for Pathling's parser "
            f"({reason.split('DataFormatException:')[-1].strip()}); `fhir-lupus pull` and the local path set such "
            "a result aside, the Spark path needs valid resources"
        ) from None

    newest: dict[str, PulledLab | UnmappedResult] = {}
    for kind, record in records:
        if kind == "other":
            result.others += 1
            continue
        kept = newest.get(record.observation_id)
        if kept is None or newer_record(record, kept):
            newest[record.observation_id] = record
    ordered = table_order(newest.values())
    result.rows = [r for r in ordered if isinstance(r, PulledLab)]
    result.unmapped = [r for r in ordered if isinstance(r, UnmappedResult)]
    return result


def _facts(session: Any, files: list[Path], view: dict[str, Any], rules: PullRules, normal: tuple[str, str]) -> Any:
    """An RDD of the LabFacts of the Observations in ``files``: by the view, plus the literal text of
    ``RAW_FIELDS`` joined by id and version; a status outside mappings/fhir/pull.yaml straight from the JSON.

    Pathling's parser (HAPI's, strict about coded values) refuses an Observation whose status is not an
    Observation status and stops the whole job, while pull sets such a result aside with its reason. So those
    lines (and lines without a status) skip the view: the executors read their fact with ``observation_fact``,
    the rule the view mirrors, and ``classify_fact`` gives them the same reason pull gives.
    """
    from pathling import PathlingContext
    from pyspark.sql import functions as F

    pathling = PathlingContext.create(spark=session, enable_terminology=False)
    lines = session.read.text([str(p.resolve()) for p in files]).filter(
        F.get_json_object("value", "$.resourceType") == "Observation"
    )
    status = F.get_json_object("value", "$.status")
    known = status.isin(sorted(rules.rows | rules.pending | rules.withdrawn))
    viewed, odd = lines.filter(known), lines.filter(~known | status.isNull())
    encoded = pathling.encode(viewed, "Observation")
    view_rows = pathling.read.datasets({"Observation": encoded}).view(json=json.dumps(view))
    # every column as text: the rows of Pathling 9.4's view fail on their way to Python (``.rdd``: index out of
    # bounds in EvaluatePython) until each column is cast to a plain Spark type
    rows = view_rows.select(*(F.col(name).cast("string") for name in view_rows.columns))
    raw = viewed.select(
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
    joined = facts.join(texts).map(lambda pair: with_raw(pair[1][0], *pair[1][1]))
    return joined.union(odd.rdd.map(lambda r: observation_fact(orjson.loads(r["value"]), normal)))
