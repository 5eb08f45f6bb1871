"""MedicationStatement (prior regimens) and MedicationAdministration (the cyclophosphamide pretreatment) on real
servers: created once, unchanged on the second push, and the administration's partOf resolves to the server's
MSC infusion Procedure."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fhir_lupus import load_trial
from fhir_lupus.bundle import local_ref, references
from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.mappers import Resource
from fhir_lupus.pipeline import map_trial
from fhir_lupus.push import push_resources
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import load_pack

pytestmark = pytest.mark.integration

MEDICATION_TYPES = ("MedicationAdministration", "MedicationStatement")


def with_what_they_refer_to(resources: list[Resource]) -> list[Resource]:
    """The medication resources and, transitively, every resource they refer to (study, patient, infusion...)."""
    by_ref = {local_ref(r): r for r in resources}
    wanted = [local_ref(r) for r in resources if r["resourceType"] in MEDICATION_TYPES]
    chosen: dict[str, Resource] = {}
    while wanted:
        ref = wanted.pop()
        if ref in chosen or ref not in by_ref:
            continue
        chosen[ref] = by_ref[ref]
        wanted += references(by_ref[ref])
    return list(chosen.values())


def test_medication_resources_push_idempotently(
    client: FhirClient,
    isolated_mappings: Path,
    isolated_settings: Settings,
    subset: Callable[..., Path],
    tmp_path: Path,
) -> None:
    data, report = load_trial(subset(1), pack=isolated_settings.pack)
    assert report.rejects == []
    resources = with_what_they_refer_to(
        map_trial(TrialSource.loaded(data, report), settings=isolated_settings).resources
    )
    statements = [r for r in resources if r["resourceType"] == "MedicationStatement"]
    administrations = [r for r in resources if r["resourceType"] == "MedicationAdministration"]
    assert statements and len(administrations) == 1
    version = load_pack(isolated_mappings).project.mapping_version
    with Journal(tmp_path / "journal.sqlite") as journal:
        first = push_resources(
            resources, client, journal, source="test", mapping_version=version, settings=isolated_settings
        )
        assert first.complete and first.created == len(resources), first.summary()
        second = push_resources(
            resources, client, journal, source="test", mapping_version=version, settings=isolated_settings
        )
        assert second.written == 0 and second.unchanged == len(resources), second.summary()

    key = administrations[0]["identifier"][0]
    found = client.get("MedicationAdministration", params={"identifier": f"{key['system']}|{key['value']}"})
    [entry] = found["entry"]
    stored = entry["resource"]
    assert stored["medicationCodeableConcept"]["coding"][0]["code"] == "3002"
    procedure_ref = stored["partOf"][0]["reference"]
    infusion = client.get(procedure_ref)
    assert infusion["resourceType"] == "Procedure" and infusion["code"]["coding"][0]["code"] == "msc-infusion"
    for statement in statements:
        key = statement["identifier"][0]
        hits = client.get("MedicationStatement", params={"identifier": f"{key['system']}|{key['value']}"})
        assert len(hits["entry"]) == 1
