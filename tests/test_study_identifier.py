"""The ClinicalTrials.gov identifier system changed: a study stored under the superseded system is updated, never
duplicated, and pull finds it under either system (plan, fake server through respx, pack contract)."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakefhir import BASE, FakeFhir, res, trial

from fhir_lupus import load_trial
from fhir_lupus.bundle import business_key, dependency_sorted, load_matching_rules, superseded_keys
from fhir_lupus.client import Capabilities, FhirClient, RetryPolicy
from fhir_lupus.errors import FhirLupusError, MappingError
from fhir_lupus.journal import Journal
from fhir_lupus.pipeline import map_trial
from fhir_lupus.pull import pull_study
from fhir_lupus.push import Match, dry_run, dry_run_trial, plan_batch, plan_routes, push_resources, push_trial
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import default_mappings_dir, load_pack

NCT = "NCT00698191"
OLD = "urn:test:old"  # a superseded system of the fake trial's ResearchStudy


@pytest.fixture
def client() -> Iterator[FhirClient]:
    with FhirClient(BASE, retry=RetryPolicy(attempts=1)) as fhir:
        yield fhir


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal(tmp_path / "journal.sqlite") as book:
        yield book


def study_systems() -> tuple[str, tuple[str, ...]]:
    pack = load_pack()
    return pack.identifier_system("study", study=NCT), pack.superseded_identifier_systems("study", study=NCT)


@pytest.fixture
def before_change(tmp_path: Path) -> Path:
    """mappings/ as it was before the system changed: the superseded system is the study's only one."""
    target = tmp_path / "mappings-before"
    shutil.copytree(default_mappings_dir(), target)
    project = target / "project.yaml"
    data = yaml.safe_load(project.read_text(encoding="utf-8"))
    data["identifier_systems"]["study"] = data.pop("superseded_identifier_systems")["study"][0]
    project.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return target


