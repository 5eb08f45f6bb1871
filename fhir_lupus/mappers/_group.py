"""Eligibility criteria -> the enrollment Group (R4 ResearchStudy.enrollment).

Each criterion of the study definition becomes a characteristic; exclusion criteria have ``exclude: true``.
Ranges and booleans come from the criterion's screening ``rule`` (one definition for the Group and the screen).
The Group is descriptive (``actual: false``): it defines who may enrol, it does not list members.
"""

from __future__ import annotations

from typing import Any

from fhir_lupus.mappers._context import MappingContext, Resource
from fhir_lupus.model import Eligibility

__all__ = ["map_enrollment_group"]


def map_enrollment_group(ctx: MappingContext) -> Resource:
    study = ctx.study
    return {
        "resourceType": "Group",
        "id": ctx.resource_id("Group", study.nct_id, "enrollment"),
        "identifier": [ctx.identifier("group", "enrollment")],
        "type": "person",
        "actual": False,
        "name": f"{study.nct_id} eligibility",
        "quantity": study.target_enrollment,
        "characteristic": [_characteristic(criterion, ctx) for criterion in study.eligibility],
    }


def _characteristic(criterion: Eligibility, ctx: MappingContext) -> dict[str, Any]:
    code = ctx.concept(criterion.code)
    code["text"] = criterion.text
    characteristic: dict[str, Any] = {"code": code, "exclude": criterion.exclude}
    value = criterion.characteristic_value()  # the rule's range or boolean unless `value` says otherwise
    if value.boolean is not None:
        characteristic["valueBoolean"] = value.boolean
    elif value.range is not None:
        bounds = {}
        for side in ("low", "high"):
            number = getattr(value.range, side)
            if number is not None:
                bounds[side] = ctx.quantity(_plain(number), value.range.unit)
        characteristic["valueRange"] = bounds
    elif value.concept is not None:
        characteristic["valueCodeableConcept"] = ctx.concept(value.concept)
    else:
        characteristic["valueCodeableConcept"] = {"text": value.text}
    return characteristic


def _plain(number: float) -> float | int:
    return int(number) if float(number).is_integer() else number
