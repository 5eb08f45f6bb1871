"""Push (and the pull that checks it) against real FHIR servers (HAPI FHIR JPA, Medplum), each test isolated."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fhir_lupus import load_trial
from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.model import TrialData
from fhir_lupus.pipeline import map_trial
from fhir_lupus.pull import pull_study
from fhir_lupus.pull._roundtrip import compare_round_trip
from fhir_lupus.push import PushOptions, dry_run, dry_run_trial, push_resources, push_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import LabCatalogue, load_pack

pytestmark = pytest.mark.integration


def load(data_dir: Path, mappings: Path) -> tuple[TrialData, object]:
    data, report = load_trial(data_dir, pack=load_pack(mappings))
    assert report.rejects == []
    return data, report


def test_push_is_idempotent_and_pull_returns_what_was_pushed(
    client: FhirClient,
    isolated_mappings: Path,
    isolated_settings: Settings,
    subset: Callable[..., Path],
    tmp_path: Path,
) -> None:
    data, report = load(subset(2), isolated_mappings)
    expected = len(map_trial(TrialSource.loaded(data, report), settings=isolated_settings).resources)

    before = dry_run_trial(TrialSource.loaded(data, report), client, settings=isolated_settings)
    assert before.counts["create"] == expected and before.counts["conflict"] == 0

    with Journal(tmp_path / "journal.sqlite") as journal:
        first = push_trial(TrialSource.loaded(data, report), client, journal, source="test", settings=isolated_settings)
        assert first.complete and first.created == expected and first.provenance, first.summary()
        after = dry_run_trial(TrialSource.loaded(data, report), client, settings=isolated_settings)
        assert after.counts == {"unchanged": expected}, [i for i in after.items if i.action != "unchanged"][:3]

        second = push_trial(
            TrialSource.loaded(data, report), client, journal, source="test", settings=isolated_settings
        )
        assert second.written == 0 and second.unchanged == expected and second.provenance is None

        pulled = pull_study(client, journal, data.study, since=None, settings=isolated_settings)
        trip = compare_round_trip(data, pulled.rows, LabCatalogue(load_pack(isolated_mappings)))
        rows = len(data.labs) + len(data.treg)  # Treg %, the secondary outcome, comes back as rows too
        assert trip.exact and trip.matched == rows, (trip.missing[:5], trip.different[:5], trip.extra[:5])
        assert pulled.subjects == 2 and not [u for u in pulled.unmapped if "treg-percent" in u.codes]
        assert {r.visit_code for r in pulled.rows if r.analyte == "treg_percent"} >= {"BL", "M03"}
        assert {r.visit_code for r in pulled.rows if r.window == "in-window"} >= {"BL", "M01", "M12"}

        incremental = pull_study(client, journal, data.study, since="auto", settings=isolated_settings)
        assert incremental.rows == [] and incremental.total_rows == rows


def test_changed_value_is_the_only_thing_sent_and_pulled_again(
    client: FhirClient,
    isolated_mappings: Path,
    isolated_settings: Settings,
    subset: Callable[..., Path],
    tmp_path: Path,
) -> None:
    source = subset(1)
    data, report = load(source, isolated_mappings)
    with Journal(tmp_path / "journal.sqlite") as journal:
        push_trial(TrialSource.loaded(data, report), client, journal, source="test", settings=isolated_settings)
        pull_study(client, journal, data.study, since=None, settings=isolated_settings)

        labs = source / "labs.csv"
        text = labs.read_text(encoding="utf-8")
        changed = text.replace("L-MSC-001-BL-C3,MSC-001,BL,c3,0.53,", "L-MSC-001-BL-C3,MSC-001,BL,c3,0.55,")
        assert changed != text
        labs.write_text(changed, encoding="utf-8")
        data2, report2 = load(source, isolated_mappings)
        time.sleep(1.1)  # _lastUpdated is compared at the server's precision
        third = push_trial(
            TrialSource.loaded(data2, report2), client, journal, source="test", settings=isolated_settings
        )
        # only the C3 result changed: 0.55 g/L is still below the range, so the BL SLEDAI stays the same
        assert third.written == 1 and third.updated == 1 and third.chunks == 1
        delta = pull_study(client, journal, data2.study, since="auto", settings=isolated_settings)
        assert [(r.result_id, r.value, r.unit) for r in delta.rows] == [("L-MSC-001-BL-C3", "0.55", "g/L")]


def test_dry_run_writes_nothing(
    client: FhirClient, isolated_mappings: Path, isolated_settings: Settings, subset: Callable[..., Path]
) -> None:
    data, report = load(subset(1), isolated_mappings)
    first = dry_run_trial(TrialSource.loaded(data, report), client, settings=isolated_settings)
    second = dry_run_trial(TrialSource.loaded(data, report), client, settings=isolated_settings)
    assert first.counts == second.counts == {"create": len(map_trial(TrialSource.loaded(data, report)).resources)}


def test_skipped_types_become_logical_references_the_server_accepts(
    client: FhirClient,
    isolated_mappings: Path,
    isolated_settings: Settings,
    subset: Callable[..., Path],
    tmp_path: Path,
) -> None:
    data, report = load(subset(1), isolated_mappings)
    skipped = frozenset({"Organization", "Location"})
    with Journal(tmp_path / "journal.sqlite") as journal:
        pushed = push_trial(
            TrialSource.loaded(data, report),
            client,
            journal,
            source="test",
            settings=isolated_settings,
            options=PushOptions(skip_types=skipped),
        )
    assert pushed.complete and pushed.count("skipped") == 2, pushed.summary()
    pack = load_pack(isolated_mappings)
    study_system = pack.identifier_system("study", study=data.study.nct_id)
    [study] = client.search("ResearchStudy", {"identifier": f"{study_system}|{data.study.nct_id}"})
    sponsor = study["sponsor"]
    assert "reference" not in sponsor and sponsor["identifier"]["system"] == pack.identifier_system(
        "organization", study=data.study.nct_id
    )
    assert all("identifier" in site and "reference" not in site for site in study["site"])
    assert not list(client.search("Organization", {"identifier": f"{sponsor['identifier']['system']}|"}))


def test_multiple_matches_are_reported_with_server_ids_and_held_back(
    client: FhirClient, isolated_mappings: Path, tmp_path: Path
) -> None:
    pack = load_pack(isolated_mappings)
    system = pack.identifier_system("organization", study="NCT00698191")
    twins = []
    for _ in range(2):
        created = client.create(
            {"resourceType": "Organization", "identifier": [{"system": system, "value": "dup"}], "name": "twin"}
        )
        twins.append(created["id"])
    org = {
        "resourceType": "Organization",
        "id": "o-1",
        "identifier": [{"system": system, "value": "dup"}],
        "name": "ours",
    }
    location = {
        "resourceType": "Location",
        "id": "l-1",
        "identifier": [{"system": system, "value": "loc"}],
        "name": "ward",
        "managingOrganization": {"reference": "Organization/o-1"},
    }
    other = {
        "resourceType": "Organization",
        "id": "o-2",
        "identifier": [{"system": system, "value": "solo"}],
        "name": "fine",
    }
    preview = dry_run([org, location, other], client)
    assert {(i.business_key.split("|")[1], i.action) for i in preview.items} == {
        ("dup", "conflict"),
        ("loc", "held-back"),
        ("solo", "create"),
    }
    assert sorted(next(i for i in preview.items if i.action == "conflict").server_ids) == sorted(twins)
    with Journal(tmp_path / "journal.sqlite") as journal:
        report = push_resources([org, location, other], client, journal, source="test", mapping_version="t")
    problems = {p.business_key.split("|", 1)[1]: p for p in report.problems}
    assert sorted(problems["dup"].server_ids) == sorted(twins) and problems["dup"].kind == "conflict"
    assert problems["loc"].kind == "held-back" and "Organization/o-1" in problems["loc"].reason
    assert report.created == 1 and not report.complete  # only the unrelated organization
    names = [r["name"] for r in client.search("Organization", {"identifier": f"{system}|dup"})]
    assert sorted(names) == ["twin", "twin"]  # neither twin was overwritten


def _retire(client: FhirClient, resource_type: str, code: str, expression: str, kind: str) -> str:
    """Retire a built-in search parameter on HAPI (a SearchParameter with status retired, same code and base)."""
    sp_id = f"retire-{resource_type.lower()}-{code}"
    client.put(
        f"SearchParameter/{sp_id}",
        {
            "resourceType": "SearchParameter",
            "id": sp_id,
            "url": f"http://fhir-lupus.example.org/test/SearchParameter/{sp_id}",
            "name": code,
            "status": "retired",
            "description": f"{resource_type}.{code} is not searchable on this server (a test of fhir_lupus)",
            "code": code,
            "base": [resource_type],
            "type": kind,
            "expression": expression,
        },
    )
    return sp_id


@pytest.mark.parametrize("server_url", ["hapi"], indirect=True)
def test_types_the_server_cannot_search_by_key_fall_back_on_a_real_server(
    client: FhirClient,
    isolated_mappings: Path,
    isolated_settings: Settings,
    subset: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """HAPI without CodeSystem?url (system searches the same element) and without Organization?identifier."""
    data, report = load(subset(1), isolated_mappings)
    resources = map_trial(TrialSource.loaded(data, report), settings=isolated_settings).resources
    expected = len(resources)
    # Read by our id, the Organization is the same resource in every run against a long-lived server: one that an
    # earlier run left is updated, not created (CI's server is fresh, a developer's may not be).
    organization = next(r for r in resources if r["resourceType"] == "Organization")
    left_before = len(list(client.search("Organization", {"_id": organization["id"]})))
    retired = [
        _retire(client, "CodeSystem", "url", "CodeSystem.url", "uri"),
        _retire(client, "Organization", "identifier", "Organization.identifier", "token"),
    ]
    try:
        with FhirClient(client.base_url, timeout=120) as fresh, Journal(tmp_path / "journal.sqlite") as journal:
            pushed = push_trial(
                TrialSource.loaded(data, report), fresh, journal, source="test", settings=isolated_settings
            )
            assert pushed.complete and pushed.created == expected - left_before, pushed.summary()
            assert pushed.updated == left_before, pushed.summary()
            assert pushed.routes["CodeSystem"].search_param == "system"
            assert pushed.routes["Organization"].lookup == "read"  # PUT Organization/<our id>: update-as-create
            again = push_trial(
                TrialSource.loaded(data, report), fresh, journal, source="test", settings=isolated_settings
            )
            assert again.written == 0 and again.unchanged == expected
            state = dry_run_trial(TrialSource.loaded(data, report), fresh, journal=journal, settings=isolated_settings)
            assert state.counts == {"unchanged": expected}
        codesystem_url = load_pack(isolated_mappings).system_uri("project")
        assert len(list(client.search("CodeSystem", {"system": codesystem_url}))) == 1
    finally:
        for sp_id in retired:
            client.delete("SearchParameter", sp_id)
    deadline = time.monotonic() + 60  # HAPI reindexes after the undo: wait until the identifier finds again
    org_system = load_pack(isolated_mappings).identifier_system("organization", study=data.study.nct_id)
    while not list(client.search("Organization", {"identifier": f"{org_system}|"})) and time.monotonic() < deadline:
        time.sleep(0.5)
