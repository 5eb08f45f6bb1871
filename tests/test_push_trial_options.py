"""push_trial's validation workers and its journal questions (issue 25, item 1): what is sent is the same with
workers, and a first push does not ask the journal about each resource it maps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import respx
from fakefhir import BASE, FakeFhir
from typer.testing import CliRunner

from fhir_lupus.cli import app
from fhir_lupus.client import FhirClient, RetryPolicy
from fhir_lupus.journal import Journal
from fhir_lupus.push import PushOptions, PushReport, push_trial
from fhir_lupus.source import TrialSource


def push(data: Path, client: FhirClient, journal: Journal, workers: int | None) -> PushReport:
    with TrialSource.directory(data) as trial:
        trial.check()
        return push_trial(trial, client, journal, source="test", options=PushOptions(workers=workers))


def stored(fake: FakeFhir) -> dict[str, dict[str, object]]:
    """The server's resources by type and id, without the server's own bookkeeping (meta)."""
    return {
        kind: {rid: {k: v for k, v in body.items() if k != "meta"} for rid, body in resources.items()}
        for kind, resources in fake.store.items()
        if kind != "Provenance"
    }


def pushed_to_a_fresh_server(data: Path, journal_path: Path, workers: int) -> tuple[PushReport, FakeFhir]:
    server = FakeFhir()
    with respx.mock(assert_all_called=False) as mock, Journal(journal_path) as journal:
        mock.route(host="127.0.0.1", port=9).mock(side_effect=server)
        with FhirClient(BASE, retry=RetryPolicy(attempts=2, sleep=lambda _: None)) as client:
            return push(data, client, journal, workers), server


def test_a_push_with_two_workers_writes_what_one_writes(dataset: Callable[..., Path], tmp_path: Path) -> None:
    data = dataset(lambda rows: rows["labs.csv"][0].update(value="-5"))  # one lab refused by the checks' limits
    alone, one = pushed_to_a_fresh_server(data, tmp_path / "one.sqlite", 1)
    pooled, two = pushed_to_a_fresh_server(data, tmp_path / "two.sqlite", 2)
    assert stored(two) == stored(one) and alone.created == pooled.created > 0
    assert pooled.content_digest == alone.content_digest


def test_a_first_push_asks_the_journal_nothing_per_resource(
    dataset: Callable[..., Path], journal: Journal, fake: FakeFhir, client: FhirClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    real = Journal.confirmed_hash

    def counting(self: Journal, server: str, resource_type: str, key: str) -> str | None:
        asked.append(resource_type)
        return real(self, server, resource_type, key)

    monkeypatch.setattr(Journal, "confirmed_hash", counting)
    data = dataset()
    assert not journal.holds_confirmed(client.base_url)
    first = push(data, client, journal, 1)
    assert first.created > 0 and asked == []
    assert journal.holds_confirmed(client.base_url) and not journal.holds_confirmed("http://elsewhere.test/fhir")
    changed = dataset(lambda rows: rows["labs.csv"][0].update(value="0.77"))  # a changed subject is mapped again
    again = push(changed, client, journal, 1)
    assert again.updated == 1 and asked  # ... and what the journal holds spares validating its unchanged resources


def test_the_push_command_takes_workers(dataset: Callable[..., Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["push", "--help"])
    assert result.exit_code == 0 and "--workers" in result.output
    refused = CliRunner().invoke(
        app,
        [
            "push",
            str(dataset()),
            "--server",
            "http://127.0.0.1:9/fhir",
            "--workers",
            "0",
            "--journal",
            str(tmp_path / "j"),
        ],
    )
    assert refused.exit_code == 2 and "--workers" in refused.output
