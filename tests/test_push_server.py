"""Push against a fake FHIR server (respx): size refusals, twins, refusals, fallbacks, faults, Provenance."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakefhir import BASE, SYS, FakeFhir, ref, res, trial
from typer.testing import CliRunner

from fhir_lupus import source as trial_source
from fhir_lupus.bundle import key_id
from fhir_lupus.cli import app
from fhir_lupus.client import FhirClient, FhirHttpError, InvalidResponse
from fhir_lupus.journal import Journal
from fhir_lupus.model import _reading as reading
from fhir_lupus.push import PushOptions, ResourceGroups, dry_run, push_resources
from fhir_lupus.source import TrialSource

runner = CliRunner()


def push(resources: list[dict[str, Any]], client: FhirClient, journal: Journal, **options: Any) -> Any:
    return push_resources(
        copy.deepcopy(resources), client, journal, source="test", mapping_version="t", options=PushOptions(**options)
    )


def on_server(fake: FakeFhir, resource_type: str, value: str) -> list[dict[str, Any]]:
    return [r for r in fake.all(resource_type) if {"system": SYS, "value": value} in r.get("identifier", [])]


def observations(count: int, note: str = "") -> list[dict[str, Any]]:
    return [
        res("Observation", f"o{i}", status="final", **({"note": [{"text": note}]} if note else {}))
        for i in range(count)
    ]


class TestSizeRefusals:
    def test_medplum_caps_are_found_remembered_and_never_duplicate(
        self, fake: FakeFhir, client: FhirClient, journal: Journal
    ) -> None:
        fake.max_updates, fake.max_strict = 50, 8  # Medplum's BatchProcessor limits
        first = push(observations(120), client, journal, new_by_id=False)
        assert first.complete and first.created == 120 and first.size_refusals == 4  # 120 -> 60 -> 30 -> 15 -> 7
        assert journal.write_limits(client.base_url) == {"conditional": 7}
        assert len(fake.all("Observation")) == 120

        second = push(observations(120, "changed"), client, journal)  # every one known by id: PUT Type/id
        assert second.complete and second.updated == 120 and second.size_refusals == 2  # 120 -> 60 -> 30
        assert journal.write_limits(client.base_url) == {"conditional": 7, "direct": 30}
        assert len(fake.all("Observation")) == 120 and all(o["note"] for o in fake.all("Observation"))

        transactions_before = fake.requests.count(("POST", ""))
        third = push(observations(120, "again"), client, journal)
        assert third.size_refusals == 0 and third.chunks == 4  # starts at the remembered 30
        assert fake.requests.count(("POST", "")) - transactions_before == 4

    def test_creates_by_id_are_direct_entries_under_the_larger_cap(
        self, fake: FakeFhir, client: FhirClient, journal: Journal
    ) -> None:
        fake.max_updates, fake.max_strict = 50, 8
        first = push(observations(120), client, journal)
        assert first.complete and first.created == 120 and first.size_refusals == 2  # 120 -> 60 -> 30
        assert journal.write_limits(client.base_url) == {"direct": 30} and first.chunks == 4
        expected = {key_id("Observation", f"{SYS}|o{i}") for i in range(120)}
        assert {o["id"] for o in fake.all("Observation")} == expected

    def test_the_user_bound_still_caps_the_size(self, fake: FakeFhir, client: FhirClient, journal: Journal) -> None:
        report = push(observations(10), client, journal, chunk_size=3)
        assert report.chunks == 4 and report.size_refusals == 0


class TestConflicts:
    def test_twins_planted_after_the_look_up_are_reported_and_dependants_held_back_in_later_chunks(
        self, fake: FakeFhir, client: FhirClient, journal: Journal
    ) -> None:
        planted: list[str] = []

        def plant_twins(server: FakeFhir, request: dict[str, Any]) -> None:
            if request["url"].startswith("Organization") and not planted:
                for _ in range(2):
                    planted.append(server.add({**res("Organization", "org"), "name": "theirs"})["id"])

        fake.before_write = plant_twins  # conditional writes: the server sees the twins (PUT by id would not)
        report = push(trial(), client, journal, chunk_size=2, new_by_id=False)
        kinds = {(p.resource_type, p.kind) for p in report.problems}
        assert kinds == {
            ("Organization", "conflict"),
            ("Location", "held-back"),
            ("ResearchStudy", "held-back"),  # two hops away, in a later chunk
            ("ResearchSubject", "held-back"),
        }
        conflict = report.conflicts[0]
        assert sorted(conflict.server_ids) == sorted(planted)
        assert sorted(r["name"] for r in on_server(fake, "Organization", "org")) == ["theirs", "theirs"]
        assert report.created == 4 and not report.complete  # CodeSystem, Patient, lab, score

    def test_twins_known_before_writing_are_a_conflict_of_the_plan(
        self, fake: FakeFhir, client: FhirClient, journal: Journal
    ) -> None:
        twins = [fake.add({**res("Organization", "org"), "name": "theirs"})["id"] for _ in range(2)]
        preview = dry_run(trial(), client)
        assert preview.counts["conflict"] == 1 and preview.counts["held-back"] == 3
        report = push(trial(), client, journal)
        assert sorted(report.conflicts[0].server_ids) == sorted(twins) and report.count("held-back") == 3


class TestFaults:
    def test_a_transaction_answer_with_the_wrong_number_of_entries_stops_and_the_rerun_settles_it(
        self, fake: FakeFhir, client: FhirClient, journal: Journal
    ) -> None:
        answers = {"n": 0}

        def lose_an_entry(answer: dict[str, Any]) -> dict[str, Any]:
            answers["n"] += 1
            return {**answer, "entry": answer["entry"][:-1]} if answers["n"] == 2 else answer

        fake.answer_hook = lose_an_entry
        with pytest.raises(InvalidResponse, match="3 entries for 4 sent"):
            push(observations(8), client, journal, chunk_size=4)
        assert len(journal.entries(client.base_url)) == 4  # the first chunk, confirmed
        assert [status for _, status, _ in journal.pushes(client.base_url)] == ["failed"]
        fake.answer_hook = None
        rerun = push(observations(8), client, journal, chunk_size=4)
        assert rerun.complete and rerun.unchanged == 8 and rerun.written == 0  # the look-up found chunk 2 stored
        assert len(fake.all("Observation")) == 8
        assert rerun.earlier_provenance  # the failed push's writes get their Provenance now

    def test_a_failed_provenance_is_reported_and_written_by_the_next_push(
        self, fake: FakeFhir, client: FhirClient, journal: Journal
    ) -> None:
        fake.fail_types = {"Provenance"}
        first = push(trial(), client, journal)
        assert first.created == 8 and first.provenance is None and not first.complete
        assert "Provenance of push" in first.provenance_missing[0]
        assert len(journal.entries(client.base_url)) == 8  # the data writes stay journaled
        fake.fail_types = set()
        second = push(trial(), client, journal)
        assert second.written == 0 and second.complete and len(second.earlier_provenance) == 1
        provenance = fake.all("Provenance")
        assert len(provenance) == 1 and len(provenance[0]["target"]) == 8  # every resource the first push created
        assert all("/_history/" in t["reference"] for t in provenance[0]["target"])

    def test_a_refused_resource_is_isolated_and_its_dependants_held_back(
        self, fake: FakeFhir, client: FhirClient, journal: Journal
    ) -> None:
        fake.refuse = lambda r: (
            "Observation.status: required" if r.get("identifier", [{}])[0].get("value") == "lab" else None
        )
        report = push(trial(), client, journal)
        assert [(p.kind, p.business_key) for p in report.problems] == [
            ("refused", f"{SYS}|lab"),
            ("held-back", f"{SYS}|score"),
        ]
        assert "Observation.status: required" in report.problems[0].reason
        assert report.created == 6 and on_server(fake, "Observation", "lab") == []


class TestCreatesById:
    def test_a_server_that_refuses_client_ids_gets_conditional_creates_from_then_on(
        self, fake: FakeFhir, client: FhirClient, journal: Journal
    ) -> None:
        fake.update_create, fake.client_ids = None, False  # the statement is silent; the server refuses
        report = push(observations(30), client, journal, chunk_size=10)
        assert report.complete and report.created == 30 and report.chunks == 3
        refused = [m for m, p in fake.requests if m == "POST" and p == ""]
        assert len(refused) == 4  # one refused chunk by id, then three conditional ones
        assert "conditional update" in report.routes["Observation"].describe()
        assert any("refused Observation created by PUT to a new id" in w for w in report.warnings)
        assert all(o["id"].startswith("s") for o in fake.all("Observation"))  # ids the server chose
        again = push(observations(30), client, journal, chunk_size=10)
        assert again.written == 0 and again.unchanged == 30 and len(fake.all("Observation")) == 30

    def test_a_chunk_replayed_after_a_lost_answer_writes_nothing_twice(
        self, fake: FakeFhir, client: FhirClient, journal: Journal, tmp_path: Path
    ) -> None:
        fake.answer_hook = lambda answer: {**answer, "entry": []}  # committed, but the answer is lost
        with pytest.raises(InvalidResponse):
            push(observations(6), client, journal)
        fake.answer_hook = None
        with Journal(tmp_path / "another.sqlite") as lost:  # not even the journal knows: the look-up settles it
            rerun = push(observations(6), client, lost)
        assert rerun.complete and rerun.unchanged == 6 and len(fake.all("Observation")) == 6


def subjects(count: int, labs: int) -> list[list[dict[str, Any]]]:
    """The study, then one group per subject (Patient, ResearchSubject, labs), as iter_mapped yields them."""
    study = [r for r in trial() if r["resourceType"] in ("Organization", "Location", "ResearchStudy", "CodeSystem")]
    groups: list[list[dict[str, Any]]] = [study]
    for n in range(count):
        patient = f"p{n}"
        group = [
            res("Patient", patient),
            res("ResearchSubject", f"rs{n}", study=ref("ResearchStudy/st"), individual=ref(f"Patient/{patient}")),
        ]
        group += [res("Observation", f"o{n}-{i}", subject=ref(f"Patient/{patient}")) for i in range(labs)]
        groups.append(group)
    return groups


class TestConcurrency:
    def test_parallel_windows_write_every_subject_with_its_own_references(
        self, fake: FakeFhir, client: FhirClient, journal: Journal
    ) -> None:
        report = push_resources(
            ResourceGroups(copy.deepcopy(subjects(9, 5))),
            client,
            journal,
            source="t",
            mapping_version="t",
            options=PushOptions(batch_size=14, concurrency=3, chunk_size=4),
        )
        assert report.complete and report.created == 4 + 9 * 7 and report.total == 67
        assert fake.max_in_flight >= 2  # windows were written at the same time
        patients = {f"Patient/{p['id']}": p["identifier"][0]["value"] for p in fake.all("Patient")}
        for subject in fake.all("ResearchSubject"):  # every reference reached its own subject's Patient
            assert patients[subject["individual"]["reference"]] == "p" + subject["identifier"][0]["value"][2:]
        for lab in fake.all("Observation"):
            assert patients[lab["subject"]["reference"]] == lab["identifier"][0]["value"].split("-")[0].replace(
                "o", "p"
            )
        assert len(journal.entries(client.base_url)) == 67

    def test_a_window_waits_for_the_windows_it_refers_to(
        self, fake: FakeFhir, client: FhirClient, journal: Journal
    ) -> None:
        flat = [r for group in subjects(4, 3) for r in group]  # one list: later windows refer to earlier ones
        report = push(flat, client, journal, batch_size=3, concurrency=3)
        assert report.complete and report.created == len(flat) and not report.problems

    def test_a_failed_window_stops_the_push_and_the_rerun_finishes_without_twins(
        self, fake: FakeFhir, client: FhirClient, journal: Journal
    ) -> None:
        fake.fail_types = {"ResearchSubject"}
        with pytest.raises(FhirHttpError):
            push_resources(
                ResourceGroups(copy.deepcopy(subjects(6, 4))),
                client,
                journal,
                source="t",
                mapping_version="t",
                options=PushOptions(batch_size=6, concurrency=2),
            )
        assert [status for _, status, _ in journal.pushes(client.base_url)] == ["failed"]
        assert not fake.all("ResearchSubject") and not fake.all("Patient")  # no half transaction
        fake.fail_types = set()
        rerun = push_resources(
            ResourceGroups(copy.deepcopy(subjects(6, 4))), client, journal, source="t", mapping_version="t"
        )
        assert rerun.complete and rerun.created == 6 * 6
        assert len(fake.all("Observation")) == 24 and len(fake.all("Patient")) == 6


class TestFallbacks:
    def test_codesystem_the_server_cannot_search_goes_to_our_id(
        self, fake: FakeFhir, client: FhirClient, journal: Journal
    ) -> None:
        fake.search_params = {"CodeSystem": ()}
        report = push(trial(), client, journal)
        assert report.complete and report.routes["CodeSystem"].lookup == "read"
        assert [c["id"] for c in fake.all("CodeSystem")] == ["cs"]  # PUT CodeSystem/cs: update-as-create
        assert ("GET", "CodeSystem/cs") in fake.requests  # its look-up was a read
        again = push(trial(), client, journal)
        assert again.unchanged == 8
        assert dry_run(trial(), client, journal=journal).counts == {"unchanged": 8}

    def test_a_listed_parameter_the_server_refuses_falls_back_with_a_warning(
        self, fake: FakeFhir, client: FhirClient, journal: Journal
    ) -> None:
        fake.refuse_params = {("CodeSystem", "url")}
        report = push(trial(), client, journal)
        assert report.complete and report.routes["CodeSystem"].search_param == "system"
        assert any("refused CodeSystem?url" in w for w in report.warnings)
        assert len(fake.all("CodeSystem")) == 1

    def test_a_type_nobody_can_write_is_skipped_with_one_warning(
        self, fake: FakeFhir, client: FhirClient, journal: Journal
    ) -> None:
        fake.search_params, fake.update_create = {"CodeSystem": ()}, False
        report = push(trial(), client, journal)
        assert not report.complete and fake.all("CodeSystem") == []
        assert len(report.warnings) == 1 and "--skip-types CodeSystem" in report.warnings[0]
        assert report.created == 7
        chosen = push(trial(), client, journal, skip_types=frozenset({"CodeSystem"}))
        assert chosen.complete and chosen.unchanged == 7

    def test_skipped_types_are_referred_to_by_identifier(
        self, fake: FakeFhir, client: FhirClient, journal: Journal
    ) -> None:
        report = push(trial(), client, journal, skip_types=frozenset({"Organization"}))
        assert report.complete and fake.all("Organization") == []
        location = on_server(fake, "Location", "loc")[0]
        assert location["managingOrganization"] == {
            "type": "Organization",
            "identifier": {"system": SYS, "value": "org"},
        }

    @pytest.mark.parametrize("system", [("batch",), ()])
    def test_batch_and_one_by_one(
        self, fake: FakeFhir, client: FhirClient, journal: Journal, system: tuple[str, ...]
    ) -> None:
        fake.system = system
        report = push(trial(), client, journal)
        assert report.strategy == ("batch" if system else "individual") and report.complete and report.created == 8
        score = on_server(fake, "Observation", "score")[0]
        lab = on_server(fake, "Observation", "lab")[0]
        assert score["derivedFrom"] == [{"reference": f"Observation/{lab['id']}"}]
        assert dry_run(trial(), client).counts == {"unchanged": 8}


def test_dry_run_writes_nothing(fake: FakeFhir, client: FhirClient) -> None:
    preview = dry_run(trial(), client)
    assert preview.counts == {"create": 8}
    assert all(method == "GET" for method, _ in fake.requests)


class TestCommandLine:
    def test_a_trial_of_several_chunks_is_checked_first_then_streamed(
        self, fake: FakeFhir, dataset: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        data = dataset()
        common = ["--server", BASE, "--journal", str(tmp_path / "j.sqlite")]
        monkeypatch.setattr("fhir_lupus.model._loader.CHUNK_ROWS", 12)  # the small dataset in several chunks
        calls: list[str] = []
        real = trial_source._replay  # the checked chunks, replayed from disk: never the CSV files again
        monkeypatch.setattr(trial_source, "_replay", lambda *a, **k: calls.append("streamed") or real(*a, **k))
        streamed = runner.invoke(app, ["push", str(data), *common])
        assert streamed.exit_code == 0, streamed.output
        assert calls == ["streamed"]
        written = {t: len(fake.all(t)) for t in ("Patient", "ResearchSubject", "Observation", "Encounter")}
        monkeypatch.setattr("fhir_lupus.model._loader.CHUNK_ROWS", 40_000)  # one chunk: loaded once, pushed
        again = runner.invoke(app, ["push", str(data), *common])
        assert again.exit_code == 0 and "0 created, 0 updated" in again.output, again.output
        assert calls == ["streamed"] and written["Observation"] > 0
        assert {t: len(fake.all(t)) for t in written} == written

    @pytest.mark.parametrize("chunk_rows", [12, 40_000])
    def test_a_push_and_a_dry_run_read_each_csv_file_in_one_pass(
        self,
        fake: FakeFhir,
        dataset: Callable[..., Path],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        chunk_rows: int,
    ) -> None:
        data = dataset()
        common = ["--server", BASE, "--journal", str(tmp_path / "j.sqlite")]
        monkeypatch.setattr("fhir_lupus.model._loader.CHUNK_ROWS", chunk_rows)
        reads: Counter[str] = Counter()
        real = reading.read_rows
        monkeypatch.setattr(reading, "read_rows", lambda path, model: reads.update([path.name]) or real(path, model))
        with TrialSource.directory(data) as once:  # one pass of the loader: each file once per chunk
            chunks = len(list(once.chunks()))
        one_pass = dict(reads)
        assert set(one_pass.values()) == {chunks} and (chunks > 1) == (chunk_rows == 12)
        for extra in ([], ["--dry-run"]):
            reads.clear()
            result = runner.invoke(app, ["push", str(data), *common, *extra])
            assert result.exit_code == 0, result.output
            assert dict(reads) == one_pass  # checked first, then sent from what was checked: never read again

    def test_exit_codes(self, fake: FakeFhir, dataset: Callable[..., Path], tmp_path: Path) -> None:
        data = dataset()
        common = ["--server", BASE, "--journal", str(tmp_path / "j.sqlite")]
        assert runner.invoke(app, ["push", str(data), *common, "--types", "Observatio"]).exit_code == 2
        fake.fail_types = {"Provenance"}
        failed = runner.invoke(app, ["push", str(data), *common])
        assert failed.exit_code == 5 and "provenance missing" in failed.output  # issue 22: incomplete write, 5
        fake.fail_types = set()
        fixed = runner.invoke(app, ["push", str(data), *common])
        assert fixed.exit_code == 0 and "provenance of an earlier push" in fixed.output
        fake.system = ()
        fake.search_params, fake.update_create = {"CodeSystem": ()}, False
        refused = runner.invoke(app, ["push", str(data), *common, "--journal", str(tmp_path / "other.sqlite")])
        assert refused.exit_code == 5 and "CodeSystem not written" in refused.output  # a skipped type: 5
        assert "Traceback" not in refused.output
