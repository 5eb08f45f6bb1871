"""The whole-list map step as it was before streaming (issue 12), kept as the oracle for tests/test_streaming.py.

``fhir_lupus.pipeline.iter_mapped`` maps subject by subject; this maps stage by stage over the whole trial, the
way ``map_trial`` did. The streaming path must give the same resources, rejects and findings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fhir_lupus.errors import FhirLupusError, MappingError
from fhir_lupus.mappers import (
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
    map_site_location,
    map_sledai_observation,
    map_sponsor_organization,
    map_treg_observation,
)
from fhir_lupus.mappers._context import Resource
from fhir_lupus.mappers._medication_administration import conditioned_infusion
from fhir_lupus.mappers._r5 import to_r5
from fhir_lupus.mappers._schedule import map_schedule_of_activities
from fhir_lupus.model._entities import Subject
from fhir_lupus.model._loader import TrialData
from fhir_lupus.model._records import LoadReport, Located
from fhir_lupus.pipeline import make_context
from fhir_lupus.terminology import MappingPack
from fhir_lupus.validation import FhirVersion, validate_resource

R = TypeVar("R")


def reference_map(
    data: TrialData,
    report: LoadReport,
    *,
    fhir_version: FhirVersion = "R4",
    pack: MappingPack | None = None,
) -> list[Resource]:
    """The resources ``map_trial`` returned before streaming, in its order; refused rows go to ``report``."""
    ctx = make_context(data, pack)

    def finish(resource: Resource) -> Resource:
        final = to_r5(resource, ctx) if fhir_version == "R5" else resource
        validate_resource(final, fhir_version)
        return final

    resources: list[Resource] = []
    for study_mapper in (
        map_project_codesystem,
        map_sponsor_organization,
        map_site_location,
        map_enrollment_group,
        map_research_study,
    ):
        try:
            resources.append(finish(study_mapper(ctx)))
        except FhirLupusError as exc:
            raise MappingError(f"study definition {data.study.nct_id} does not map: {exc}") from exc
    try:  # the schedule of activities (ResearchStudy.protocol): ActivityDefinitions and PlanDefinitions
        resources.extend(finish(resource) for resource in map_schedule_of_activities(ctx))
    except FhirLupusError as exc:
        raise MappingError(f"schedule of activities of {data.study.nct_id} does not map: {exc}") from exc

    subjects: dict[str, Subject] = {}
    for row in data.subjects:
        mapped = _map_record(
            row,
            report,
            lambda s: [
                finish(map_patient(s, ctx)),
                finish(map_research_subject(s, ctx, data.status_history.get(s.subject_id, ()))),
            ],
        )
        if mapped is not None:
            resources.extend(mapped)
            subjects[row.record.subject_id] = row.record

    def dependent(
        rows: list[Located[Any]], subject_of: Callable[[Any], str], mapper: Callable[[Any, Subject], Resource]
    ) -> None:
        for row in rows:
            subject = subjects.get(subject_of(row.record))
            if subject is None:
                report.reject(row, "subject_id", f"subject {subject_of(row.record)} could not be mapped")
                continue

            def build(record: Any, subject: Subject = subject) -> list[Resource]:
                return [finish(mapper(record, subject))]

            mapped = _map_record(row, report, build)
            if mapped is not None:
                resources.extend(mapped)

    dependent(data.visits, lambda v: v.subject_id, lambda v, s: map_encounter(v, s, ctx))
    dependent(data.procedures, lambda p: p.subject_id, lambda p, s: map_procedure(p, s, ctx))
    dependent(data.labs, lambda c: c.lab.subject_id, lambda c, s: map_lab_observation(c, s, ctx))
    dependent(data.sledai, lambda a: a.assessment.subject_id, lambda a, s: map_sledai_observation(a, s, ctx))
    dependent(data.treg, lambda t: t.subject_id, lambda t, s: map_treg_observation(t, s, ctx))
    # Prior regimens of enrolled subjects (a candidate who did not enrol stays in the screening log, off the
    # server), and the cyclophosphamide pretreatment also as a MedicationAdministration, part of its infusion.
    enrolled = {row.record.subject_id for row in data.subjects}
    dependent(
        [m for m in data.medications if m.record.subject_id in enrolled],
        lambda m: m.subject_id,
        lambda m, s: map_medication_statement(m, s, ctx),
    )
    mapped_procedures = {r["id"] for r in resources if r["resourceType"] == "Procedure"}
    all_procedures = [p.record for p in data.procedures]

    def administration(pretreatment: Any, subject: Subject) -> Resource:
        infusion = conditioned_infusion(pretreatment, all_procedures)
        if infusion and ctx.resource_id("Procedure", ctx.nct_id, infusion.procedure_id) not in mapped_procedures:
            infusion = None  # its Procedure was refused: no reference to a resource that is not sent
        return map_medication_administration(pretreatment, infusion, subject, ctx)

    dependent(
        [p for p in data.procedures if p.record.kind == "cyclophosphamide_pretreatment"],
        lambda p: p.subject_id,
        administration,
    )
    # adverse events last: they refer to the treatments (Procedure, MedicationAdministration) mapped above
    mapped_refs = {f"{r['resourceType']}/{r['id']}" for r in resources}
    dependent(
        data.adverse_events,
        lambda e: e.event.subject_id,
        lambda e, s: map_adverse_event(e, s, ctx, mapped=mapped_refs),
    )
    return resources


def _map_record(row: Located[R], report: LoadReport, build: Callable[[R], list[Resource]]) -> list[Resource] | None:
    try:
        return build(row.record)
    except FhirLupusError as exc:
        report.reject(row, None, f"does not map to valid FHIR: {exc}")
        return None
