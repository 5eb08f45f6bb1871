"""A second push of unchanged inputs on a real server: nothing mapped, yet an edit made on the server since the
first push is found by the look per type (``_lastUpdated``), looked up, compared and written back, as a push
that looks every resource up would (push/_repush.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from support import spy_on_subject_maps

from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.push import PushReport, push_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource

pytestmark = pytest.mark.integration


def _push(data: Path, client: FhirClient, journal: Journal, settings: Settings) -> PushReport:
    with TrialSource.directory(data, settings=settings) as trial:
        trial.check()
        return push_trial(trial, client, journal, source="test", settings=settings, audit_log=False)


@pytest.mark.parametrize("server_url", ["hapi"], indirect=True)
def test_an_edit_on_the_server_between_two_unchanged_pushes_is_found_and_written_back(
    client: FhirClient,
    isolated_settings: Settings,
    subset: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mapped = spy_on_subject_maps(monkeypatch)
    data = subset(2)
    with Journal(tmp_path / "journal.sqlite") as journal:
        first = _push(data, client, journal, isolated_settings)
        assert first.complete and len(mapped) == 2, first.summary()
        with journal.transaction() as db:
            subject, key = db.execute(
                "SELECT subject, business_key FROM subject_resource WHERE resource_type = 'Observation' "
                "ORDER BY subject, business_key"
            ).fetchone()
        server_id = journal.entries(client.base_url)[("Observation", key)].server_id
        edited = client.read("Observation", str(server_id))
        edited["note"] = [{"text": "changed by hand on the server"}]
        client.put(f"Observation/{server_id}", edited)

        mapped.clear()
        second = _push(data, client, journal, isolated_settings)
        assert mapped == [subject] and second.updated == 1 and second.complete, second.summary()
        assert any("changed on the server" in warning for warning in second.warnings)
        assert "note" not in client.read("Observation", str(server_id))

        mapped.clear()
        third = _push(data, client, journal, isolated_settings)
        assert mapped == [] and third.written == 0 and third.unchanged == first.total, third.summary()
        assert third.content_digest == first.content_digest
