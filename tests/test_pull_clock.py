"""The pull's mark moves on with the server's clock (the ``Date`` of its answers) while nothing is written, so a
quiet server is not asked again, at every pull, for the overlap window before its last write."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
import respx

from fhir_lupus import load_trial
from fhir_lupus.client import FhirClient, RetryPolicy, ServerClock
from fhir_lupus.journal import Journal
from fhir_lupus.pull import DEFAULT_OVERLAP_SECONDS, pull_study
from fhir_lupus.pull._runner import mark_minus
from fhir_lupus.push import push_trial
from fhir_lupus.source import TrialSource
from tests.fakefhir import BASE, FakeFhir

LATER = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)  # the fake's writes are stamped 2026-11-30T00:00:00.xxxxxx


class TestServerClock:
    def test_the_earliest_date_is_kept_and_a_bad_one_left_out(self) -> None:
        clock = ServerClock()
        for header in ("Tue, 01 Dec 2026 12:00:05 GMT", "not a date", None, "Tue, 01 Dec 2026 12:00:01 GMT"):
            clock.saw(header)
        assert clock.earliest == LATER + timedelta(seconds=1)

    def test_a_date_without_a_zone_is_left_out(self) -> None:
        clock = ServerClock()
        clock.saw("Tuesday, 01-Dec-26 12:00:01")  # no zone: cannot be placed on the server's clock
        assert clock.earliest is None


@pytest.fixture
def dated() -> Iterator[tuple[FakeFhir, list[datetime]]]:
    """The fake server, each answer carrying a ``Date`` header: the last time put in the list (none: no header)."""
    server, now = FakeFhir(), []

    def answer(request: httpx.Request) -> httpx.Response:
        response = server(request)
        if now:
            response.headers["Date"] = format_datetime(now[-1], usegmt=True)
        return response

    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1", port=9).mock(side_effect=answer)
        yield server, now


def test_a_quiet_server_moves_the_mark_to_its_clock(
    dated: tuple[FakeFhir, list[datetime]], dataset: Callable[..., Path], tmp_path: Path
) -> None:
    _, now = dated
    data, report = load_trial(dataset())
    with FhirClient(BASE, retry=RetryPolicy(attempts=1)) as fhir, Journal(tmp_path / "j.sqlite") as journal:
        push_trial(TrialSource.loaded(data, report), fhir, journal, source="test")
        first = pull_study(fhir, journal, data.study, since=None)  # no Date yet: the latest lastUpdated
        assert first.high_water is not None and first.high_water.startswith("2026-11-30T00:00:00")
        now.append(LATER)
        second = pull_study(fhir, journal, data.study)  # nothing written since; the server says it is LATER
        assert second.since == mark_minus(first.high_water, DEFAULT_OVERLAP_SECONDS)
        assert second.rows == [] and datetime.fromisoformat(second.high_water or "") == LATER
        third = pull_study(fhir, journal, data.study)
        assert third.since == mark_minus(LATER.isoformat(), DEFAULT_OVERLAP_SECONDS)  # not the old window


def test_a_clock_behind_the_latest_write_never_moves_the_mark_back(
    dated: tuple[FakeFhir, list[datetime]], dataset: Callable[..., Path], tmp_path: Path
) -> None:
    _, now = dated
    now.append(datetime(2026, 11, 29, tzinfo=UTC))  # a day before the writes
    data, report = load_trial(dataset())
    with FhirClient(BASE, retry=RetryPolicy(attempts=1)) as fhir, Journal(tmp_path / "j.sqlite") as journal:
        push_trial(TrialSource.loaded(data, report), fhir, journal, source="test")
        pulled = pull_study(fhir, journal, data.study, since=None)
    assert pulled.high_water is not None and pulled.high_water.startswith("2026-11-30T00:00:00")
