"""The protocol schedule -> PlanDefinition / ActivityDefinition, shaped like the HL7 Clinical Study Schedule of
Activities IG (STU1, R4).

- one PlanDefinition for the protocol (profile StudyProtocolSoa, type clinical-protocol): an action per planned
  visit, timed by ``relatedAction`` from day 0 (offsetDuration, and the IG's AcceptableOffsetRangeSoa extension
  for the window), pointing to the visit's own PlanDefinition by ``definitionCanonical``;
- one PlanDefinition per planned visit (PlannedStudyVisitSoa): an action per activity expected there;
- one ActivityDefinition per activity (StudyActivitySoa): a lab panel, Treg, SLEDAI-2K.

Everything comes from ``protocol`` in mappings/studies/<NCT id>.yaml; URLs, identifier systems and profiles from
mappings/project.yaml. The choices are in docs/terminology.md ("Schedule of activities").
"""

from __future__ import annotations

from typing import Any

from fhir_lupus.mappers._context import MappingContext, Resource
from fhir_lupus.model import DAYS_PER_MONTH, Activity, ProtocolVisit

__all__ = ["map_schedule_of_activities", "plan_definition_to_r5", "protocol_key", "visit_key"]

DAY_0 = "day-0"  # action id of the MSC infusion when it is day 0


def protocol_key() -> str:
    return "protocol"


def visit_key(code: str) -> str:
    return f"visit-{code}"


def map_schedule_of_activities(ctx: MappingContext) -> list[Resource]:
    """ActivityDefinitions, then the visit PlanDefinitions, then the protocol PlanDefinition."""
    protocol = ctx.study.protocol
    activities = [_activity(ctx, key, activity) for key, activity in protocol.activities.items()]
    visits = ctx.study.visits()
    return [*activities, *(_visit(ctx, visit) for visit in visits), _protocol(ctx, visits)]


def _name(ctx: MappingContext, key: str) -> str:
    """A computer-friendly name (FHIR cnl-0: starts with a capital letter, letters, digits and _)."""
    return "_".join((ctx.nct_id, *(part.capitalize() for part in key.replace("-", "_").split("_"))))


def _activity(ctx: MappingContext, key: str, activity: Activity) -> Resource:
    labs = ctx.pack.labs.analytes
    items: list[str] = []
    for item in activity.analytes:
        options = (item,) if isinstance(item, str) else item
        items.append(" or ".join(labs[option].display if option in labs else option for option in options))
    source = {"labs": "labs.csv", "treg": "treg.csv", "sledai": "sledai.csv"}[activity.source]
    description = f"{activity.title}, recorded in {source}" + (f": {'; '.join(items)}." if items else ".")
    return {
        "resourceType": "ActivityDefinition",
        "id": ctx.resource_id("ActivityDefinition", ctx.nct_id, key),
        "meta": {"profile": [ctx.pack.profile_url("soa_activity")]},
        "url": ctx.pack.canonical_url("activity_definition", key, study=ctx.nct_id),
        "identifier": [ctx.identifier("activity_definition", key)],
        "name": _name(ctx, key),
        "title": activity.title,
        "status": "active",
        "description": description,
        "kind": "ServiceRequest",
        "code": ctx.concept(activity.code) if activity.code else {"text": activity.title},
    }


def _visit(ctx: MappingContext, visit: ProtocolVisit) -> Resource:
    activities = ctx.study.protocol.activities
    return {
        "resourceType": "PlanDefinition",
        "id": ctx.resource_id("PlanDefinition", ctx.nct_id, visit_key(visit.code)),
        "meta": {"profile": [ctx.pack.profile_url("soa_planned_visit")]},
        "url": ctx.pack.canonical_url("plan_definition", visit_key(visit.code), study=ctx.nct_id),
        "identifier": [ctx.identifier("plan_definition", visit_key(visit.code))],
        "name": _name(ctx, f"visit_{visit.code}"),
        "title": visit.name,
        **_plan_type(ctx),
        "status": "active",
        "description": f"Planned visit {visit.code} of {ctx.nct_id}, month {visit.month} after day 0.",
        "action": [
            {
                "id": key,
                "title": activities[key].title,
                "definitionCanonical": ctx.pack.canonical_url("activity_definition", key, study=ctx.nct_id),
            }
            for key in visit.activities
        ],
    }


