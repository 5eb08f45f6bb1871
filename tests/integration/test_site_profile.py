"""A site's canonical base changed after a push: on real servers everything written under the old base is found
and updated in place (never duplicated) once the old base is listed as superseded, and pull still finds it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from fhir_lupus import load_trial
from fhir_lupus.client import FhirClient
from fhir_lupus.errors import SiteProfileError
from fhir_lupus.journal import Journal
from fhir_lupus.pull import pull_study
from fhir_lupus.push import push_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import EXAMPLE_PROFILE

pytestmark = pytest.mark.integration


def moved_profile(settings: Settings, target: Path, *, superseded: bool) -> Path:
    """The run's own site profile with its canonical base moved (and the old one listed when ``superseded``)."""
    profile = yaml.safe_load((settings.pack.root / EXAMPLE_PROFILE).read_text(encoding="utf-8"))
    old = profile["canonical_base"]
    profile["canonical_base"] = old + "-moved"
    profile["superseded"] = {"canonical_base": [old] if superseded else [], "identifier_systems": {}}
    target.write_text(yaml.safe_dump(profile), encoding="utf-8")
    return target


def test_a_moved_canonical_base_updates_what_was_written_in_place(
    client: FhirClient, isolated_settings: Settings, subset: Callable[..., Path], tmp_path: Path
) -> None:
    data, report = load_trial(subset(1), pack=isolated_settings.pack)
    nct = data.study.nct_id
    subject = data.subjects[0].record.subject_id
    old_system = isolated_settings.pack.identifier_system("subject", study=nct)
    with Journal(tmp_path / "journal.sqlite") as journal:
        first = push_trial(TrialSource.loaded(data, report), client, journal, source="t", settings=isolated_settings)
        assert first.complete and first.created > 0, first.summary()
        [written] = client.search("ResearchSubject", {"identifier": f"{old_system}|{subject}"})

        unlisted = Settings.from_mappings(
            isolated_settings.pack.root,
            site=moved_profile(isolated_settings, tmp_path / "unlisted.yaml", superseded=False),
        )
        with pytest.raises(SiteProfileError, match="canonical_base was"):
            push_trial(TrialSource.loaded(data, report), client, journal, source="t", settings=unlisted)

        moved = Settings.from_mappings(
            isolated_settings.pack.root, site=moved_profile(isolated_settings, tmp_path / "moved.yaml", superseded=True)
        )
        second = push_trial(TrialSource.loaded(data, report), client, journal, source="t", settings=moved)
        assert second.complete and second.created == 0 and second.updated > 0, second.summary()
        new_system = moved.pack.identifier_system("subject", study=nct)
        assert new_system != old_system
        [updated] = client.search("ResearchSubject", {"identifier": f"{new_system}|{subject}"})
        assert updated["id"] == written["id"]
        assert list(client.search("ResearchSubject", {"identifier": f"{old_system}|{subject}"})) == []

        third = push_trial(TrialSource.loaded(data, report), client, journal, source="t", settings=moved)
        assert third.written == 0, third.summary()
        pulled = pull_study(client, journal, data.study, since=None, settings=moved)
        assert pulled.subjects == 1 and pulled.total_rows >= len(data.labs)
