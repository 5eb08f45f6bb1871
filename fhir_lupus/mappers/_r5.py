"""R4 -> R5 reshaping for the resources fhir_lupus emits (the ``--fhir-version R5`` option).

Mappers build R4; this module moves the elements that R5 renamed or restructured, one function per
resource type. Types it does not list are the same in both versions for what we emit.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fhir_lupus.mappers._adverse_event import adverse_event_to_r5
from fhir_lupus.mappers._context import MappingContext, Resource
from fhir_lupus.mappers._schedule import plan_definition_to_r5
from fhir_lupus.model import load_lifecycle_rules

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
    resource["associatedParty"] = [
        {"role": {"coding": [ctx.pack.coding(ctx.codes.sponsor_role)]}, "party": resource.pop("sponsor")}
    ]
    resource["comparisonGroup"] = resource.pop("arm")
    return resource


def _research_subject(resource: Resource, ctx: MappingContext) -> Resource:
    """R5 keeps the state in ``progress`` (``status`` is the resource's publication status): one entry per row of
    the status history (the R4 project extensions), each ending where the next starts; without a history, one
    entry for the current status over the subject's period."""
    rules = load_lifecycle_rules(ctx.pack)
    history_url = ctx.pack.extension_url("status_history")
    reason_url = ctx.pack.extension_url("off_study_reason")
    extensions = resource.pop("extension", [])
    history = [_history_entry(e) for e in extensions if e["url"] == history_url]
    period = resource.get("period", {})
    if not history:
        reason = next((e["valueString"] for e in extensions if e["url"] == reason_url), None)
        history = [(resource["status"], period.get("start"), reason)]
        ends = [period.get("end")]
    else:
        ends = [start for _, start, _ in history[1:]] + [None]
    if rest := [e for e in extensions if e["url"] not in (history_url, reason_url)]:
        resource["extension"] = rest
    state_system = ctx.pack.system_uri("research-subject-state")
    progress = []
    for (status, start, reason), end in zip(history, ends, strict=True):
        state: dict[str, Any] = {
            "type": ctx.concept(rules.progress_type),
            "subjectState": {"coding": [{"system": state_system, "code": status}]},
        }
        if milestone := rules.milestone(status):
            state["milestone"] = ctx.concept(milestone)
        if reason:
            state["reason"] = {"text": reason}
        if start:
            state["startDate"] = start
        if end:
            state["endDate"] = end
        progress.append(state)
    resource["status"] = "active"
    resource["progress"] = progress
    resource["subject"] = resource.pop("individual")
    resource["assignedComparisonGroup"] = resource.pop("assignedArm")
    return resource


def _history_entry(extension: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(status, date, reason) of one status-history extension (research_subject.status_history_extension)."""
    parts = {part["url"]: part for part in extension.get("extension", [])}
    return (
        parts["status"]["valueCode"],
        (parts.get("date") or {}).get("valueDate"),
        (parts.get("reason") or {}).get("valueString"),
    )


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


def _medication_statement(resource: Resource, ctx: MappingContext) -> Resource:
    """R5: status is the record's (``recorded``), the drug a CodeableReference, no statusReason (the outcome
    extension keeps why a course stopped)."""
    resource["status"] = "recorded"
    resource["medication"] = {"concept": resource.pop("medicationCodeableConcept")}
    resource.pop("statusReason", None)
    return resource


def _medication_administration(resource: Resource, ctx: MappingContext) -> Resource:
    """R5: the drug a CodeableReference, effective[x] renamed occurence[x] (R5 spells it so)."""
    resource["medication"] = {"concept": resource.pop("medicationCodeableConcept")}
    for r4_name, r5_name in (("effectivePeriod", "occurencePeriod"), ("effectiveDateTime", "occurenceDateTime")):
        if r4_name in resource:
            resource[r5_name] = resource.pop(r4_name)
    return resource


def _group(resource: Resource, ctx: MappingContext) -> Resource:
    resource["membership"] = "enumerated" if resource.pop("actual") else "definitional"
    return resource


_RESHAPERS: dict[str, Callable[[Resource, MappingContext], Resource]] = {
    "AdverseEvent": adverse_event_to_r5,
    "PlanDefinition": plan_definition_to_r5,
    "ResearchStudy": _research_study,
    "ResearchSubject": _research_subject,
    "Encounter": _encounter,
    "Procedure": _procedure,
    "Group": _group,
    "MedicationStatement": _medication_statement,
    "MedicationAdministration": _medication_administration,
}