def plan_definition_to_r5(resource: Resource, ctx: MappingContext) -> Resource:
    """R5 renamed PlanDefinition.action.relatedAction.actionId to targetId; the rest we emit is unchanged."""
    for action in resource.get("action", []):
        for related in action.get("relatedAction", []):
            if "actionId" in related:
                related["targetId"] = related.pop("actionId")
    return resource


def _plan_type(ctx: MappingContext) -> dict[str, Any]:
    plan_type = ctx.study.protocol.plan_type
    return {"type": ctx.concept(plan_type)} if plan_type else {}


def _days(ctx: MappingContext, value: int) -> dict[str, Any]:
    return ctx.quantity(value, ctx.codes.units.day)


def _protocol(ctx: MappingContext, visits: tuple[ProtocolVisit, ...]) -> Resource:
    study = ctx.study
    months = study.protocol.visit_months
    window = study.protocol.visit_window_days
    thirty_day = months.rule == "30-day"
    actions: list[dict[str, Any]] = []
    if months.anchor == "msc_infusion":
        actions.append({"id": DAY_0, "title": "Day 0: MSC infusion", "code": [ctx.concept(months.infusion_code)]})
    anchor_id = DAY_0 if months.anchor == "msc_infusion" else visits[0].code
    previous: ProtocolVisit | None = None
    for visit in visits:
        action: dict[str, Any] = {
            "id": visit.code,
            "title": visit.name,
            "description": _timing_text(ctx, visit),
            "definitionCanonical": ctx.pack.canonical_url("plan_definition", visit_key(visit.code), study=study.nct_id),
        }
        related: list[dict[str, Any]] = []
        if visit.code != anchor_id:
            if visit.month == 0:
                related.append({"actionId": anchor_id, "relationship": "before"})
            else:
                relation: dict[str, Any] = {
                    "actionId": anchor_id,
                    "relationship": "after",
                    "offsetDuration": _days(ctx, DAYS_PER_MONTH * visit.month)
                    if thirty_day
                    else ctx.quantity(visit.month, ctx.codes.units.month),
                }
                if thirty_day:
                    offset = DAYS_PER_MONTH * visit.month
                    acceptable: dict[str, Any] = {"low": _days(ctx, offset - window)}
                    if visit.latest_after_previous_months is None:
                        acceptable["high"] = _days(ctx, offset + window)
                    relation["extension"] = [
                        {"url": ctx.pack.extension_url("soa_acceptable_offset_range"), "valueRange": acceptable}
                    ]
                related.append(relation)
            if visit.latest_after_previous_months is not None and previous is not None:
                latest = visit.latest_after_previous_months
                gap = visit.month - previous.month
                relation = {
                    "actionId": previous.code,
                    "relationship": "after",
                    "offsetDuration": _days(ctx, DAYS_PER_MONTH * gap)
                    if thirty_day
                    else ctx.quantity(gap, ctx.codes.units.month),
                }
                if thirty_day:
                    relation["extension"] = [
                        {
                            "url": ctx.pack.extension_url("soa_acceptable_offset_range"),
                            "valueRange": {"high": _days(ctx, DAYS_PER_MONTH * latest + window)},
                        }
                    ]
                related.append(relation)
        if related:
            action["relatedAction"] = related
        actions.append(action)
        previous = visit
    return {
        "resourceType": "PlanDefinition",
        "id": ctx.resource_id("PlanDefinition", study.nct_id, protocol_key()),
        "meta": {"profile": [ctx.pack.profile_url("soa_study_protocol")]},
        "url": ctx.pack.canonical_url("plan_definition", protocol_key(), study=study.nct_id),
        "identifier": [ctx.identifier("plan_definition", protocol_key())],
        "name": _name(ctx, "schedule_of_activities"),
        "title": f"{study.nct_id} schedule of activities",
        **_plan_type(ctx),
        "status": "active",
        "description": (
            f"Planned visits of {study.nct_id} and the activities expected at each: day 0 is "
            f"{'the MSC infusion' if months.anchor == 'msc_infusion' else 'the baseline visit'}, months count as "
            f"{'30 days' if thirty_day else 'calendar months'}, and each visit is in window within "
            f"+/- {window} days of its due date."
        ),
        "action": actions,
    }


def _timing_text(ctx: MappingContext, visit: ProtocolVisit) -> str:
    window = ctx.study.protocol.visit_window_days
    text = f"Month {visit.month} after day 0, +/- {window} days"
    if visit.latest_after_previous_months is not None:
        text += (
            f"; at the latest {visit.latest_after_previous_months} months + {window} days after the previous visit "
            "held (missed only when no visit happens by then)"
        )
    return text + "."
