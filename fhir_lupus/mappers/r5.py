"""R4 -> R5 reshaping for the resources fhir_lupus emits (the ``--fhir-version R5`` option).

Mappers build R4; this module moves the elements that R5 renamed or restructured, one function per
resource type. Types it does not list are the same in both versions for what we emit.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fhir_lupus.mappers._context import MappingContext, Resource

__all__ = ["to_r5"]


def to_r5(resource: Resource, ctx: MappingContext) -> Resource:
    """A new R5 resource from an R4 one (the input is not modified)."""
    converted = copy.deepcopy(resource)
    reshape = _RESHAPERS.get(converted["resourceType"])
    return reshape(converted, ctx) if reshape else converted


def _research_study(resource: Resource, ctx: MappingContext) -> Resource:
    resource["status"] = ctx.study.recruitment_status.fhir_r5
    resource["recruitment"] = {
        "targetNumber": ctx.study.target_enrollment,
        "eligibility": resource.pop("enrollment")[0],
    }
    role_system = ctx.pack.system_uri("research-study-party-role")
    resource["associatedParty"] = [
        {"role": {"coding": [{"system": role_system, "code": "sponsor"}]}, "party": resource.pop("sponsor")}
    ]
    resource["comparisonGroup"] = resource.pop("arm")
    return resource


def _research_subject(resource: Resource, ctx: MappingContext) -> Resource:
    state: dict[str, Any] = {
        "subjectState": {
            "coding": [{"system": ctx.pack.system_uri("research-subject-state"), "code": resource["status"]}]
        }
    }
    period = resource.get("period", {})
    if "start" in period:
        state["startDate"] = period["start"]
    if "end" in period:
        state["endDate"] = period["end"]
    reason_url = ctx.pack.extension_url("off_study_reason")
    for extension in [e for e in resource.get("extension", []) if e["url"] == reason_url]:
        state["reason"] = {"text": extension["valueString"]}
        resource["extension"].remove(extension)
    if not resource.get("extension"):
        resource.pop("extension", None)
    resource["status"] = "active"
    resource["progress"] = [state]
    resource["subject"] = resource.pop("individual")
    resource["assignedComparisonGroup"] = resource.pop("assignedArm")
    return resource


def _encounter(resource: Resource, ctx: MappingContext) -> Resource:
    resource["status"] = {"finished": "completed"}.get(resource["status"], resource["status"])
    resource["class"] = [{"coding": [resource["class"]]}]
    resource["actualPeriod"] = resource.pop("period")
    return resource


def _procedure(resource: Resource, ctx: MappingContext) -> Resource:
    for r4_name, r5_name in (
        ("performedPeriod", "occurrencePeriod"),
        ("performedDateTime", "occurrenceDateTime"),
    ):
        if r4_name in resource:
            resource[r5_name] = resource.pop(r4_name)
    if "usedCode" in resource:
        resource["used"] = [{"concept": concept} for concept in resource.pop("usedCode")]
    return resource


def _group(resource: Resource, ctx: MappingContext) -> Resource:
    resource["membership"] = "enumerated" if resource.pop("actual") else "definitional"
    return resource


_RESHAPERS: dict[str, Callable[[Resource, MappingContext], Resource]] = {
    "ResearchStudy": _research_study,
    "ResearchSubject": _research_subject,
    "Encounter": _encounter,
    "Procedure": _procedure,
    "Group": _group,
}
