"""A push of unchanged inputs maps nothing: per-subject input digests, the journal's settled subjects, and the
one look per type at what changed on the server since the last complete push (push/_repush.py)."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakefhir import FakeFhir
from support import example_subset, spy_on_subject_maps

from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.push import PushReport, push_trial
from fhir_lupus.push import _inputs as inputs
from fhir_lupus.push._settled import Mark, SettledStore
from fhir_lupus.push._since import changed_since
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource

Rows = dict[str, list[dict[str, str]]]


@pytest.fixture
def mapped(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return spy_on_subject_maps(monkeypatch)


def push(data: Path, client: FhirClient, journal: Journal) -> PushReport:
    with TrialSource.directory(data) as trial:
        trial.check()
        return push_trial(trial, client, journal, source="test")


def set_lab(rows: Rows, result_id: str, value: str) -> None:
    next(lab for lab in rows["labs.csv"] if lab["result_id"] == result_id)["value"] = value


def owned_by(fake: FakeFhir, journal: Journal, resource_type: str, subject: str) -> dict[str, Any]:
    """The server copy of a resource of ``subject``'s (the first of its type the journal says it was mapped to)."""
    with journal.transaction() as db:
        (server_id,) = db.execute(
            "SELECT r.server_id FROM subject_resource s JOIN resource r USING (server, resource_type, business_key) "
            "WHERE s.subject = ? AND s.resource_type = ? ORDER BY s.business_key",
            (subject, resource_type),
        ).fetchone()
    return copy.deepcopy(fake.store[resource_type][server_id])


