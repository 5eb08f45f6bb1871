"""The schedule of activities (PlanDefinition / ActivityDefinition) on real FHIR servers: pushed, found again by
its business identifier, referenced from ResearchStudy.protocol, and unchanged on a second push."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fhir_lupus import load_trial
from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.pipeline import map_trial
from fhir_lupus.push import dry_run_trial, push_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import load_pack

pytestmark = pytest.mark.integration

SCHEDULE_TYPES = ("PlanDefinition", "ActivityDefinition")


def test_schedule_of_activities_round_trips_and_second_push_is_unchanged(
    client: FhirClient,
    isolated_mappings: Path,
    isolated_settings: Settings,
    subset: Callable[..., Path],
    tmp_path: Path,
) -> None:
    data, report = load_trial(subset(1), pack=isolated_settings.pack)
    assert report.rejects == []
    resources = map_trial(TrialSource.loaded(data, report), settings=isolated_settings).resources
    ours = {r["resourceType"]: 0 for r in resources}
    for resource in resources:
        ours[resource["resourceType"]] += 1
    assert ours["PlanDefinition"] == len(data.study.visits()) + 1
    assert ours["ActivityDefinition"] == len(data.study.protocol.activities)

    with Journal(tmp_path / "journal.sqlite") as journal:
        first = push_trial(TrialSource.loaded(data, report), client, journal, source="test", settings=isolated_settings)
        assert first.complete, first.summary()
        second = push_trial(
            TrialSource.loaded(data, report), client, journal, source="test", settings=isolated_settings
        )
        assert second.written == 0 and second.unchanged == len(resources), second.summary()
    # a fresh journal: the plan looks every resource up on the server by its identifier and finds it unchanged
    fresh = dry_run_trial(TrialSource.loaded(data, report), client, settings=isolated_settings)
    assert fresh.counts == {"unchanged": len(resources)}, [i for i in fresh.items if i.action != "unchanged"][:3]

    pack = load_pack(isolated_mappings)
    system = pack.identifier_system("plan_definition", study=data.study.nct_id)
    (protocol,) = client.search("PlanDefinition", {"identifier": f"{system}|protocol"})
    assert [action["id"] for action in protocol["action"]] == [visit.code for visit in data.study.visits()]
    assert protocol["meta"]["profile"] == [pack.profile_url("soa_study_protocol")]
    fu30 = next(action for action in protocol["action"] if action["id"] == "FU30")
    assert fu30["relatedAction"][1]["extension"][0]["url"] == pack.extension_url("soa_acceptable_offset_range")
    study_system = pack.identifier_system("study", study=data.study.nct_id)
    (study,) = client.search("ResearchStudy", {"identifier": f"{study_system}|{data.study.nct_id}"})
    assert study["protocol"] == [{"reference": f"PlanDefinition/{protocol['id']}"}]
    activity_system = pack.identifier_system("activity_definition", study=data.study.nct_id)
    (treg,) = client.search("ActivityDefinition", {"identifier": f"{activity_system}|treg"})
    assert treg["url"] in {action["definitionCanonical"] for action in _visit(client, system, "M03")["action"]}


def _visit(client: FhirClient, system: str, code: str) -> dict[str, object]:
    (visit,) = client.search("PlanDefinition", {"identifier": f"{system}|visit-{code}"})
    return visit
