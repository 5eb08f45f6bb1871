"""The audit digest built in flat memory (fhir_lupus/_digest.py) is ``digest_of`` of the same hashes, whatever
their number, order and repeats, and leaves nothing on disk; a push's audit entry keeps its meaning."""

from __future__ import annotations

import hashlib
import random
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from fakefhir import BASE, FakeFhir
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_lupus import load_trial, map_trial
from fhir_lupus._digest import EMPTY_DIGEST, DigestBuilder, digest_of
from fhir_lupus._scratch import PREFIX
from fhir_lupus.audit import read_entries
from fhir_lupus.client import FhirClient, FhirHttpError, RetryPolicy
from fhir_lupus.journal import Journal
from fhir_lupus.push import content_hash, push_trial
from fhir_lupus.source import TrialSource

HEX = st.binary(min_size=1, max_size=8).map(lambda data: hashlib.sha256(data).hexdigest())
# any text a line can hold: no newline, no lone surrogate (it has no UTF-8, and digest_of fails on it as well)
LINES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=12)


def hashes(count: int, seed: int = 0) -> list[str]:
    return [hashlib.sha256(f"{seed}-{number}".encode()).hexdigest() for number in range(count)]


def built(items: list[str], **options: int) -> str:
    with DigestBuilder(**options) as builder:
        builder.extend(items)
        return builder.hexdigest()


def scratch_left(where: Path) -> list[Path]:
    return sorted(where.rglob(f"{PREFIX}*"))


@pytest.fixture
def tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The system's temporary directory, for this test alone: where the builder spills by default."""
    where = tmp_path / "tmp"
    where.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(where))
    yield where


class TestSameValueAsDigestOf:
    @pytest.mark.parametrize(
        ("count", "buffer_size", "fan_in"),
        [
            (0, 4, 2),  # nothing: sha256 of the empty string
            (1, 4, 2),
            (4, 4, 2),  # exactly a buffer's worth: one run on disk, an empty buffer
            (5, 4, 2),  # a run and one hash in memory
            (37, 4, 2),  # runs merged into larger ones over three levels
            (1000, 7, 3),
        ],
    )
    def test_any_number_of_hashes(self, count: int, buffer_size: int, fan_in: int) -> None:
        items = hashes(count)
        assert built(items, buffer_size=buffer_size, fan_in=fan_in) == digest_of(items)

    def test_nothing_is_the_empty_digest(self) -> None:
        assert built([]) == EMPTY_DIGEST == hashlib.sha256(b"").hexdigest()

    def test_duplicates_count(self) -> None:
        items = hashes(10) * 3 + hashes(1)
        assert built(items, buffer_size=4, fan_in=2) == digest_of(items)
        assert built(items, buffer_size=4, fan_in=2) != built(hashes(10), buffer_size=4, fan_in=2)

    def test_any_insertion_order_gives_one_digest(self) -> None:
        items = hashes(200)
        shuffled = random.Random(25).sample(items, len(items))
        assert built(shuffled, buffer_size=9, fan_in=2) == built(items, buffer_size=9, fan_in=2) == digest_of(items)

    @settings(max_examples=60, deadline=None)
    @given(
        items=st.lists(HEX | LINES, max_size=60),
        buffer_size=st.integers(1, 6),
        fan_in=st.integers(2, 4),
        seed=st.integers(0, 2**16),
    )
    def test_any_lines_any_order_any_sizes(self, items: list[str], buffer_size: int, fan_in: int, seed: int) -> None:
        shuffled = random.Random(seed).sample(items, len(items))
        assert built(shuffled, buffer_size=buffer_size, fan_in=fan_in) == digest_of(items)

    def test_adding_goes_on_after_a_digest(self) -> None:
        items = hashes(30)
        with DigestBuilder(buffer_size=4, fan_in=2) as builder:
            builder.extend(items[:13])
            assert builder.hexdigest() == digest_of(items[:13])
            builder.extend(items[13:])
            assert builder.hexdigest() == digest_of(items) and len(builder) == 30

    def test_a_hash_with_a_newline_is_refused(self) -> None:
        with DigestBuilder() as builder, pytest.raises(ValueError, match="newline"):
            builder.add("ab\ncd")


