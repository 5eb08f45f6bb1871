"""The map step: accepted trial records -> validated FHIR resources, with per-record failure handling.

A record whose resource does not validate is refused like a bad input row (file, line, reason) instead of
stopping the run; records that depend on it (a subject's labs) are refused with it. Study-level resources
come from mappings/ and must validate, or the run stops with a MappingError.

``iter_mapped`` maps one loaded trial (or chunk of one) subject by subject (a subject's resources refer only to
each other and to the study level); ``stream_trial`` maps a ``TrialSource`` (fhir_lupus/source.py) chunk by
chunk, and ``map_trial`` collects what it yields in one list. Streaming keeps memory flat for trials many times
the example (issue 12); fhir_lupus/streaming.py, push and the registry package write what they stream.
Validation runs in process or, with ``workers``, in worker processes (fhir_lupus/_workers.py), same output.
(Over 400 lines: the stages of a subject's map and the index of its records are one order, changed together.)
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TypeVar

from fhir_lupus._workers import ValidationPool, map_validated, validation_pool
from fhir_lupus.errors import FhirLupusError, MappingError, RejectedRows
from fhir_lupus.mappers import (
    MappingContext,
    Resource,
    conditioned_infusion,
    map_adverse_event,
    map_encounter,
    map_enrollment_group,
    map_lab_observation,
    map_medication_administration,
    map_medication_statement,
    map_patient,
    map_procedure,
    map_project_codesystem,
    map_research_study,
    map_research_subject,
    map_schedule_of_activities,
    map_site_location,
    map_sledai_observation,
    map_sponsor_organization,
    map_treg_observation,
    to_r5,
)
from fhir_lupus.model import LoadReport, Located, Subject, TrialData
from fhir_lupus.scoring import load_sledai_definition
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import MappingPack, UnitConverter, load_pack
from fhir_lupus.validation import FhirVersion, validate_resource

__all__ = [
    "STAGES",
    "MapResult",
    "MappedBatch",
    "MappedResource",
    "iter_mapped",
    "make_context",
    "map_trial",
    "refuse_rejected",
    "stream_trial",
]

R = TypeVar("R")


@dataclass
class MapResult:
    resources: list[Resource]
    fhir_version: FhirVersion

    @property
    def counts(self) -> Counter[str]:
        return Counter(resource["resourceType"] for resource in self.resources)


def make_context(data: TrialData, pack: MappingPack | None = None) -> MappingContext:
    """What the mappers of ``data`` need: its study and ``pack`` (default: ``load_pack()``)."""
    pack = pack or load_pack()
    return MappingContext(study=data.study, pack=pack, units=UnitConverter(pack), sledai=load_sledai_definition(pack))


# The stages of the map step, in the order map_trial has always emitted them: a resource's stage and source line
# put the streamed resources back into that order (map_trial) or sort them into per-stage files (the writers).
STAGES = (
    "study",
    "subjects",
    "visits",
    "procedures",
    "labs",
    "sledai",
    "treg",
    "medications",
    "administrations",
    "adverse_events",
)


@dataclass(frozen=True)
class MappedResource:
    """One validated resource with the stage (index into STAGES) and source line it was mapped from."""

    stage: int
    line: int
    resource: Resource


@dataclass(frozen=True)
class MappedBatch:
    """The study-level resources (``subject_id`` None, always first) or everything mapped for one subject."""

    subject_id: str | None
    items: tuple[MappedResource, ...]

    @property
    def resources(self) -> list[Resource]:
        return [item.resource for item in self.items]


def map_trial(
    trial: TrialSource,
    *,
    fhir_version: FhirVersion = "R4",
    settings: Settings | None = None,
    workers: int | None = 1,
) -> MapResult:
    """Map every accepted record; refused ones are added to the trial's report. Output order is deterministic.

    All of it in one list, in stage order and, within a stage, in source-file order. For a trial too large to
    hold, use ``stream_trial``, which yields the same resources subject by subject. ``settings``: the mapping pack
    and the validation path (default: ``Settings.default()``); ``workers``: as for ``stream_trial``.
    """
    batches = stream_trial(trial, fhir_version=fhir_version, settings=settings, workers=workers)
    items = [item for batch in batches for item in batch.items]
    items.sort(key=lambda item: (item.stage, item.line))  # stable: a Patient stays before its ResearchSubject
    return MapResult(resources=[item.resource for item in items], fhir_version=fhir_version)


def iter_mapped(
    data: TrialData,
    report: LoadReport,
    *,
    fhir_version: FhirVersion = "R4",
    settings: Settings | None = None,
    trusted: Callable[[Resource], bool] | None = None,
    workers: int | None = 1,
) -> Iterator[MappedBatch]:
    """Map the trial one subject at a time, so a caller can write (or send) each batch and let it go.

    The study-level resources come first (MappingError if they do not map); then one batch per subject of
    ``data.subjects``, in that order, holding its Patient, ResearchSubject and everything that refers to them.
    Every resource is validated. A record that does not map is refused into ``report`` (and with a subject that
    does not map, all of its records), exactly as ``map_trial`` always did: a batch never refers to a resource of
    another subject, only to its own and to the study-level ones, so nothing else needs to be kept.

    ``trusted``: resources it accepts are not validated again. Push passes "the journal holds exactly this
    content as confirmed on the server", which was validated before it was sent: a second push with nothing
    changed then costs the map and the hashing, not the validation (most of the map's time).

    ``workers``: processes that validate the subjects' resources (fhir_lupus/_workers.py) while this one maps the
    next subjects; 1 validates here, None starts one per CPU. The batches, their order and the refusals are the
    same for every value.
    """
    settings = settings or Settings.default()
    with validation_pool(workers, settings.pack, fhir_version, settings.validation) as pool:
        yield from _iter_mapped(data, report, fhir_version, settings, trusted, pool)


def _iter_mapped(
    data: TrialData,
    report: LoadReport,
    fhir_version: FhirVersion,
    settings: Settings,
    trusted: Callable[[Resource], bool] | None,
    pool: ValidationPool | None,
    skip: Callable[[str], bool] | None = None,
) -> Iterator[MappedBatch]:
    """``iter_mapped`` with the run's pool (None: validation in process), which lives across a trial's chunks;
    ``skip``: as for ``stream_trial``."""
    ctx = make_context(data, settings.pack)
    validation = settings.validation  # "fast" or "strict": fhir_lupus.validation

    def finish(resource: Resource) -> Resource:
        final = to_r5(resource, ctx) if fhir_version == "R5" else resource
        if trusted is None or not trusted(final):
            validate_resource(final, fhir_version, validation=validation, pack=ctx.pack)
        return final

    study: list[MappedResource] = []
    for study_mapper in (
        map_project_codesystem,
        map_sponsor_organization,
        map_site_location,
        map_enrollment_group,
        map_research_study,
    ):
        try:
            study.append(MappedResource(0, 0, finish(study_mapper(ctx))))
        except FhirLupusError as exc:
            raise MappingError(f"study definition {data.study.nct_id} does not map: {exc}") from exc
    try:  # the schedule of activities (ResearchStudy.protocol): ActivityDefinitions and PlanDefinitions
        study.extend(MappedResource(0, 0, finish(resource)) for resource in map_schedule_of_activities(ctx))
    except FhirLupusError as exc:
        raise MappingError(f"schedule of activities of {data.study.nct_id} does not map: {exc}") from exc
    study_refs = frozenset(f"{item.resource['resourceType']}/{item.resource['id']}" for item in study)
    yield MappedBatch(None, tuple(study))

    enrolled = {row.record.subject_id for row in data.subjects}
    per_subject = _SubjectRows(data, enrolled)
    jobs = (
        functools.partial(_map_subject, row, rows, data, ctx, study_refs)
        for row, rows in per_subject.each(data.subjects, skip)
    )
    if pool is None:
        for job in jobs:
            batch = job(report, finish)
            if batch is not None:
                yield batch
    else:  # mapped here, validated by the workers (fhir_lupus/_workers.py: the same batches and refusals)
        convert: Callable[[Resource], Resource] = (lambda r: to_r5(r, ctx)) if fhir_version == "R5" else (lambda r: r)
        yield from map_validated(jobs, report, finish, convert, trusted, pool)
    per_subject.reject_orphans(report)


def _map_subject(
    row: Located[Subject],
    rows: _Rows,
    data: TrialData,
    ctx: MappingContext,
    study_refs: frozenset[str],
    report: LoadReport,
    finish: Callable[[Resource], Resource],
) -> MappedBatch | None:
    """One subject's batch (None when its Patient or ResearchSubject does not map: then all its rows are refused)."""
    subject_id = row.record.subject_id
    mapped = _map_record(
        row,
        report,
        lambda s: [
            finish(map_patient(s, ctx)),
            finish(
                map_research_subject(s, ctx, data.status_history.get(s.subject_id, ()), end=_end_of(data, s.subject_id))
            ),
        ],
    )
    if mapped is None:
        rows.reject_all(report, subject_id)
        return None
    batch = _SubjectBatch(row.record, study_refs, [MappedResource(1, row.line, r) for r in mapped])
    batch.map(rows.visits, 2, lambda v, s: map_encounter(v, s, ctx), report, finish)
    batch.map(rows.procedures, 3, lambda p, s: map_procedure(p, s, ctx), report, finish)
    batch.map(rows.labs, 4, lambda c, s: map_lab_observation(c, s, ctx), report, finish)
    batch.map(rows.sledai, 5, lambda a, s: map_sledai_observation(a, s, ctx), report, finish)
    batch.map(rows.treg, 6, lambda t, s: map_treg_observation(t, s, ctx), report, finish)
    # Prior regimens of enrolled subjects (a candidate who did not enrol stays in the screening log, off the
    # server), and the cyclophosphamide pretreatment also as a MedicationAdministration, part of its infusion.
    batch.map(rows.medications, 7, lambda m, s: map_medication_statement(m, s, ctx), report, finish)

    def administration(pretreatment: Any, subject: Subject) -> Resource:
        infusion = conditioned_infusion(pretreatment, [p.record for p in rows.procedures])
        procedure = f"Procedure/{ctx.resource_id('Procedure', ctx.nct_id, infusion.procedure_id)}" if infusion else ""
        if procedure not in batch.refs:
            infusion = None  # none, or its Procedure was refused: no reference to a resource that is not sent
        return map_medication_administration(pretreatment, infusion, subject, ctx)

    def adverse_event(event: Any, subject: Subject) -> Resource:
        return map_adverse_event(event, subject, ctx, mapped=batch.refs)

    batch.map(rows.pretreatments, 8, administration, report, finish)
    # adverse events last: they refer to the treatments (Procedure, MedicationAdministration) mapped above
    batch.map(rows.adverse_events, 9, adverse_event, report, finish)
    return MappedBatch(subject_id, tuple(batch.items))


def refuse_rejected(
    batches: Iterator[MappedBatch], report: LoadReport, *, allow_rejects: bool
) -> Iterator[MappedBatch]:
    """``batches``, then RejectedRows when ``report`` holds a refused row and ``allow_rejects`` is not given.

    A writer that puts its output in place only after the last batch (fhir_lupus/streaming.py, the registry
    package) then writes nothing: a derived value computed without a refused row must not be published unless
    the caller asked for it (and then it is marked preliminary).
    """
    yield from batches
    if report.rejects and not allow_rejects:
        raise RejectedRows(sum(report.rejected.values()))


def stream_trial(
    trial: TrialSource,
    *,
    fhir_version: FhirVersion = "R4",
    settings: Settings | None = None,
    on_chunk: Callable[[TrialData], None] | None = None,
    trusted: Callable[[Resource], bool] | None = None,
    workers: int | None = 1,
    skip: Callable[[str], bool] | None = None,
) -> Iterator[MappedBatch]:
    """Map a trial a chunk of subjects at a time (``TrialSource.chunks``), in flat memory.

    Yields what ``iter_mapped`` yields for the whole trial: the study-level batch once, then one batch per
    subject; refused rows of the loader and of the map go to the trial's report. ``on_chunk`` sees each chunk's
    entities before they are mapped. A trial of one chunk is mapped exactly as ``iter_mapped`` maps it.
    ``trusted``, ``workers``: as for ``iter_mapped`` (the workers start before the first chunk loads and serve
    every chunk). ``skip``: subjects (by id) not mapped at all, no batch yielded (push: their inputs did not change
    since their resources were confirmed on the server); the study-level batch is always mapped.
    """
    settings = settings or Settings.default()
    study_sent = False
    with validation_pool(workers, settings.pack, fhir_version, settings.validation) as pool:
        for data in trial.chunks():
            if on_chunk is not None:
                on_chunk(data)
            batches = _iter_mapped(data, trial.report, fhir_version, settings, trusted, pool, skip)
            study = next(batches)  # mapped again for each chunk (a few dozen resources): the subjects refer to them
            if not study_sent:
                yield study
                study_sent = True
            yield from batches
            del data, batches  # let this chunk go before the next one loads


_Mapper = Callable[[Any, Subject], Resource]


class _SubjectBatch:
    """The resources mapped so far for one subject, and the references they (and the study) answer."""

    def __init__(self, subject: Subject, study_refs: frozenset[str], items: list[MappedResource]) -> None:
        self.subject = subject
        self.items = items
        self.refs = set(study_refs) | {f"{i.resource['resourceType']}/{i.resource['id']}" for i in items}

    def map(
        self,
        rows: list[Located[Any]],
        stage: int,
        mapper: _Mapper,
        report: LoadReport,
        finish: Callable[[Resource], Resource],
    ) -> None:
        for row in rows:
            mapped = _map_record(row, report, lambda record: [finish(mapper(record, self.subject))])
            for resource in mapped or ():
                self.items.append(MappedResource(stage, row.line, resource))
                self.refs.add(f"{resource['resourceType']}/{resource['id']}")


@dataclass
class _Rows:
    """One subject's accepted records, each list in source-file order (references to the loaded rows, no copies)."""

    visits: list[Located[Any]] = field(default_factory=list)
    procedures: list[Located[Any]] = field(default_factory=list)
    labs: list[Located[Any]] = field(default_factory=list)
    sledai: list[Located[Any]] = field(default_factory=list)
    treg: list[Located[Any]] = field(default_factory=list)
    medications: list[Located[Any]] = field(default_factory=list)
    pretreatments: list[Located[Any]] = field(default_factory=list)
    adverse_events: list[Located[Any]] = field(default_factory=list)

    def in_stage_order(self) -> list[list[Located[Any]]]:
        return [
            self.visits,
            self.procedures,
            self.labs,
            self.sledai,
            self.treg,
            self.medications,
            self.pretreatments,
            self.adverse_events,
        ]

    def reject_all(self, report: LoadReport, subject_id: str) -> None:
        """Refuse the records of a subject that could not be mapped (a pretreatment twice, as two stages)."""
        for rows in self.in_stage_order():
            for row in rows:
                report.reject(row, "subject_id", f"subject {subject_id} could not be mapped")


class _SubjectRows:
    """The trial's records indexed by subject, so each batch takes its own without scanning the whole trial."""

    def __init__(self, data: TrialData, enrolled: set[str]) -> None:
        self._by_subject: dict[str, _Rows] = {}
        sources: tuple[tuple[str, list[Located[Any]], Callable[[Any], str]], ...] = (
            ("visits", data.visits, lambda v: v.subject_id),
            ("procedures", data.procedures, lambda p: p.subject_id),
            ("labs", data.labs, lambda c: c.lab.subject_id),
            ("sledai", data.sledai, lambda a: a.assessment.subject_id),
            ("treg", data.treg, lambda t: t.subject_id),
            ("medications", [m for m in data.medications if m.record.subject_id in enrolled], lambda m: m.subject_id),
            (
                "pretreatments",
                [p for p in data.procedures if p.record.kind == "cyclophosphamide_pretreatment"],
                lambda p: p.subject_id,
            ),
            ("adverse_events", data.adverse_events, lambda e: e.event.subject_id),
        )
        for name, rows, subject_of in sources:
            for row in rows:
                getattr(self._by_subject.setdefault(subject_of(row.record), _Rows()), name).append(row)

    def each(
        self, subjects: list[Located[Subject]], skip: Callable[[str], bool] | None
    ) -> Iterator[tuple[Located[Subject], _Rows]]:
        """Each subject with its rows, those ``skip`` names left out (their rows taken too: not orphans)."""
        for row in subjects:
            rows = self._by_subject.pop(row.record.subject_id, None) or _Rows()
            if skip is None or not skip(row.record.subject_id):
                yield row, rows

    def reject_orphans(self, report: LoadReport) -> None:
        """Records whose subject is not in the trial at all (a hand-made TrialData; the loader refuses them)."""
        for subject_id, rows in self._by_subject.items():
            rows.reject_all(report, subject_id)
        self._by_subject.clear()


def _end_of(data: TrialData, subject_id: str) -> date | None:
    """The end of the subject's participation (fhir_lupus/model/_timeline.py), when the load resolved one."""
    timeline = data.timelines.get(subject_id)
    end = timeline.end if timeline is not None else None
    return end.day if end is not None else None


def _map_record(row: Located[R], report: LoadReport, build: Callable[[R], list[Resource]]) -> list[Resource] | None:
    try:
        return build(row.record)
    except FhirLupusError as exc:
        report.reject(row, None, f"does not map to valid FHIR: {exc}")
        return None
