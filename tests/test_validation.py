"""The FHIRPath invariants catch what they are meant to catch (each rule is shown failing once)."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_lupus.errors import ResourceInvalidError
from fhir_lupus.validation import check_invariants, validate_resource

CODE = {"coding": [{"system": "http://loinc.org", "code": "4485-9"}]}


def observation(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": "o", "status": "final", "code": CODE, **extra}


@pytest.mark.parametrize(
    ("resource", "key"),
    [
        (observation(valueInteger=1, dataAbsentReason={"text": "lost"}), "obs-6"),
        (observation(valueInteger=1, component=[{"code": CODE, "valueInteger": 2}]), "obs-7"),
        (observation(referenceRange=[{"appliesTo": [{"text": "adults"}]}]), "obs-3"),
        (observation(valueQuantity={"value": 1, "code": "g/L"}), "qty-3"),
        (observation(extension=[{"url": "urn:x"}]), "ext-1"),
        (observation(effectivePeriod={"start": "2009-02-01", "end": "2009-01-01"}), "per-1"),
        (observation(note=[{}]), "ele-1"),
        (observation(contained=[{"resourceType": "Specimen", "id": "s"}]), "dom-3"),
        (
            {
                "resourceType": "Group",
                "type": "person",
                "actual": False,
                "member": [{"entity": {"reference": "Patient/1"}}],
            },
            "grp-1",
        ),
        (
            {
                "resourceType": "CodeSystem",
                "status": "active",
                "content": "complete",
                "concept": [{"code": "a"}, {"code": "b", "concept": [{"code": "a"}]}],
            },
            "csd-1",
        ),
        (
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"fullUrl": "urn:uuid:1", "request": {"method": "GET", "url": "x"}}],
            },
            "bdl-3",
        ),
        (
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "fullUrl": "urn:uuid:1",
                        "resource": observation(),
                        "request": {"method": "POST", "url": "Observation"},
                    },
                    {
                        "fullUrl": "urn:uuid:1",
                        "resource": observation(),
                        "request": {"method": "POST", "url": "Observation"},
                    },
                ],
            },
            "bdl-7",
        ),
    ],
)
def test_broken_rule_is_reported(resource: dict[str, Any], key: str) -> None:
    broken = check_invariants(resource)
    assert any(b.startswith(f"{key}:") for b in broken), broken


def test_good_observation_passes() -> None:
    resource = observation(
        valueQuantity={"value": 1, "code": "g/L", "system": "http://unitsofmeasure.org"},
        component=[{"code": {"text": "other"}, "valueInteger": 2}],
    )
    assert check_invariants(resource) == []
    validate_resource(resource)


def test_model_errors_name_the_resource_and_element() -> None:
    with pytest.raises(ResourceInvalidError, match=r"Observation/o: FHIR R4 model: valueInteger"):
        validate_resource(observation(valueInteger="many"))
    missing_code = observation()
    del missing_code["code"]
    with pytest.raises(ResourceInvalidError, match=r"Observation/o: FHIR R4 model: .*code"):
        validate_resource(missing_code)
    with pytest.raises(ResourceInvalidError, match="obs-6"):
        validate_resource(observation(valueInteger=1, dataAbsentReason={"text": "x"}))
    with pytest.raises(ResourceInvalidError, match="unknown resource type"):
        validate_resource({"resourceType": "Nonsense"})
