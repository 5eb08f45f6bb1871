"""The Subscription watch registers: built from the mappings, registered once (found again by its tag and updated),
activated or not, removed, audited without the secret; against tests/subscriptionfake.py through respx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import respx
import yaml
from subscriptionfake import BASE, SubscriptionServer

from fhir_lupus.audit import read_entries
from fhir_lupus.client import FatalHttpError, FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.settings import Settings
from fhir_lupus.terminology import load_fhir_codes
from fhir_lupus.watch import (
    SECRET_HEADER,
    SubscriptionSpec,
    register_subscription,
    remove_subscription,
    subscription_resource,
)

SECRET = "a-secret-that-must-not-leak-0123456789"
SPEC = SubscriptionSpec("NCT00698191", "http://127.0.0.1:8765/fhir-lupus/watch", SECRET)


@pytest.fixture
def server() -> Iterator[SubscriptionServer]:
    fake = SubscriptionServer()
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1", port=9).mock(side_effect=fake)
        yield fake


@pytest.fixture
def client() -> Iterator[FhirClient]:
    with FhirClient(BASE) as fhir:
        yield fhir


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal(tmp_path / "journal.sqlite") as book:
        yield book


def _register(client: FhirClient, journal: Journal, spec: SubscriptionSpec = SPEC, **kwargs: float):
    return register_subscription(
        client, journal, spec, settings=Settings.default(), sleep=lambda _s: None, interval=0, **kwargs
    )


class TestResource:
    def test_laboratory_observations_by_rest_hook_with_the_secret_header(self) -> None:
        settings = Settings.default()
        pack = settings.pack
        category = load_fhir_codes(pack).lab_category
        resource = subscription_resource(SPEC, settings)
        assert resource["status"] == "requested"
        assert resource["criteria"] == f"Observation?category={pack.system_uri(category.system)}|{category.code}"
        assert resource["channel"] == {
            "type": "rest-hook",
            "endpoint": SPEC.endpoint,
            "payload": "application/fhir+json",
            "header": [f"{SECRET_HEADER}: {SECRET}"],
            # mappings/fhir/watch.yaml: HAPI's extension to notify deletions too, a plain extension others ignore
            "extension": [
                {"url": e["url"], "valueBoolean": e["valueBoolean"]}
                for e in yaml.safe_load((pack.root / "fhir" / "watch.yaml").read_text(encoding="utf-8"))[
                    "channel_extensions"
                ]
            ],
        }
        assert resource["channel"]["extension"]  # the file is not empty
        tag = resource["meta"]["tag"]
        assert tag == [
            {"system": pack.identifier_system("watch", study=SPEC.study), "code": f"{SPEC.study}@{SPEC.endpoint}"}
        ]

    def test_an_empty_payload_has_no_payload_element(self) -> None:
        spec = SubscriptionSpec(SPEC.study, SPEC.endpoint, SECRET, payload="empty")
        assert "payload" not in subscription_resource(spec, Settings.default())["channel"]


class TestRegistration:
    def test_created_once_then_found_by_its_tag_and_updated(
        self, server: SubscriptionServer, client: FhirClient, journal: Journal
    ) -> None:
        first = _register(client, journal)
        second = _register(client, journal)
        assert first.created and not second.created
        assert second.id == first.id
        assert list(server.store) == [first.id]
        assert [m for m, p in server.requests if p.startswith("Subscription")].count("POST") == 1
        assert ("PUT", f"Subscription/{first.id}") in server.requests

    def test_another_endpoint_is_another_subscription(
        self, server: SubscriptionServer, client: FhirClient, journal: Journal
    ) -> None:
        _register(client, journal)
        _register(client, journal, SubscriptionSpec(SPEC.study, "http://127.0.0.1:9999/hook", SECRET))
        assert len(server.store) == 2

    def test_twins_left_by_an_old_bug_are_removed(
        self, server: SubscriptionServer, client: FhirClient, journal: Journal
    ) -> None:
        resource = subscription_resource(SPEC, Settings.default())
        server.store = {"a": {**resource, "id": "a"}, "b": {**resource, "id": "b"}}
        registration = _register(client, journal)
        assert registration.id == "a" and list(server.store) == ["a"]

    def test_active_once_the_server_says_so(
        self, server: SubscriptionServer, client: FhirClient, journal: Journal
    ) -> None:
        server.activate_after = 3
        registration = _register(client, journal, timeout=30)
        assert registration.active and registration.note is None
        assert server.requests.count(("GET", f"Subscription/{registration.id}")) == 3

    def test_never_active_means_polling_said(
        self, server: SubscriptionServer, client: FhirClient, journal: Journal
    ) -> None:
        server.activate_after = None
        registration = _register(client, journal, timeout=0)
        assert not registration.active
        assert registration.status == "requested"
        assert registration.note and "periodic pull" in registration.note

    def test_error_status_means_polling_said(
        self, server: SubscriptionServer, client: FhirClient, journal: Journal
    ) -> None:
        server.status_after_read = "error"
        registration = _register(client, journal, timeout=30)
        assert registration.status == "error"
        assert registration.note and "error" in registration.note


class TestRemovalAndAudit:
    def test_removed_and_both_audited_without_the_secret(
        self, server: SubscriptionServer, client: FhirClient, journal: Journal, tmp_path: Path
    ) -> None:
        settings = Settings.default()
        registration = _register(client, journal)
        remove_subscription(client, journal, SPEC, registration, settings=settings)
        assert server.store == {}
        log = tmp_path / "journal.audit.jsonl"
        entries = read_entries(log)
        assert [(e["kind"], e["outcome"]) for e in entries] == [
            ("subscription", "registered"),
            ("subscription", "removed"),
        ]
        assert entries[0]["counts"]["created"] == 1
        assert entries[0]["details"]["subscription"] == registration.id
        assert entries[1]["details"]["subscription"] == registration.id
        assert SECRET not in log.read_text(encoding="utf-8")

    def test_a_subscription_already_gone_is_removed_without_error(
        self, server: SubscriptionServer, client: FhirClient, journal: Journal, tmp_path: Path
    ) -> None:
        registration = _register(client, journal)
        server.store.clear()
        remove_subscription(client, journal, SPEC, registration, settings=Settings.default())
        assert read_entries(tmp_path / "journal.audit.jsonl")[-1]["outcome"] == "removed"

    def test_a_failed_registration_is_audited(self, client: FhirClient, journal: Journal, tmp_path: Path) -> None:
        with respx.mock(assert_all_called=False) as mock:
            mock.route(host="127.0.0.1", port=9).respond(403, json={"resourceType": "OperationOutcome", "issue": []})
            with pytest.raises(FatalHttpError):
                _register(client, journal)
        entry = read_entries(tmp_path / "journal.audit.jsonl")[-1]
        assert entry["kind"] == "subscription" and entry["outcome"].startswith("failed: ")
        assert json.dumps(entry).find(SECRET) == -1
