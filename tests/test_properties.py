"""Property: any valid domain object maps to a resource that passes the FHIR models and the invariants."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import lab_results, procedures, sledai_assessments, subjects

from fhir_lupus.mappers import (
    MappingContext,
    map_lab_observation,
    map_patient,
    map_procedure,
    map_research_subject,
    map_sledai_observation,
    to_r5,
)
from fhir_lupus.model import (
    CheckedLab,
    LabResult,
    ScoredAssessment,
    SledaiAssessment,
    Subject,
    TreatmentProcedure,
)
from fhir_lupus.scoring import score_sledai
from fhir_lupus.terminology import LabCatalogue, load_pack, parse_lab_value
from fhir_lupus.validation import validate_resource

PACK = load_pack()
SUBJECT = Subject(
    subject_id="S-1",
    pseudonym="P-1",
    sex="female",
    birth_date="1980",
    enrolled_on="2005-01-01",
    status="on-study",
    arm="AlloMSC",
)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def valid_in_both_versions(resource: dict[str, Any], ctx: MappingContext) -> None:
    validate_resource(resource, "R4")
    validate_resource(to_r5(resource, ctx), "R5")


@FAST
@given(subject=subjects())
def test_subjects_map_to_valid_patient_and_research_subject(ctx: MappingContext, subject: Subject) -> None:
    valid_in_both_versions(map_patient(subject, ctx), ctx)
    valid_in_both_versions(map_research_subject(subject, ctx), ctx)


@FAST
@given(lab=lab_results(PACK))
def test_lab_results_map_to_valid_observations(ctx: MappingContext, lab: LabResult) -> None:
    value = parse_lab_value(lab.value, PACK.ordinals)
    catalogue_choice = ctx.pack.labs.analytes[lab.analyte]
    resolved = LabCatalogue(ctx.pack, ctx.units).resolve(lab.analyte, value, lab.unit, lab.method, lab.specimen)
    assert resolved.code in catalogue_choice.codes and lab.specimen in resolved.code.when.specimen
    resource = map_lab_observation(CheckedLab(lab, value, resolved), SUBJECT, ctx)
    valid_in_both_versions(resource, ctx)
    assert resource["code"]["coding"][0]["code"] == resolved.code.code


@FAST
@given(data=st.data())
def test_sledai_assessments_score_within_bounds_and_map(ctx: MappingContext, data: st.DataObject) -> None:
    keys = [d.key for d in ctx.sledai.descriptors]
    assessment: SledaiAssessment = data.draw(sledai_assessments(keys))
    score = score_sledai(
        ctx.sledai,
        flagged=assessment.descriptors,
        labs=[],
        assessed_on=assessment.assessed_on,
        window_days=assessment.window_days,
        units=ctx.units,
    )
    weights = {d.key: d.weight for d in ctx.sledai.descriptors}
    assert score.total == sum(weights[k] for k in assessment.descriptors)
    assert 0 <= score.total <= 105
    resource = map_sledai_observation(ScoredAssessment(assessment, score), SUBJECT, ctx)
    valid_in_both_versions(resource, ctx)
    assert len(resource.get("component", [])) == len(assessment.descriptors)


@FAST
@given(procedure=procedures())
def test_procedures_map_to_valid_procedures(ctx: MappingContext, procedure: TreatmentProcedure) -> None:
    valid_in_both_versions(map_procedure(procedure, SUBJECT, ctx), ctx)
