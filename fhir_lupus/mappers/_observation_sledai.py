"""SLEDAI-2K assessment -> Observation (category survey).

The total is the value; each descriptor found is a component whose value is the points it scored (its weight,
or 0 when it did not count). A descriptor derived from labs is marked with an extension, and the lab
Observations it rests on are listed in derivedFrom, so a reader can tell a clinician's finding from an
inference. A descriptor that did not count (present but not attributed to lupus, or met by labs beside a CRF
total) carries the reason in a second extension, so the components always add up to what counted.

A total computed while a lab-based descriptor could not be judged (a refused lab row, no labs, a result without
its reference limit) is published as ``preliminary`` (mappings/fhir/derived.yaml): the value is a lower bound,
and each undecided descriptor is a component without a value whose dataAbsentReason says so, with the reason.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from fhir_lupus.mappers._context import MappingContext, Resource
from fhir_lupus.mappers._observation import observation_base
from fhir_lupus.model import ScoredAssessment, Subject
from fhir_lupus.terminology import CodeRef, MappingPack, load_pack

__all__ = ["DerivedValues", "descriptor_code", "load_derived_values", "map_sledai_observation"]


class _Statuses(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    final: str
    incomplete: str


class DerivedValues(BaseModel):
    """mappings/fhir/derived.yaml: how a derived value from incomplete input is published."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: _Statuses
    undecided_component: CodeRef


def load_derived_values(pack: MappingPack | None = None) -> DerivedValues:
    return (pack or load_pack()).load(DerivedValues, "fhir/derived.yaml")


def descriptor_code(key: str) -> str:
    """The project CodeSystem code of a SLEDAI-2K descriptor."""
    return f"sledai-{key.replace('_', '-')}"


def map_sledai_observation(scored: ScoredAssessment, subject: Subject, ctx: MappingContext) -> Resource:
    assessment, score = scored.assessment, scored.score
    project = ctx.pack.system_uri("project")
    resource = observation_base(
        ctx=ctx,
        identifier=ctx.identifier("sledai", f"{assessment.subject_id}/{assessment.visit_code}"),
        key=("sledai", assessment.subject_id, assessment.visit_code),
        subject=subject,
        visit_code=assessment.visit_code,
        category=ctx.codes.assessment_category,
        code=ctx.project_concept("sledai-2k-total"),
        effective=assessment.assessed_on.isoformat(),
    )
    derived = load_derived_values(ctx.pack)
    resource["status"] = derived.status.final if score.final else derived.status.incomplete
    resource["extension"].append({"url": ctx.pack.extension_url("sledai_window"), "valueInteger": score.window_days})
    resource["valueInteger"] = score.total
    if assessment.assessor:
        resource["performer"] = [{"display": assessment.assessor}]
    components = []
    evidence: list[str] = []
    for scored_descriptor in score.descriptors:
        descriptor = ctx.sledai.descriptor(scored_descriptor.key)
        component: Resource = {
            "code": _concept(descriptor.key, descriptor.display, project),
            "valueInteger": scored_descriptor.points,
        }
        extensions = []
        if scored_descriptor.source == "derived":
            extensions.append({"url": ctx.pack.extension_url("derived_descriptor"), "valueBoolean": True})
        if not scored_descriptor.counted:
            extensions.append(
                {"url": ctx.pack.extension_url("descriptor_not_counted"), "valueString": scored_descriptor.why}
            )
        if extensions:
            component["extension"] = extensions
        evidence.extend(scored_descriptor.evidence)
        components.append(component)
    for undecided in score.undecided:
        descriptor = ctx.sledai.descriptor(undecided.key)
        components.append(
            {
                "extension": [
                    {
                        "url": ctx.pack.extension_url("descriptor_not_counted"),
                        "valueString": "could not be judged: " + "; ".join(undecided.why),
                    }
                ],
                "code": _concept(descriptor.key, descriptor.display, project),
                "dataAbsentReason": {"coding": [ctx.pack.coding(derived.undecided_component)]},
            }
        )
    if components:
        resource["component"] = components
    if evidence:
        resource["derivedFrom"] = [
            ctx.reference("Observation", ctx.nct_id, "lab", result_id) for result_id in dict.fromkeys(evidence)
        ]
    return resource


def _concept(key: str, display: str, project: str) -> Resource:
    return {"coding": [{"system": project, "code": descriptor_code(key), "display": display}], "text": display}