class TestInputDigests:
    def test_a_subject_digest_changes_with_its_own_rows_only(self, dataset: Callable[..., Path]) -> None:
        before = inputs.input_digests(dataset(), Settings.default(), "R4")
        after = inputs.input_digests(dataset(lambda rows: set_lab(rows, "L11", "0.06")), Settings.default(), "R4")
        assert set(before) == {"MSC-001", "MSC-002"}
        assert after["MSC-002"] != before["MSC-002"] and after["MSC-001"] == before["MSC-001"]

    def test_every_digest_changes_with_a_mapping_file(self, dataset: Callable[..., Path], tmp_path: Path) -> None:
        data = dataset()
        copied = Path(shutil.copytree(Settings.default().pack.root, tmp_path / "mappings"))
        before = inputs.input_digests(data, Settings.from_mappings(copied), "R4")
        assert before == inputs.input_digests(data, Settings.default(), "R4")  # the content counts, not the place
        with (copied / "checks" / "lab_limits.yaml").open("a", encoding="utf-8") as handle:
            handle.write("# an edit\n")
        after = inputs.input_digests(data, Settings.from_mappings(copied), "R4")
        assert all(after[s] != before[s] for s in before)

    def test_every_digest_changes_with_the_tool_version_and_the_fhir_version(
        self, dataset: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        data = dataset()
        before = inputs.input_digests(data, Settings.default(), "R4")
        r5 = inputs.input_digests(data, Settings.default(), "R5")
        monkeypatch.setattr(inputs, "__version__", "99.0.0")
        newer = inputs.input_digests(data, Settings.default(), "R4")
        assert all(r5[s] != before[s] and newer[s] != before[s] for s in before)

    def test_a_row_of_no_enrolled_subject_changes_every_digest(self, dataset: Callable[..., Path]) -> None:
        before = inputs.input_digests(dataset(), Settings.default(), "R4")

        def stray(rows: Rows) -> None:
            rows["visits.csv"].append(dict(subject_id="MSC-009", visit_code="BL", visit_date="2008-02-03"))

        after = inputs.input_digests(dataset(stray), Settings.default(), "R4")
        assert all(after[s] != before[s] for s in before)


class TestRepush:
    def test_an_unchanged_trial_is_not_mapped_and_audits_the_same_digest(
        self, fake: FakeFhir, client: FhirClient, journal: Journal, dataset: Callable[..., Path], mapped: list[str]
    ) -> None:
        fake.dates = True  # the server's clock: every resource of the first push is "changed since" its start
        data = dataset()
        first = push(data, client, journal)
        assert first.complete and mapped == ["MSC-001", "MSC-002"], first.summary()
        mapped.clear()
        fake.requests.clear()
        second = push(data, client, journal)
        assert mapped == [] and second.complete and second.written == 0, second.summary()
        assert second.total == second.unchanged == first.total
        assert second.content_digest == first.content_digest
        assert not any(method == "POST" for method, _ in fake.requests)
        assert any("_summary=count" in path for _, path in fake.requests)  # the look at the server was made

    def test_a_changed_row_maps_its_subject_only(
        self, fake: FakeFhir, client: FhirClient, journal: Journal, dataset: Callable[..., Path], mapped: list[str]
    ) -> None:
        push(dataset(), client, journal)
        mapped.clear()
        second = push(dataset(lambda rows: set_lab(rows, "L11", "0.06")), client, journal)
        assert mapped == ["MSC-002"] and second.updated == 1 and second.complete, second.summary()
        mapped.clear()
        third = push(dataset(lambda rows: set_lab(rows, "L11", "0.06")), client, journal)
        assert mapped == [] and third.written == 0

    def test_a_push_with_a_refused_row_forgets_the_digests_it_made_stale(
        self, fake: FakeFhir, client: FhirClient, journal: Journal, tmp_path: Path, mapped: list[str]
    ) -> None:
        """A refused row (pushed with it set aside) changes what its subject's resources say on the server; once
        the row is mended, the input is as at the first push again, and the subject must be mapped and written
        back, not trusted to the digest the first push stored."""
        data = example_subset(tmp_path / "good", 1)  # MSC-001: its baseline C3 feeds a SLEDAI-2K descriptor
        first = push(data, client, journal)
        bad = Path(shutil.copytree(data, tmp_path / "bad"))
        labs = (bad / "labs.csv").read_text(encoding="utf-8")
        (bad / "labs.csv").write_text(
            labs.replace("L-MSC-001-BL-C3,MSC-001,BL,c3,0.53,", "L-MSC-001-BL-C3,MSC-001,BL,c3,-0.85,")
        )
        with TrialSource.directory(bad) as trial:
            trial.check()
            assert trial.report.rejects  # the impossible value is refused: a row set aside
            spoiled = push_trial(trial, client, journal, source="test")
        assert spoiled.written >= 1, spoiled.summary()  # the SLEDAI-2K total, preliminary now, changed on the server
        mapped.clear()
        mended = push(data, client, journal)
        assert "MSC-001" in mapped and mended.updated == spoiled.written and mended.complete, mended.summary()
        assert mended.content_digest == first.content_digest

    def test_an_edit_on_the_server_is_looked_up_and_written_back(
        self, fake: FakeFhir, client: FhirClient, journal: Journal, dataset: Callable[..., Path], mapped: list[str]
    ) -> None:
        fake.dates = True
        data = dataset()
        push(data, client, journal)
        edited = copy.deepcopy(owned_by(fake, journal, "Observation", "MSC-002"))
        edited["note"] = [{"text": "changed by hand on the server"}]
        client.put(f"Observation/{edited['id']}", edited)
        mapped.clear()
        second = push(data, client, journal)
        assert mapped == ["MSC-002"] and second.updated == 1 and second.complete, second.summary()
        assert any("changed on the server" in w for w in second.warnings)
        assert "note" not in fake.store["Observation"][edited["id"]]  # ours again, as a push always wrote it
        mapped.clear()
        third = push(data, client, journal)  # the journal holds the version written back: nothing to look at
        assert mapped == [] and third.written == 0 and not third.warnings

    def test_a_twin_made_on_the_server_is_a_conflict(
        self, fake: FakeFhir, client: FhirClient, journal: Journal, dataset: Callable[..., Path], mapped: list[str]
    ) -> None:
        fake.dates = True
        data = dataset()
        push(data, client, journal)
        fake.add(owned_by(fake, journal, "Observation", "MSC-002"))  # another system's copy, with our identifier
        mapped.clear()
        second = push(data, client, journal)
        assert mapped == ["MSC-002"] and [p.kind for p in second.problems] == ["conflict"], second.summary()
        assert not second.complete

    def test_a_server_without_last_updated_gets_every_subject_mapped(
        self, fake: FakeFhir, client: FhirClient, journal: Journal, dataset: Callable[..., Path], mapped: list[str]
    ) -> None:
        data = dataset()
        push(data, client, journal)
        fake.refuse_last_updated = True
        mapped.clear()
        second = push(data, client, journal)
        assert mapped == ["MSC-001", "MSC-002"] and second.written == 0 and second.complete
        assert any("_lastUpdated" in w for w in second.warnings)

    def test_a_subject_not_all_confirmed_is_mapped_again(
        self, fake: FakeFhir, client: FhirClient, journal: Journal, dataset: Callable[..., Path], mapped: list[str]
    ) -> None:
        push(dataset(), client, journal)
        changed = dataset(lambda rows: (set_lab(rows, "L11", "0.06"), set_lab(rows, "L2", "90")))
        fake.refuse = lambda r: "refused" if "0.06" in json.dumps(r) else None
        mapped.clear()
        second = push(changed, client, journal)
        assert sorted(mapped) == ["MSC-001", "MSC-002"] and not second.complete
        fake.refuse = None
        mapped.clear()
        third = push(changed, client, journal)  # MSC-001 was confirmed whole; MSC-002 was not
        assert mapped == ["MSC-002"] and third.updated == 1 and third.complete, third.summary()


class TestServerLook:
    def test_one_count_per_type_when_nothing_changed(
        self, fake: FakeFhir, client: FhirClient, journal: Journal, dataset: Callable[..., Path]
    ) -> None:
        first = push(dataset(), client, journal)
        store = SettledStore(journal, client.base_url)
        fake.requests.clear()
        after = "2026-12-01T00:00:00.000+00:00"  # the fake's clock stands at 2026-11-30
        assert changed_since(client, journal, store, Mark(first.push_id, after, after)) == set()
        assert len(fake.requests) == len(store.types()) > 0
        assert all("_summary=count" in path and "_lastUpdated=gt" in path for _, path in fake.requests)

    def test_the_last_pushs_own_writes_are_counted_not_listed(
        self, fake: FakeFhir, client: FhirClient, journal: Journal, dataset: Callable[..., Path]
    ) -> None:
        before = "2026-11-29T00:00:00.000+00:00"
        first = push(dataset(), client, journal)
        store = SettledStore(journal, client.base_url)
        mark = Mark(first.push_id, before, fake._now())  # the fake's clock when the push ended
        fake.requests.clear()
        assert changed_since(client, journal, store, mark) == set()
        assert not any("_elements" in path for _, path in fake.requests)  # counts only
        assert changed_since(client, journal, store, Mark(first.push_id, before, before)) == set()  # listed

    def test_an_edit_and_a_twin_are_found(
        self, fake: FakeFhir, client: FhirClient, journal: Journal, dataset: Callable[..., Path]
    ) -> None:
        first = push(dataset(), client, journal)
        store = SettledStore(journal, client.base_url)
        mark = Mark(first.push_id, "2026-11-29T00:00:00.000+00:00", fake._now())
        patient = owned_by(fake, journal, "Patient", "MSC-001")
        client.put(f"Patient/{patient['id']}", {**patient, "gender": "other"})
        (edited,) = changed_since(client, journal, store, mark) or set()  # after the push's end: listed
        assert edited[0] == "Patient"
        assert journal.entries(client.base_url)[edited].server_id == patient["id"]
        fake.add(owned_by(fake, journal, "Observation", "MSC-002"))
        found = changed_since(client, journal, store, mark)
        assert found is not None and {kind for kind, _ in found} == {"Patient", "Observation"}
