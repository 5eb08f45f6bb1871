"""The transaction Bundle: conditional entries, dependency order, internal references, determinism."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fhir_lupus.bundle import DEPENDENCY_ORDER, dumps, transaction_bundle
from fhir_lupus.errors import ResourceInvalidError
from fhir_lupus.model import load_trial
from fhir_lupus.pipeline import map_trial
from fhir_lupus.source import TrialSource
from fhir_lupus.validation import check_invariants, validate_resource


@pytest.fixture
def bundle(dataset: Callable[..., Path]) -> dict[str, Any]:
    data, report = load_trial(dataset())
    return transaction_bundle(map_trial(TrialSource.loaded(data, report)).resources)


def _references(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return own + [r for value in node.values() for r in _references(value)]
    if isinstance(node, list):
        return [r for item in node for r in _references(item)]
    return []


def test_bundle_is_a_valid_transaction(bundle: dict[str, Any]) -> None:
    assert bundle["type"] == "transaction"
    validate_resource(bundle, "R4")
    assert check_invariants(bundle) == []


def test_entries_are_in_dependency_order(bundle: dict[str, Any]) -> None:
    ranks = [DEPENDENCY_ORDER.index(e["resource"]["resourceType"]) for e in bundle["entry"]]
    assert ranks == sorted(ranks)


def test_patient_is_conditional_create_and_others_conditional_update(bundle: dict[str, Any]) -> None:
    for entry in bundle["entry"]:
        resource, request = entry["resource"], entry["request"]
        assert "id" not in resource  # the server decides, or matches
        if resource["resourceType"] == "Patient":
            identifier = resource["identifier"][0]
            assert request == {
                "method": "POST",
                "url": "Patient",
                "ifNoneExist": f"identifier={identifier['system']}|{identifier['value']}",
            }
        elif resource["resourceType"] == "CodeSystem":
            assert request == {"method": "PUT", "url": f"CodeSystem?url={resource['url']}"}
        else:
            identifier = resource["identifier"][0]
            assert request == {
                "method": "PUT",
                "url": f"{resource['resourceType']}?identifier={identifier['system']}|{identifier['value']}",
            }


def test_every_reference_is_an_entry_of_the_bundle(bundle: dict[str, Any]) -> None:
    full_urls = {entry["fullUrl"] for entry in bundle["entry"]}
    assert all(url.startswith("urn:uuid:") for url in full_urls)
    references = [r for entry in bundle["entry"] for r in _references(entry["resource"]) if not r.startswith("#")]
    assert references and set(references) <= full_urls


def test_same_input_same_bytes(dataset: Callable[..., Path]) -> None:
    path = dataset()
    texts = []
    for _ in range(2):
        data, report = load_trial(path)
        texts.append(dumps(transaction_bundle(map_trial(TrialSource.loaded(data, report)).resources)))
    assert texts[0] == texts[1]


def test_identifier_values_are_url_encoded_in_the_request() -> None:
    resource = {
        "resourceType": "Observation",
        "id": "x",
        "identifier": [{"system": "urn:s", "value": "a b&c"}],
    }
    entry = transaction_bundle([resource])["entry"][0]
    assert entry["request"]["url"] == "Observation?identifier=urn:s|a%20b%26c"


def test_dangling_reference_is_refused() -> None:
    resource = {
        "resourceType": "Observation",
        "id": "x",
        "identifier": [{"system": "urn:s", "value": "1"}],
        "subject": {"reference": "Patient/missing"},
    }
    with pytest.raises(ResourceInvalidError, match="not in the bundle"):
        transaction_bundle([resource])


def test_duplicate_resource_is_refused() -> None:
    resource = {"resourceType": "Observation", "id": "x", "identifier": [{"system": "urn:s", "value": "1"}]}
    with pytest.raises(ResourceInvalidError, match="twice"):
        transaction_bundle([resource, dict(resource)])


def test_dumps_writes_what_the_standard_library_writes(bundle: dict[str, Any]) -> None:
    """orjson behind ``dumps``: the same text as json.dumps for every mapped resource (both forms), and for the
    corner cases, apart from numbers under 1e-4, which are written differently but read back equal."""
    corners = {"text": 'µg/L ≥ 5 \u2028 "quoted" \\ \t', "empty": [{}, []], "n": [0.1, 1.0, -0.0, 1e16, 123.456]}
    for document in [*(entry["resource"] for entry in bundle["entry"]), corners]:
        assert dumps(document) == json.dumps(document, ensure_ascii=False, indent=2) + "\n"
        assert dumps(document, pretty=False) == json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    small = {"valueQuantity": {"value": 2.5e-07}, "factor": 1e-05}
    assert dumps(small, pretty=False) == '{"valueQuantity":{"value":2.5e-7},"factor":0.00001}'
    assert json.loads(dumps(small)) == small