def with_old_identifier(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fake trial, its ResearchStudy also carrying its key under a superseded system (``use: old``)."""
    resources = copy.deepcopy(resources)
    study = next(r for r in resources if r["resourceType"] == "ResearchStudy")
    study["identifier"].append({"use": "old", "system": OLD, "value": "st"})
    return resources


def push_trial_resources(resources: list[dict[str, Any]], client: FhirClient, journal: Journal) -> Any:
    return push_resources(copy.deepcopy(resources), client, journal, source="test", mapping_version="t")


def studies(fake: FakeFhir) -> list[dict[str, Any]]:
    return fake.all("ResearchStudy")


def statement() -> Capabilities:
    resources = [
        {
            "type": name,
            "interaction": [{"code": c} for c in ("read", "update", "create", "search-type")],
            "conditionalCreate": True,
            "conditionalUpdate": True,
            "searchParam": [{"name": p} for p in (["url"] if name == "CodeSystem" else ["identifier"])],
        }
        for name in {r["resourceType"] for r in trial()}
    ]
    rest = {"mode": "server", "interaction": [{"code": "transaction"}], "resource": resources}
    return Capabilities.from_statement({"fhirVersion": "4.0.1", "rest": [rest]})


class TestPackAndRoutes:
    def test_the_current_system_is_official_and_the_superseded_one_is_kept_as_data(self) -> None:
        current, superseded = study_systems()
        assert superseded and current not in superseded
        rules = load_matching_rules()
        assert "old" in rules.superseded_use

    @pytest.mark.parametrize(
        "superseded",
        [{"nct": ["urn:x"]}, {"study": ["{same}"]}, {"study": ["urn:x", "urn:x"]}],
        ids=["unknown-key", "current-system", "repeated"],
    )
    def test_the_contract_refuses_a_superseded_list_that_makes_no_sense(
        self, tmp_path: Path, superseded: dict[str, list[str]]
    ) -> None:
        target = tmp_path / "mappings"
        shutil.copytree(default_mappings_dir(), target)
        project = target / "project.yaml"
        data = yaml.safe_load(project.read_text(encoding="utf-8"))
        current = data["identifier_systems"]["study"]
        data["superseded_identifier_systems"] = {
            key: [current if s == "{same}" else s for s in systems] for key, systems in superseded.items()
        }
        project.write_text(yaml.safe_dump(data), encoding="utf-8")
        with pytest.raises(MappingError, match="superseded_identifier_systems"):
            load_pack(target)

    def test_superseded_keys_are_the_identifiers_of_use_old_but_never_the_business_key(self) -> None:
        [study] = [r for r in with_old_identifier(trial()) if r["resourceType"] == "ResearchStudy"]
        assert business_key(study) == "urn:test|st"
        assert superseded_keys(study, frozenset({"old"})) == [f"{OLD}|st"]
        assert superseded_keys(study, frozenset()) == []

    def test_only_identifier_routes_look_superseded_keys_up(self) -> None:
        routes = plan_routes({r["resourceType"] for r in trial()}, statement(), load_matching_rules())
        assert routes["ResearchStudy"].superseded_use == frozenset({"old"})
        assert routes["CodeSystem"].superseded_use == frozenset()  # its key is a url
        assert "identifiers of use old" in routes["ResearchStudy"].describe()


class TestPlan:
    def test_a_match_by_a_superseded_key_is_an_update_by_its_server_id(self) -> None:
        resources = dependency_sorted(with_old_identifier(trial()))
        study = next(r for r in resources if r["resourceType"] == "ResearchStudy")
        routes = plan_routes({r["resourceType"] for r in resources}, statement(), load_matching_rules())
        stored = {**{k: v for k, v in study.items() if k != "identifier"}, "id": "S-OLD"}
        stored["identifier"] = [{"use": "official", "system": OLD, "value": "st"}]
        for content in (stored, None):  # with the server copy, or only its id
            found: dict[tuple[str, str], list[Match]] = {(r["resourceType"], business_key(r)): [] for r in resources}
            found[("ResearchStudy", business_key(study))] = [Match("S-OLD", "4", content, superseded=f"{OLD}|st")]
            plan = plan_batch(resources, routes, known={}, found=found, server_refs={})
            item = next(i for i in plan.items if i.resource_type == "ResearchStudy")
            assert (item.action, item.write, item.server_id, item.version_id) == ("update", "by-id", "S-OLD", "4")
            assert "superseded identifier" in item.reason
            assert plan.server_refs["ResearchStudy/st"] == "ResearchStudy/S-OLD"  # the subject refers to it
            subject = next(i for i in plan.items if i.resource_type == "ResearchSubject")
            assert subject.action == "create"

    def test_two_resources_under_the_superseded_key_are_a_conflict(self) -> None:
        resources = dependency_sorted(with_old_identifier(trial()))
        study = next(r for r in resources if r["resourceType"] == "ResearchStudy")
        routes = plan_routes({r["resourceType"] for r in resources}, statement(), load_matching_rules())
        found: dict[tuple[str, str], list[Match]] = {(r["resourceType"], business_key(r)): [] for r in resources}
        found[("ResearchStudy", business_key(study))] = [
            Match(sid, "1", None, superseded=f"{OLD}|st") for sid in ("A", "B")
        ]
        plan = plan_batch(resources, routes, known={}, found=found, server_refs={})
        item = next(i for i in plan.items if i.resource_type == "ResearchStudy")
        assert item.action == "conflict" and item.server_ids == ("A", "B")


class TestFakeServer:
    def test_a_study_stored_under_the_superseded_system_only_is_updated_not_duplicated(
        self, fake: FakeFhir, client: FhirClient, journal: Journal
    ) -> None:
        resources = with_old_identifier(trial())
        theirs = fake.add({**res("ResearchStudy", "st"), "identifier": [{"system": OLD, "value": "st"}], "title": "x"})
        preview = dry_run(resources, client)
        assert preview.counts == {"create": 7, "update": 1}
        report = push_trial_resources(resources, client, journal)
        assert report.complete and (report.created, report.updated) == (7, 1), report.summary()
        [study] = studies(fake)
        assert study["id"] == theirs["id"] and study["meta"]["versionId"] == "2"
        assert study["identifier"] == next(r for r in resources if r["resourceType"] == "ResearchStudy")["identifier"]
        [subject] = fake.all("ResearchSubject")
        assert subject["study"] == {"reference": f"ResearchStudy/{theirs['id']}"}
        entry = journal.entries(client.base_url)[("ResearchStudy", "urn:test|st")]
        assert entry.server_id == theirs["id"] and entry.last_outcome == "updated"

        again = push_trial_resources(resources, client, journal)
        assert again.written == 0 and again.unchanged == 8 and again.complete
        assert dry_run(resources, client, journal=journal).counts == {"unchanged": 8}
        assert len(studies(fake)) == 1

    def test_the_current_key_wins_over_a_superseded_one(
        self, fake: FakeFhir, client: FhirClient, journal: Journal
    ) -> None:
        resources = with_old_identifier(trial())
        fake.add({**res("ResearchStudy", "st"), "identifier": [{"system": OLD, "value": "st"}]})
        current = fake.add(res("ResearchStudy", "st"))
        report = push_trial_resources(resources, client, journal)
        assert report.complete and report.updated == 1
        entry = journal.entries(client.base_url)[("ResearchStudy", "urn:test|st")]
        assert entry.server_id == current["id"]
        assert not any("identifier=urn:test:old" in path for _, path in fake.requests)  # never asked

    def test_a_trial_pushed_before_the_change_is_updated_in_place_and_pulled_under_either_system(
        self, fake: FakeFhir, client: FhirClient, journal: Journal, dataset: Callable[..., Path], before_change: Path
    ) -> None:
        source = dataset()
        old = Settings.from_mappings(before_change)
        old_data, old_report = load_trial(source, pack=old.pack)
        first = push_trial(TrialSource.loaded(old_data, old_report), client, journal, source="test", settings=old)
        assert first.complete, first.summary()
        [stored] = studies(fake)
        current, superseded = study_systems()
        assert [i["system"] for i in stored["identifier"]] == [superseded[0]]

        # pull with today's mappings finds the study stored under the superseded system only
        data, report = load_trial(source)
        pulled = pull_study(client, journal, data.study, since=None)
        assert pulled.subjects == 2 and pulled.total_rows >= len(data.labs)

        expected = len(map_trial(TrialSource.loaded(data, report)).resources)
        assert dry_run_trial(TrialSource.loaded(data, report), client).counts == {
            "unchanged": expected - 1,
            "update": 1,
        }
        second = push_trial(TrialSource.loaded(data, report), client, journal, source="test")
        assert second.complete and (second.created, second.updated) == (0, 1), second.summary()
        [study] = studies(fake)
        assert study["id"] == stored["id"]
        assert [(i["use"], i["system"]) for i in study["identifier"]] == [
            ("official", current),
            *(("old", s) for s in superseded),
        ]
        third = push_trial(TrialSource.loaded(data, report), client, journal, source="test")
        assert third.written == 0 and third.unchanged == expected
        again = pull_study(client, journal, data.study, since=None)
        assert again.subjects == 2 and again.total_rows == pulled.total_rows


class TestPull:
    @pytest.mark.parametrize("server_searches_identifier", [True, False])
    def test_pull_finds_the_study_under_the_superseded_system_with_one_search(
        self,
        fake: FakeFhir,
        client: FhirClient,
        journal: Journal,
        dataset: Callable[..., Path],
        before_change: Path,
        server_searches_identifier: bool,
    ) -> None:
        old = Settings.from_mappings(before_change)
        old_data, old_report = load_trial(dataset(), pack=old.pack)
        push_trial(TrialSource.loaded(old_data, old_report), client, journal, source="test", settings=old)
        if not server_searches_identifier:
            fake.search_params = {"ResearchStudy": ()}
        fake.requests.clear()
        data, _ = load_trial(dataset())
        with FhirClient(BASE, retry=RetryPolicy(attempts=1)) as fresh:  # reads the statement again
            pulled = pull_study(fresh, journal, data.study, since=None)
        assert pulled.subjects == 2 and pulled.total_rows >= len(data.labs)
        asked = [path for method, path in fake.requests if path.startswith("ResearchStudy")]
        assert len(asked) == 1
        current, superseded = study_systems()
        if server_searches_identifier:
            assert f"identifier={current}|{NCT},{superseded[0]}|{NCT}" in asked[0]
        else:
            assert pulled.fallbacks == ["ResearchStudy?identifier is filtered here: the server does not search by it"]

    def test_two_studies_one_under_each_system_are_an_error(
        self, fake: FakeFhir, client: FhirClient, journal: Journal, dataset: Callable[..., Path], before_change: Path
    ) -> None:
        old = Settings.from_mappings(before_change)
        old_data, old_report = load_trial(dataset(), pack=old.pack)
        push_trial(TrialSource.loaded(old_data, old_report), client, journal, source="test", settings=old)
        current, _ = study_systems()
        fake.add({"resourceType": "ResearchStudy", "identifier": [{"system": current, "value": NCT}]})
        data, _ = load_trial(dataset())
        with pytest.raises(FhirLupusError, match="2 ResearchStudy resources"):
            pull_study(client, journal, data.study, since=None)
