"""A preliminary value never replaces a final one on a real server (HAPI FHIR JPA, Medplum): a SLEDAI-2K total pushed
as final, then offered again as preliminary with another value, is held back by push and by the dry run, while a
preliminary total the server lacks is created and later replaced by its final version."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fhir_lupus import load_trial
from fhir_lupus.bundle import business_key, local_ref, references
from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.pipeline import map_trial
from fhir_lupus.push import dry_run, push_resources
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource

pytestmark = pytest.mark.integration

Resource = dict[str, Any]


def sledai_totals(resources: list[Resource]) -> dict[str, Resource]:
    """The SLEDAI-2K total Observations (code sledai-2k-total, category survey) by visit (the identifier's tail)."""
    return {
        r["identifier"][0]["value"].rsplit("/", 1)[1]: r
        for r in resources
        if r["resourceType"] == "Observation"
        and any(c.get("code") == "sledai-2k-total" for c in r["code"]["coding"])
        and any(c.get("code") == "survey" for cat in r["category"] for c in cat["coding"])
    }


def with_references(chosen: list[Resource], resources: list[Resource]) -> list[Resource]:
    """``chosen`` and everything they refer to, directly or through others: a handful, not the whole trial."""
    by_ref = {local_ref(r): r for r in resources}
    wanted = {local_ref(r) for r in chosen}
    todo = list(wanted)
    while todo:
        for target in references(by_ref[todo.pop()]):
            if target in by_ref and target not in wanted:
                wanted.add(target)
                todo.append(target)
    return [r for r in resources if local_ref(r) in wanted]


def replaced(resources: list[Resource], new: Resource) -> list[Resource]:
    return [new if r["id"] == new["id"] else r for r in resources]


def test_a_final_total_on_the_server_is_never_replaced_by_a_preliminary_one(
    client: FhirClient, isolated_settings: Settings, subset: Callable[..., Path], tmp_path: Path
) -> None:
    data, report = load_trial(subset(1), pack=isolated_settings.pack)
    assert report.rejects == []
    mapped = map_trial(TrialSource.loaded(data, report), settings=isolated_settings).resources
    totals = sledai_totals(mapped)
    baseline, month1 = totals["BL"], totals["M01"]
    assert baseline["status"] == month1["status"] == "final"
    handful = with_references([baseline, month1], mapped)
    assert len(handful) < 40
    first_push = [r for r in handful if r["id"] != month1["id"]]  # the server has no M01 total yet
    doubtful = {**baseline, "status": "preliminary", "valueInteger": baseline["valueInteger"] + 7}
    month1_preliminary = {**month1, "status": "preliminary"}
    system, value = baseline["identifier"][0]["system"], baseline["identifier"][0]["value"]

    def push(resources: list[Resource]) -> Any:
        return push_resources(
            resources, client, journal, source="test", mapping_version="t", settings=isolated_settings
        )

    with Journal(tmp_path / "journal.sqlite") as journal:
        first = push(first_push)
        assert first.complete and first.created == len(first_push), first.summary()

        second_push = replaced(replaced(handful, doubtful), month1_preliminary)
        second = push(second_push)
        assert not second.complete and second.count("held-back") == 1, second.summary()
        assert second.created == 1 and second.updated == 0  # the preliminary M01 total, which the server lacked
        held = next(p for p in second.problems if p.kind == "held-back")
        assert held.business_key == business_key(baseline)
        assert "the server holds a final version" in held.reason and "ours is preliminary" in held.reason
        stored = list(client.search("Observation", {"identifier": f"{system}|{value}"}))
        assert [(s["status"], s["valueInteger"]) for s in stored] == [("final", baseline["valueInteger"])]

        preview = dry_run(second_push, client, journal=journal, settings=isolated_settings)
        actions = {(i.business_key, i.action) for i in preview.items if i.resource_type == "Observation"}
        assert (business_key(baseline), "held-back") in actions
        assert (business_key(month1), "unchanged") in actions
        assert preview.counts["held-back"] == 1 and preview.counts["create"] == preview.counts["update"] == 0

        third = push(handful)  # the final M01 total replaces its preliminary version; the baseline is unchanged
        assert third.complete and third.updated == 1 and third.created == 0, third.summary()
        m01_system, m01_value = month1["identifier"][0]["system"], month1["identifier"][0]["value"]
        stored = list(client.search("Observation", {"identifier": f"{m01_system}|{m01_value}"}))
        assert [s["status"] for s in stored] == ["final"]
