"""Lab result -> Observation (category laboratory, LOINC code chosen by the catalogue).

Numbers become valueQuantity in UCUM (comparators kept), ordinals a SNOMED CT valueCodeableConcept, titers a
valueString ("1:320"). The hospital's own test code is kept as a second coding, the specimen type as a
contained Specimen, the reference range as given, and H/L/N interpretation when it can be computed.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fhir_lupus.mappers._context import MappingContext, Resource, fhir_datetime
from fhir_lupus.mappers._observation import json_number, observation_base
from fhir_lupus.model import CheckedLab, Subject
from fhir_lupus.terminology import CodeRef, Interpretation, proves_above, proves_below

__all__ = ["interpretation", "map_lab_observation"]


def map_lab_observation(checked: CheckedLab, subject: Subject, ctx: MappingContext) -> Resource:
    lab, value, resolved = checked.lab, checked.value, checked.resolved
    analyte = ctx.pack.labs.analytes[lab.analyte]
    codings = [
        {
            "system": ctx.pack.system_uri(resolved.code.system),
            "code": resolved.code.code,
            "display": resolved.code.display,
        }
    ]
    if lab.local_code:
        local_system = ctx.pack.identifier_system("hospital_local_code", study=ctx.nct_id)
        codings.append({"system": local_system, "code": lab.local_code})
    resource = observation_base(
        ctx=ctx,
        identifier=ctx.identifier("lab_result", lab.result_id),
        key=("lab", lab.result_id),
        subject=subject,
        visit_code=lab.visit_code,
        category=ctx.codes.lab_category,
        code={"coding": codings, "text": analyte.display},
        effective=fhir_datetime(lab.collected_at),
    )
    if value.kind == "quantity":
        assert value.number is not None and resolved.ucum is not None
        quantity = ctx.quantity(json_number(value.number), resolved.ucum)
        if value.comparator:
            quantity = {"value": quantity.pop("value"), "comparator": value.comparator, **quantity}
        resource["valueQuantity"] = quantity
        flag = _verdict(value.number, value.comparator, lab.ref_low, lab.ref_high, ctx.codes.interpretation)
        if flag:
            resource["interpretation"] = [{"coding": [ctx.pack.coding(flag)]}]
    elif value.kind == "ordinal":
        assert value.ordinal is not None
        answer = ctx.pack.ordinals[value.ordinal]
        resource["valueCodeableConcept"] = {
            "coding": [{"system": ctx.pack.system_uri("snomed"), "code": answer.code, "display": answer.display}],
            "text": value.raw,
        }
    else:
        resource["valueString"] = value.raw
    if lab.lab:
        resource["performer"] = [{"display": lab.lab}]
    if lab.method:
        resource["method"] = {"text": lab.method}
    specimen = ctx.pack.labs.specimens[lab.specimen]
    resource["contained"] = [
        {
            "resourceType": "Specimen",
            "id": "specimen",
            "type": {
                "coding": [
                    {
                        "system": ctx.pack.system_uri("snomed"),
                        "code": specimen.code,
                        "display": specimen.display,
                    }
                ]
            },
            "collection": {"collectedDateTime": fhir_datetime(lab.collected_at)},
        }
    ]
    resource["specimen"] = {"reference": "#specimen"}
    if lab.ref_low is not None or lab.ref_high is not None:
        assert resolved.ucum is not None
        bounds: dict[str, Any] = {}
        if lab.ref_low is not None:
            bounds["low"] = ctx.quantity(json_number(lab.ref_low), resolved.ucum)
        if lab.ref_high is not None:
            bounds["high"] = ctx.quantity(json_number(lab.ref_high), resolved.ucum)
        resource["referenceRange"] = [bounds]
    return resource


def interpretation(number: Any, comparator: str | None, low: Any, high: Any, flags: Interpretation) -> str | None:
    """The code of ``flags`` (H, L or N in mappings/fhir/codes.yaml) the value earns against the reference range;
    None when the range or the value does not allow a verdict."""
    flag = _verdict(number, comparator, low, high, flags)
    return flag.code if flag else None


def _verdict(number: Any, comparator: str | None, low: Any, high: Any, flags: Interpretation) -> CodeRef | None:
    """High, low or normal, or None. A censored value is high or low only when it proves the limit is crossed
    (``>=10`` with high 10 does not), and normal only when it is an exact value inside the range."""
    if low is None and high is None:
        return None
    value = Decimal(str(number))
    if high is not None and proves_above(value, comparator, Decimal(str(high))):
        return flags.high
    if low is not None and proves_below(value, comparator, Decimal(str(low))):
        return flags.low
    if comparator is None and low is not None and high is not None and low <= value <= high:
        return flags.normal
    return None
