"""``watch``: the endpoint, the Subscription and one worker running the pulls, until told to stop.

The pull and what follows it are injected (``pull(patients)``, ``signals(result)``): the library's pull of a
study (``since="auto"``, of the Patients named or, with None, of every enrolled subject) and the flare signals
live in other packages, and the command line connects them. One worker runs them one after another, so no two
pulls of a subject overlap and each reads the journal's mark the previous one moved.

What is pulled when: at start, everyone (what happened while watch was down); on each notification, as the
coalescer (``_coalesce``) gathers them; every ``poll`` seconds after the last pull of everyone, everyone again (a
lost notification is caught there; on a server that does not deliver, this is the whole mechanism). A pull that
fails transiently (the server down for a while, after the client's retries) is reported and the next one tries
again; any other error (refused credentials, a study the server does not hold, a bug) ends the watch, cleanly.
On ``stop`` the endpoint closes, the running pull ends, and the Subscription is removed unless ``keep``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from urllib.parse import urlsplit

from fhir_lupus.audit import AuditLog
from fhir_lupus.client import Capabilities, FhirClient
from fhir_lupus.errors import TransientHttpError
from fhir_lupus.journal import Journal
from fhir_lupus.settings import Settings
from fhir_lupus.watch._coalesce import Work, WorkQueue
from fhir_lupus.watch._endpoint import DEFAULT_PATH, NotificationEndpoint
from fhir_lupus.watch._subscription import (
    ACTIVATION_TIMEOUT,
    Payload,
    Registration,
    SubscriptionSpec,
    register_subscription,
    remove_subscription,
    supports_subscriptions,
)

__all__ = ["FALLBACK_POLL", "WatchOptions", "WatchReport", "Worker", "watch"]

R = TypeVar("R")
FALLBACK_POLL = 300.0  # without notifications and without --poll: everyone every five minutes
_TICK = 0.5  # how often the worker and the waiting thread look up from waiting (stop, a poll due)


@dataclass(frozen=True)
class WatchOptions:
    """``listen``: (host, port) of the endpoint (port 0: any free one); ``public_url``: what the server calls when
    it is not the endpoint's own URL (a proxy, a tunnel); its path is the endpoint's path. ``poll``: seconds
    between pulls of everyone (None: only without notifications, every FALLBACK_POLL). ``keep``: leave the
    Subscription on the server at exit. ``activation_timeout``: how long the server has to activate it."""

    study: str
    secret: str
    listen: tuple[str, int] = ("127.0.0.1", 0)
    public_url: str | None = None
    payload: Payload = "full"
    poll: float | None = None
    keep: bool = False
    activation_timeout: float = ACTIVATION_TIMEOUT


@dataclass
class WatchReport:
    """What a watch did: its endpoint, its Subscription (None: the server has none), the pulls run and the
    notifications they answered, and the notes said along the way."""

    endpoint: str = ""
    registration: Registration | None = None
    pulls: int = 0
    failed_pulls: int = 0
    notifications: int = 0
    poll: float | None = None
    notes: list[str] = field(default_factory=list)


class Worker(Generic[R]):
    """The one thread that runs the pulls: ``queue``'s work, a pull of everyone every ``poll`` seconds."""

    def __init__(
        self,
        queue: WorkQueue,
        pull: Callable[[frozenset[str] | None], R],
        *,
        signals: Callable[[R], object] | None = None,
        on_pull: Callable[[Work, R], None] | None = None,
        on_error: Callable[[Work, TransientHttpError], None] | None = None,
        poll: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue = queue
        self.poll = poll  # may be set later (once the Subscription's fate is known): read at every tick
        self.pulls = self.failed = self.notifications = 0
        self.crashed: BaseException | None = None
        self._pull, self._signals, self._on_pull, self._on_error = pull, signals, on_pull, on_error
        self._clock = clock
        self._last_everyone = clock()
        self._thread = threading.Thread(target=self._run, name="watch-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self.queue.close()
        self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            while True:
                work = self.queue.get(timeout=_TICK)
                if work is None:
                    if self.queue.closed:
                        return
                    if self.poll is not None and self._clock() - self._last_everyone >= self.poll:
                        self.queue.all()
                    continue
                self.run_once(work)
        except BaseException as exc:  # handed to the waiting thread, which re-raises it
            self.crashed = exc

    def run_once(self, work: Work) -> None:
        """One pull, shown as soon as it is done, then its signals (which read the whole table: the pull's report
        does not wait for them); a transient failure of either is reported (the next pull tries again), others
        raise."""
        if work.patients is None:
            self._last_everyone = self._clock()
        self.notifications += work.notifications
        try:
            result = self._pull(work.patients)
            self.pulls += 1
            if self._on_pull is not None:
                self._on_pull(work, result)
            if self._signals is not None:
                self._signals(result)
        except TransientHttpError as exc:
            self.failed += 1
            if self._on_error is not None:
                self._on_error(work, exc)


def watch(
    client: FhirClient,
    journal: Journal,
    pull: Callable[[frozenset[str] | None], R],
    *,
    options: WatchOptions,
    settings: Settings,
    stop: threading.Event,
    signals: Callable[[R], object] | None = None,
    on_pull: Callable[[Work, R], None] | None = None,
    on_error: Callable[[Work, TransientHttpError], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    audit_log: AuditLog = None,
) -> WatchReport:
    """Watch the server until ``stop`` is set; what it did. The server is asked first (its CapabilityStatement:
    a wrong URL fails before anything starts), then the endpoint listens, the catch-up pull starts, and the
    Subscription is registered (when the server lists Subscription) while it runs."""
    report = WatchReport()

    def note(text: str) -> None:
        report.notes.append(text)
        if on_note is not None:
            on_note(text)

    capabilities = client.reach(fresh=False)
    host, port = options.listen
    path = _path_of(options.public_url)
    queue = WorkQueue()
    worker = Worker(queue, pull, signals=signals, on_pull=on_pull, on_error=on_error, poll=options.poll)
    with NotificationEndpoint(queue, secret=options.secret, host=host, port=port, path=path) as endpoint:
        report.endpoint = endpoint.url
        spec = SubscriptionSpec(options.study, options.public_url or endpoint.url, options.secret, options.payload)
        queue.all()  # the catch-up: what changed while watch was not running
        worker.start()
        try:
            registration = _subscribe(client, journal, spec, options, settings, capabilities, note, audit_log)
            report.registration = registration
            if registration is None or not registration.active:
                worker.poll = options.poll or FALLBACK_POLL
            else:
                note(f"Subscription/{registration.id} active: notifications go to {spec.endpoint}")
            report.poll = worker.poll
            if worker.poll is not None:
                note(f"pulling everyone every {worker.poll:g} s")
            while not stop.wait(_TICK) and worker.alive:
                pass
        finally:
            endpoint.stop()  # no notification is taken from here on
            try:
                if report.registration is not None and not options.keep:
                    remove_subscription(
                        client, journal, spec, report.registration, settings=settings, audit_log=audit_log
                    )
                    note(f"Subscription/{report.registration.id} removed")
            finally:
                worker.join()
    report.pulls, report.failed_pulls, report.notifications = worker.pulls, worker.failed, worker.notifications
    if worker.crashed is not None:
        raise worker.crashed
    return report


def _subscribe(
    client: FhirClient,
    journal: Journal,
    spec: SubscriptionSpec,
    options: WatchOptions,
    settings: Settings,
    capabilities: Capabilities,
    note: Callable[[str], None],
    audit_log: AuditLog,
) -> Registration | None:
    """The Subscription, registered and waited for; None (with a note) when the server lists none."""
    if not supports_subscriptions(capabilities):
        note("the server's CapabilityStatement lists no Subscription (create, update, search): polling only")
        return None
    registration = register_subscription(
        client, journal, spec, settings=settings, audit_log=audit_log, timeout=options.activation_timeout
    )
    how = "registered" if registration.created else "found by its tag and updated"
    note(f"Subscription/{registration.id} {how}")
    if registration.note:
        note(registration.note)
    return registration


def _path_of(public_url: str | None) -> str:
    """The endpoint's path: the public URL's (a proxy forwards it as it is), else DEFAULT_PATH."""
    if not public_url:
        return DEFAULT_PATH
    return urlsplit(public_url).path or DEFAULT_PATH
