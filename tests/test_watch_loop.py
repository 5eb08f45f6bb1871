"""``watch`` end to end in milliseconds: the fake server of tests/subscriptionfake.py (respx) for the Subscription,
the real endpoint on loopback, notifications sent by the test, and an injected pull that records its calls."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import respx
from subscriptionfake import BASE, SubscriptionServer

from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.settings import Settings
from fhir_lupus.watch import FALLBACK_POLL, SECRET_HEADER, WatchOptions, WatchReport, watch

SECRET = "loop-secret-0123456789"
Started = tuple[threading.Event, "Recorder", list[WatchReport], threading.Thread]
WAIT = 10.0  # generous: a bound for a hung test, never a timing claim


class Recorder:
    """The injected pull: each call's patients, and an event per call count reached."""

    def __init__(self) -> None:
        self.calls: list[frozenset[str] | None] = []
        self._changed = threading.Condition()

    def __call__(self, patients: frozenset[str] | None) -> str:
        with self._changed:
            self.calls.append(patients)
            self._changed.notify_all()
        return f"pulled {patients}"

    def wait_for(self, count: int) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.calls) >= count, timeout=WAIT), self.calls


@pytest.fixture
def server() -> Iterator[SubscriptionServer]:
    fake = SubscriptionServer()
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1", port=9).mock(side_effect=fake)
        mock.route(host="127.0.0.1").pass_through()  # the test's notifications reach the real endpoint
        yield fake


@pytest.fixture
def run(
    tmp_path: Path,
) -> Iterator[Callable[..., tuple[threading.Event, Recorder, list[WatchReport], threading.Thread]]]:
    threads: list[tuple[threading.Event, threading.Thread]] = []
    with FhirClient(BASE) as client, Journal(tmp_path / "journal.sqlite") as journal:

        def start(**options: object) -> Started:
            stop, pull, reports = threading.Event(), Recorder(), []
            opts = WatchOptions(study="NCT00698191", secret=SECRET, **options)  # type: ignore[arg-type]

            def target() -> None:
                reports.append(watch(client, journal, pull, options=opts, settings=Settings.default(), stop=stop))

            thread = threading.Thread(target=target)
            thread.start()
            threads.append((stop, thread))
            return stop, pull, reports, thread

        yield start
        for stop, thread in threads:
            stop.set()
            thread.join(timeout=WAIT)


def _active(server: SubscriptionServer) -> dict[str, object]:
    for _ in range(int(WAIT / 0.01)):
        found = [r for r in server.store.values() if r.get("status") == "active"]
        if found:
            return found[0]
        threading.Event().wait(0.01)
    raise AssertionError("the Subscription never became active")


def test_catch_up_then_the_notified_subject_then_removed_on_exit(
    server: SubscriptionServer, run: Callable[..., Started]
) -> None:
    stop, pull, reports, thread = run()
    pull.wait_for(1)
    assert pull.calls[0] is None  # the catch-up pull: everyone
    subscription = _active(server)
    endpoint = subscription["channel"]["endpoint"]  # type: ignore[index]
    observation = {"resourceType": "Observation", "subject": {"reference": "Patient/p7"}}
    answer = httpx.put(f"{endpoint}/Observation/o1", json=observation, headers={SECRET_HEADER: SECRET})
    assert answer.status_code == 200
    pull.wait_for(2)
    assert pull.calls[1] == frozenset({"p7"})
    stop.set()
    thread.join(timeout=WAIT)
    assert server.store == {}  # removed
    (report,) = reports
    assert report.registration is not None and report.registration.active
    assert report.poll is None  # notified: no poll unless asked
    assert report.pulls == 2


def test_kept_with_keep(server: SubscriptionServer, run: Callable[..., Started]) -> None:
    stop, pull, _reports, thread = run(keep=True)
    pull.wait_for(1)
    _active(server)
    stop.set()
    thread.join(timeout=WAIT)
    assert len(server.store) == 1
    assert not any(method == "DELETE" for method, _ in server.requests)


def test_without_subscription_support_it_polls_and_says_so(
    server: SubscriptionServer, run: Callable[..., Started]
) -> None:
    server.subscriptions = False
    stop, pull, reports, thread = run()
    pull.wait_for(1)
    stop.set()
    thread.join(timeout=WAIT)
    (report,) = reports
    assert report.registration is None and report.poll == FALLBACK_POLL
    assert any("lists no Subscription" in note for note in report.notes)
    assert not any(path.startswith("Subscription") for _, path in server.requests)


def test_a_subscription_never_activated_polls_at_the_asked_interval(
    server: SubscriptionServer, run: Callable[..., Started]
) -> None:
    server.activate_after = None
    stop, pull, reports, thread = run(poll=1.0, activation_timeout=0)
    pull.wait_for(2)  # the catch-up, then a poll of everyone a second later
    assert pull.calls[:2] == [None, None]
    stop.set()
    thread.join(timeout=WAIT)
    (report,) = reports
    assert report.poll == 1.0 and any("periodic pull" in note for note in report.notes)
    assert server.store == {}
