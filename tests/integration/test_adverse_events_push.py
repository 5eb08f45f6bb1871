"""AdverseEvents pushed with the resources they refer to, on HAPI FHIR JPA and Medplum: neither server offers an
``identifier`` search for AdverseEvent (R4 defines none), so push reads and PUTs them by our id; a second push
changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fhir_lupus import load_trial
from fhir_lupus.bundle import local_ref, references
from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.pipeline import map_trial
from fhir_lupus.push import push_resources
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import load_pack

pytestmark = pytest.mark.integration


def closure(resources: list[dict[str, Any]], resource_type: str) -> list[dict[str, Any]]:
    """The resources of ``resource_type`` and everything they refer to, however many hops away."""
    by_ref = {local_ref(r): r for r in resources}
    wanted = [local_ref(r) for r in resources if r["resourceType"] == resource_type]
    seen: set[str] = set()
    while wanted:
        ref = wanted.pop()
        if ref in seen or ref not in by_ref:
            continue
        seen.add(ref)
        wanted += references(by_ref[ref])
    return [r for r in resources if local_ref(r) in seen]


def test_adverse_events_push_by_id_and_a_second_push_is_unchanged(
    client: FhirClient,
    isolated_mappings: Path,
    isolated_settings: Settings,
    subset: Callable[..., Path],
    tmp_path: Path,
) -> None:
    data, report = load_trial(subset(1, first=2), pack=isolated_settings.pack)  # MSC-003: MSC and CYC related
    assert report.rejects == [] and len(data.adverse_events) >= 2
    resources = closure(
        map_trial(TrialSource.loaded(data, report), settings=isolated_settings).resources, "AdverseEvent"
    )
    events = [r for r in resources if r["resourceType"] == "AdverseEvent"]
    suspects = {s["instance"]["reference"].split("/")[0] for e in events for s in e.get("suspectEntity", [])}
    assert "Procedure" in suspects
    version = load_pack(isolated_mappings).project.mapping_version
    with Journal(tmp_path / "journal.sqlite") as journal:
        first = push_resources(resources, client, journal, source="test", mapping_version=version)
        assert first.complete and first.created == len(resources), first.summary()
        assert first.routes["AdverseEvent"].lookup in ("read", "search"), first.routes["AdverseEvent"]
        second = push_resources(resources, client, journal, source="test", mapping_version=version)
        assert second.written == 0 and second.unchanged == len(resources), second.summary()
    # a fresh journal: the server itself is asked (by our id, or by identifier where the server can search it)
    with Journal(tmp_path / "fresh.sqlite") as journal:
        third = push_resources(resources, client, journal, source="test", mapping_version=version)
        assert third.written == 0 and third.unchanged == len(resources), third.summary()
    stored = client.read("AdverseEvent", events[0]["id"]) if first.routes["AdverseEvent"].lookup == "read" else None
    if stored is not None:
        assert stored["identifier"]["value"] == events[0]["identifier"]["value"]
        instance = stored["suspectEntity"][0]["instance"]["reference"]
        kind, server_id = instance.split("/")
        assert client.read(kind, server_id)["resourceType"] == kind
