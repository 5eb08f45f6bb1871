"""A registry package of two subjects submitted twice to real FHIR servers (HAPI FHIR JPA, Medplum): the second
submit writes nothing, and every keyed identifier is on the server exactly once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from fhir_lupus import load_trial
from fhir_lupus.bundle import identifiers
from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.registry import RegistryKey, package_trial, read_package, submit_package
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource

pytestmark = pytest.mark.integration

KEY = RegistryKey(b"integration-registry-key-0123456789")


def test_registry_package_submitted_twice_writes_once_without_duplicates(
    client: FhirClient, isolated_settings: Settings, subset: Callable[..., Path], tmp_path: Path
) -> None:
    data, report = load_trial(subset(2), pack=isolated_settings.pack)
    assert report.rejects == []
    made = package_trial(TrialSource.loaded(data, report), tmp_path / "package", KEY, settings=isolated_settings)
    assert made.problems == [] and made.manifest["subjects"] == 2
    package = read_package(tmp_path / "package")
    total = len(package.resources)

    with Journal(tmp_path / "journal.sqlite") as journal:
        first = submit_package(tmp_path / "package", client, journal, settings=isolated_settings)
        assert first.report.complete and first.report.created == total, first.report.summary()
        second = submit_package(tmp_path / "package", client, journal, settings=isolated_settings)
        assert second.report.written == 0 and second.report.unchanged == total, second.report.summary()
        assert second.report.provenance is None
    # a site that lost its journal submits again: the look-ups find everything, nothing is written
    with Journal(tmp_path / "fresh.sqlite") as journal:
        third = submit_package(tmp_path / "package", client, journal, settings=isolated_settings)
        assert third.report.written == 0 and third.report.complete, third.report.summary()

    registry = [r for r in package.resources if any("/sid/registry/" in i["system"] for i in identifiers(r))]
    assert Counter(r["resourceType"] for r in registry)["Patient"] == 2
    searchable = {"Patient", "ResearchSubject", "Encounter", "Observation", "Procedure", "MedicationStatement"}
    checked = Counter[str]()
    for resource in registry:
        if resource["resourceType"] not in searchable or checked[resource["resourceType"]] >= 25:
            continue
        key = identifiers(resource)[0]
        found = list(client.search(resource["resourceType"], {"identifier": f"{key['system']}|{key['value']}"}))
        assert len(found) == 1, (resource["resourceType"], key, [f["id"] for f in found])
        checked[resource["resourceType"]] += 1
    assert set(checked) == searchable
    for resource in package.resources:  # types read and written by id (AdverseEvent): once, under the keyed id
        if resource["resourceType"] == "AdverseEvent":
            assert client.read("AdverseEvent", resource["id"])["id"] == resource["id"]
