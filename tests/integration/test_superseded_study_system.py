"""The study's identifier system changed: on real servers a study stored under the superseded system is updated
in place (gaining the current identifier), never duplicated, and pull finds it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fhir_lupus import load_trial
from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.pipeline import map_trial
from fhir_lupus.pull import pull_study
from fhir_lupus.push import dry_run_trial, push_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import load_pack

pytestmark = pytest.mark.integration


def test_study_stored_under_the_superseded_system_is_updated_not_duplicated(
    client: FhirClient,
    isolated_mappings: Path,
    isolated_settings: Settings,
    subset: Callable[..., Path],
    tmp_path: Path,
) -> None:
    data, report = load_trial(subset(2), pack=isolated_settings.pack)
    assert report.rejects == []
    nct = data.study.nct_id
    pack = load_pack(isolated_mappings)
    current = pack.identifier_system("study", study=nct)
    superseded = pack.superseded_identifier_systems("study", study=nct)
    old = superseded[0]  # what this adapter wrote until mapping 2026.11
    theirs = client.create(
        {
            "resourceType": "ResearchStudy",
            "identifier": [{"use": "official", "system": old, "value": nct}],
            "status": "active",
            "title": "registered before the identifier system changed",
        }
    )
    expected = len(map_trial(TrialSource.loaded(data, report), settings=isolated_settings).resources)

    preview = dry_run_trial(TrialSource.loaded(data, report), client, settings=isolated_settings)
    assert preview.counts == {"create": expected - 1, "update": 1}, preview.counts
    with Journal(tmp_path / "journal.sqlite") as journal:
        first = push_trial(TrialSource.loaded(data, report), client, journal, source="test", settings=isolated_settings)
        assert first.complete and (first.created, first.updated) == (expected - 1, 1), first.summary()

        either = {"identifier": f"{current}|{nct},{old}|{nct}"}
        [study] = client.search("ResearchStudy", either)
        assert study["id"] == theirs["id"]
        assert [(i.get("use"), i["system"], i["value"]) for i in study["identifier"]] == [
            ("official", current, nct),
            *[("old", system, nct) for system in superseded],
        ]
        assert study["title"] == data.study.title  # our content replaced theirs
        for system in (current, old):
            assert [s["id"] for s in client.search("ResearchStudy", {"identifier": f"{system}|{nct}"})] == [
                theirs["id"]
            ]
        subjects = list(client.search("ResearchSubject", {"study": f"ResearchStudy/{theirs['id']}"}))
        assert len(subjects) == 2

        second = push_trial(
            TrialSource.loaded(data, report), client, journal, source="test", settings=isolated_settings
        )
        assert second.written == 0 and second.unchanged == expected, second.summary()
        state = dry_run_trial(TrialSource.loaded(data, report), client, journal=journal, settings=isolated_settings)
        assert state.counts == {"unchanged": expected}, [i for i in state.items if i.action != "unchanged"][:3]

        pulled = pull_study(client, journal, data.study, since=None, settings=isolated_settings)
        assert pulled.subjects == 2 and pulled.total_rows >= len(data.labs)
    assert len(list(client.search("ResearchStudy", either))) == 1
