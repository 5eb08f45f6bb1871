"""A full push and pull against HAPI and Medplum, every logger at DEBUG: no MRN, pseudonym, birth date or token
in the logs, and the audit trail holds one push and one pull entry that verify."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from fhir_lupus import load_trial
from fhir_lupus.audit import default_audit_path, read_entries, verify
from fhir_lupus.client import BearerAuth, FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.pull import pull_study
from fhir_lupus.push import push_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource

pytestmark = pytest.mark.integration

TOKEN = "integration-static-bearer-0f3c9d2e7a"  # HAPI and Medplum's dev servers take requests without auth


def test_push_and_pull_logs_hold_no_personal_data_and_are_audited(
    server_url: str,
    isolated_settings: Settings,
    subset: Callable[..., Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    directory = subset(2)
    data, report = load_trial(directory, pack=isolated_settings.pack)
    assert report.rejects == []
    with (directory / "subjects.csv").open(newline="") as handle:
        subjects = list(csv.DictReader(handle))
    secrets = {TOKEN} | {s[k] for s in subjects for k in ("mrn", "pseudonym", "birth_date") if len(s[k]) > 4}
    assert any(s["mrn"] for s in subjects) and any(len(s["birth_date"]) == 10 for s in subjects)

    caplog.set_level(logging.DEBUG)  # the root logger: fhir_lupus, httpx and httpcore all at DEBUG
    journal_path = tmp_path / "journal.sqlite"
    with FhirClient(server_url, auth=BearerAuth(TOKEN), timeout=120) as client, Journal(journal_path) as journal:
        pushed = push_trial(
            TrialSource.loaded(data, report), client, journal, source="test", settings=isolated_settings
        )
        assert pushed.complete, pushed.summary()
        pulled = pull_study(client, journal, data.study, since=None, settings=isolated_settings)
        assert pulled.subjects == 2 and pulled.rows

    text = caplog.text + "\n".join(f"{r.getMessage()}\n{r.exc_text or ''}" for r in caplog.records)
    assert "HTTP Request" in text and "identifier=[redacted]" in text  # httpx's lines were captured, redacted
    assert any(r.name.startswith("httpcore") for r in caplog.records)
    leaked = sorted(value for value in secrets if value in text)
    assert leaked == [], f"{len(leaked)} value(s) in the logs"

    log = default_audit_path(journal_path)
    entries = read_entries(log)
    assert [(e["kind"], e["outcome"]) for e in entries] == [("push", "complete"), ("pull", "complete")]
    assert entries[0]["counts"]["created"] == pushed.created and entries[1]["counts"]["rows"] == len(pulled.rows)
    assert verify(log).status == "ok"
    assert not any(value in log.read_text() for value in secrets)
