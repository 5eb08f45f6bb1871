"""What a first push asks and sends: one count per type and identifier system instead of a search per few dozen
keys, every look-up kept wherever that count cannot say "none", and references inside a transaction by the ids
chosen for its entries (tests/fakefhir.py through respx)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from fakefhir import BASE, SYS, FakeFhir, res, trial

from fhir_lupus.bundle import key_id
from fhir_lupus.client import FhirClient, RetryPolicy
from fhir_lupus.journal import Journal
from fhir_lupus.push import PushOptions, PushReport, dry_run, push_resources
from fhir_lupus.push._lookup import unclaimed


@pytest.fixture
def client() -> Iterator[FhirClient]:
    with FhirClient(BASE, retry=RetryPolicy(attempts=2, sleep=lambda _: None)) as fhir:
        yield fhir


def push(server: FakeFhir, tmp_path: Path, resources: list[dict[str, Any]], name: str = "journal") -> PushReport:
    """A push of ``resources`` to ``server`` (answering through respx) with a journal of its own."""
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1", port=9).mock(side_effect=server)
        with FhirClient(BASE) as fhir, Journal(tmp_path / f"{name}.sqlite") as journal:
            return push_resources(
                copy.deepcopy(resources),
                fhir,
                journal,
                source="t",
                mapping_version="t",
                options=PushOptions(batch_size=3, concurrency=2),
            )


def key_searches(server: FakeFhir) -> list[str]:
    """The look-ups of business keys: identifier searches that name a value (not ``system|`` counts)."""
    return [p for m, p in server.requests if m == "GET" and "identifier=" in p and "_summary=count" not in p]


def counts(server: FakeFhir) -> list[str]:
    return [p for m, p in server.requests if m == "GET" and "_summary=count" in p]


def stored(server: FakeFhir) -> dict[str, list[dict[str, Any]]]:
    """What the server holds, without what it stamps on a write and the Provenance (which names its push)."""
    return {
        kind: sorted(({k: v for k, v in r.items() if k != "meta"} for r in server.all(kind)), key=str)
        for kind in sorted(server.store)
        if kind != "Provenance"
    }


def test_a_first_push_counts_each_system_once_and_writes_what_the_look_ups_would_have(tmp_path: Path) -> None:
    counting, searching = FakeFhir(), FakeFhir(summary_count=False)  # the second answers _summary with no total
    first = push(counting, tmp_path, trial(), "a")
    looked = push(searching, tmp_path, trial(), "b")
    assert first.complete and first.created == looked.created == len(trial())
    assert stored(counting) == stored(searching)
    assert key_searches(counting) == [] and len(key_searches(searching)) >= 6
    types = {r["resourceType"] for r in trial() if r["resourceType"] != "CodeSystem"}  # CodeSystem: by its url
    assert sorted(p.split("?")[0] for p in counts(counting)) == sorted(types)  # once per type, for 3 windows


def test_a_system_the_server_already_holds_is_looked_up_key_by_key(tmp_path: Path) -> None:
    server = FakeFhir()
    theirs = server.add({**res("Organization", "org"), "name": "theirs"})["id"]
    report = push(server, tmp_path, trial())
    assert report.complete and report.updated == 1 and report.created == len(trial()) - 1
    assert [o["id"] for o in server.all("Organization")] == [theirs]  # found, written by its id: no twin
    asked = [p.split("&")[0] for p in key_searches(server) if p.startswith("Organization")]
    assert asked == [f"Organization?identifier={SYS}|org"]


def test_a_push_stopped_half_way_looks_its_keys_up_the_next_time(tmp_path: Path) -> None:
    server = FakeFhir(fail_types={"Patient"})
    with pytest.raises(Exception, match="500"):
        push(server, tmp_path, trial())
    written = {kind: [r["id"] for r in server.all(kind)] for kind in server.store}
    assert written and "Patient" not in written
    server.fail_types, server.requests[:] = set(), []
    rerun = push(server, tmp_path, trial(), "fresh journal")  # the journal knows nothing: the server must say
    assert rerun.complete and rerun.created == len(trial()) - sum(len(ids) for ids in written.values())
    assert {kind: [r["id"] for r in server.all(kind)] for kind in written} == written  # nothing twice
    assert key_searches(server)  # the systems it had written under are no longer unclaimed


def test_a_key_under_a_superseded_system_is_still_looked_up(tmp_path: Path) -> None:
    server = FakeFhir()
    old = server.add({**res("Organization", "org"), "identifier": [{"system": "urn:old", "value": "org"}]})["id"]
    moved = {
        **res("Organization", "org"),
        "identifier": [{"system": SYS, "value": "org"}, {"system": "urn:old", "value": "org", "use": "old"}],
    }
    report = push(server, tmp_path, [moved])
    assert report.complete and report.updated == 1 and [o["id"] for o in server.all("Organization")] == [old]


def test_the_dry_run_counts_too_and_sees_everything_as_new(client: FhirClient, fake: FakeFhir) -> None:
    preview = dry_run(trial(), client)
    assert preview.counts["create"] == len(trial()) and key_searches(fake) == []


class TestUnclaimed:
    def test_only_a_count_of_zero_says_so(self, fake: FakeFhir, client: FhirClient) -> None:
        assert unclaimed(client, "Organization", SYS)
        fake.add(res("Organization", "org"))
        assert not unclaimed(client, "Organization", SYS)
        assert unclaimed(client, "Organization", "urn:other")  # another system of the same type
        assert unclaimed(client, "Location", SYS)

    def test_any_answer_but_a_count_is_no(self, fake: FakeFhir, client: FhirClient) -> None:
        fake.refuse_params = {("Organization", "identifier")}
        assert not unclaimed(client, "Organization", SYS)  # 400: the look-ups then fall back as before
        fake.summary_count = False
        assert not unclaimed(client, "Location", SYS)  # a searchset without a total
        before = len(fake.requests)
        assert not unclaimed(client, "Location", "urn:a|b") and not unclaimed(client, "Location", "urn:a,b")
        assert not unclaimed(client, "Location", "")
        assert len(fake.requests) == before  # a system a token query cannot carry as it is is not asked


def test_inside_a_transaction_an_entry_put_to_our_id_is_referred_to_by_that_id(tmp_path: Path) -> None:
    server, bodies = FakeFhir(), []

    def recorded(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.rstrip("/").endswith("/fhir"):
            bodies.append(json.loads(request.content))
        return server(request)

    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1", port=9).mock(side_effect=recorded)
        with FhirClient(BASE) as fhir, Journal(tmp_path / "journal.sqlite") as journal:
            report = push_resources(copy.deepcopy(trial()), fhir, journal, source="t", mapping_version="t")
    assert report.complete and len(bodies) == 1  # one window, one transaction
    sent = {e["fullUrl"]: e for e in bodies[0]["entry"]}
    score = sent["urn:uuid:score"]["resource"]
    lab_id = key_id("Observation", f"{SYS}|lab")
    assert score["derivedFrom"] == [{"reference": f"Observation/{lab_id}"}]  # PUT Observation/<lab_id> alike
    assert score["subject"] == {"reference": "urn:uuid:p"}  # the Patient is a conditional create: a placeholder
    assert sent["urn:uuid:p"]["request"]["method"] == "POST"
    stored = {o["identifier"][0]["value"]: o for o in server.all("Observation")}
    patient = server.all("Patient")[0]["id"]
    assert stored["score"]["derivedFrom"] == [{"reference": f"Observation/{stored['lab']['id']}"}]
    assert stored["score"]["subject"] == {"reference": f"Patient/{patient}"}
