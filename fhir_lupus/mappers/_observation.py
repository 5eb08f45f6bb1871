"""What every Observation of the trial shares: identity, study link, subject, visit, category."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fhir_lupus.mappers._context import MappingContext, Resource
from fhir_lupus.mappers._patient import patient_identifier
from fhir_lupus.model import Subject
from fhir_lupus.terminology import CodeRef

__all__ = ["json_number", "observation_base"]


def json_number(value: Decimal | float) -> int | float:
    """A JSON number for a decimal: integral values stay integers (12, not 12.0)."""
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    return int(number) if number == number.to_integral_value() else float(number)


def observation_base(
    *,
    ctx: MappingContext,
    identifier: dict[str, Any],
    key: tuple[str, ...],
    subject: Subject,
    visit_code: str,
    category: CodeRef,
    code: dict[str, Any],
    effective: str,
) -> Resource:
    return {
        "resourceType": "Observation",
        "id": ctx.resource_id("Observation", ctx.nct_id, *key),
        "extension": [ctx.study_extension()],
        "identifier": [identifier],
        "status": "final",
        "category": [{"coding": [ctx.pack.coding(category)]}],
        "code": code,
        "subject": ctx.patient_ref(patient_identifier(subject, ctx)),
        "encounter": ctx.encounter_ref(subject.subject_id, visit_code),
        "effectiveDateTime": effective,
    }