class TestNothingLeftOnDisk:
    def test_a_small_digest_writes_nothing(self, tmp_dir: Path) -> None:
        with DigestBuilder() as builder:
            builder.extend(hashes(5000))
            builder.hexdigest()
            assert list(tmp_dir.iterdir()) == []

    def test_spilled_runs_are_private_and_removed_at_the_end(self, tmp_dir: Path) -> None:
        with DigestBuilder(buffer_size=3, fan_in=2) as builder:
            builder.extend(hashes(20))
            (home,) = scratch_left(tmp_dir)
            runs = [path for path in home.iterdir() if path.name.startswith("run-")]
            assert runs and stat.S_IMODE(home.stat().st_mode) == 0o700
            assert {stat.S_IMODE(path.stat().st_mode) for path in runs} == {0o600}
            assert builder.hexdigest() == digest_of(hashes(20))
        assert scratch_left(tmp_dir) == []

    def test_removed_on_an_exception(self, tmp_dir: Path) -> None:
        with pytest.raises(RuntimeError), DigestBuilder(buffer_size=3, fan_in=2) as builder:
            builder.extend(hashes(20))
            assert scratch_left(tmp_dir)
            raise RuntimeError("stopped mid-push")
        assert scratch_left(tmp_dir) == []


class TestPushAuditDigest:
    """The push's audit entry: digest_of the content hashes of the resources offered, spilled or not."""

    @pytest.fixture
    def added(self, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        """Every hash the push adds to its digest, seen on the way; runs spilled every 5 hashes."""
        seen: list[str] = []
        real = DigestBuilder.extend

        def spy(builder: DigestBuilder, items: Iterable[str]) -> None:
            listed = list(items)
            seen.extend(listed)
            real(builder, listed)

        monkeypatch.setattr(DigestBuilder, "extend", spy)
        monkeypatch.setattr("fhir_lupus._digest.BUFFER", 5)
        return seen

    def test_a_complete_push(
        self, fake: FakeFhir, dataset: Callable[..., Path], tmp_path: Path, tmp_dir: Path, added: list[str]
    ) -> None:
        data, report = load_trial(dataset())
        mapped = map_trial(TrialSource.loaded(data, report)).resources
        log = tmp_path / "audit.jsonl"
        with FhirClient(BASE) as fhir, Journal(tmp_path / "j.sqlite") as journal:
            pushed = push_trial(TrialSource.loaded(data, report), fhir, journal, source="test", audit_log=log)
        (entry,) = read_entries(log)
        assert len(added) == len(mapped) > 5  # spilled: more than one buffer's worth
        assert entry["content_hash"] == pushed.content_digest == digest_of(content_hash(r) for r in mapped)
        assert scratch_left(tmp_dir) == []

    def test_a_failed_push(
        self, fake: FakeFhir, dataset: Callable[..., Path], tmp_path: Path, tmp_dir: Path, added: list[str]
    ) -> None:
        data, report = load_trial(dataset())
        fake.fail_types = {"Observation"}  # the study went through, then a server failure
        log = tmp_path / "audit.jsonl"
        with (
            FhirClient(BASE, retry=RetryPolicy(attempts=1)) as fhir,
            Journal(tmp_path / "j.sqlite") as journal,
            pytest.raises(FhirHttpError),
        ):
            push_trial(TrialSource.loaded(data, report), fhir, journal, source="test", audit_log=log)
        (entry,) = read_entries(log)
        assert entry["outcome"].startswith("failed: ") and len(added) > 5
        assert entry["content_hash"] == digest_of(added) != EMPTY_DIGEST
        assert scratch_left(tmp_dir) == []
