"""``fhir-lupus watch``: pull lab results as they happen (R4 rest-hook Subscription, and a periodic pull).

The command parses, connects the library's pull (``pull_study`` of the notified patients) and flare signals
(``fhir_lupus.signals`` over the whole pulled table and the trial) to ``fhir_lupus.watch`` as the two callables
it runs, prints each pull's summary, and ends on SIGINT or SIGTERM: the handlers only set an
event, so the running pull finishes, the Subscription is removed (unless --keep) and the journal closes cleanly.
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.markup import escape

from fhir_lupus.cli._common import (
    DEFAULT_JOURNAL,
    DataDir,
    JournalPath,
    Mappings,
    SiteFile,
    fail,
    open_journal,
    settings_of,
)
from fhir_lupus.cli._connection import connection_options, open_client
from fhir_lupus.cli._output import console, outcome
from fhir_lupus.cli._sync_report import render_pull
from fhir_lupus.client import Connection, FhirClient
from fhir_lupus.errors import FhirLupusError, TransientHttpError
from fhir_lupus.journal import Journal
from fhir_lupus.model import StudyDefinition, load_study, load_trial
from fhir_lupus.pull import PullResult, PullStore, pull_study
from fhir_lupus.settings import Settings
from fhir_lupus.signals import NotCounted, describe, flare_signals, publish_signals, write_signals
from fhir_lupus.source import TrialSource
from fhir_lupus.watch import ACTIVATION_TIMEOUT, WatchOptions, Work, parse_listen, watch

__all__ = ["SECRET_ENV", "watch_command"]

SECRET_ENV = "FHIR_LUPUS_WATCH_SECRET"
DEFAULT_LISTEN = "127.0.0.1:8765"  # fixed, not any free port: the Subscription's tag names the endpoint
PullFn = Callable[[frozenset[str] | None], PullResult]


def pull_callable(
    client: FhirClient, journal: Journal, study: StudyDefinition, *, output: Path, settings: Settings
) -> PullFn:
    """The incremental pull watch runs for ``patients`` (Patient logical ids; None: every enrolled subject). A pull
    of a few patients leaves the high-water mark where it is, so the next pull of everyone misses nothing."""

    def run(patients: frozenset[str] | None) -> PullResult:
        return pull_study(client, journal, study, since="auto", output=output, settings=settings, patients=patients)

    return run


def signals_callable(
    trial: TrialSource,
    client: FhirClient,
    journal: Journal,
    study: StudyDefinition,
    *,
    csv: Path | None,
    publish: bool,
    settings: Settings,
    table: str,
) -> Callable[[PullResult], object]:
    """What runs after each pull: the flare signals of the whole pulled table (the store's rows, whatever the
    table's format) and the trial, written to ``csv`` each time; each signal not seen before in this run is
    printed and, with ``publish``, written to the server (idempotent there too, so a restart re-publishes
    nothing). A pulled row the checks refuse or query is printed once, named by ``table`` (the output) and line."""
    seen: set[tuple[str, str]] = set()
    told: set[tuple[str, str]] = set()

    def run(_result: PullResult) -> object:
        not_counted: list[NotCounted] = []
        with PullStore(journal.path, client.base_url, study.nct_id) as store:
            found = flare_signals(store.rows(), trial=trial, settings=settings, table=table, not_counted=not_counted)
        for item in not_counted:
            if (item.result_id, item.reason) not in told:
                told.add((item.result_id, item.reason))
                outcome.print(f"[yellow]not counted by signals[/yellow] {escape(str(item))}", highlight=False)
        if csv is not None:
            write_signals(found, csv)
        # a provisional signal that becomes final is new again: its DetectedIssue's status changes
        new = [flare for flare in found if (flare.key, flare.provisional) not in seen]
        seen.update((flare.key, flare.provisional) for flare in new)
        for flare in new:
            outcome.print(f"[magenta]flare signal[/magenta] {escape(describe(flare))}", highlight=False)
        if publish and new:
            report = publish_signals(client, new, settings=settings, study=study.nct_id, journal=journal)
            outcome.print(
                f"signals published: {len(report.created)} created, {len(report.updated)} updated, "
                f"{len(report.unchanged)} unchanged",
                highlight=False,
            )
        return new

    return run


@contextmanager
def _stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` instead of ending the process mid-request; the old handlers come back."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def _secret() -> tuple[str, str]:
    """The shared secret and where it came from; a fresh one per run unless the environment names one."""
    given = os.environ.get(SECRET_ENV)
    return (given, SECRET_ENV) if given else (secrets.token_urlsafe(32), "generated for this run")


@connection_options
def watch_command(
    data_dir: DataDir,
    connection: Connection,
    output: Annotated[Path, typer.Option("-o", "--output", help="Lab rows (.csv, or .parquet with pyarrow).")],
    study: Annotated[str, typer.Option("--study", help="NCT id of a study in mappings/studies/.")] = "NCT00698191",
    listen: Annotated[
        str, typer.Option("--listen", help="HOST:PORT the notification endpoint listens on (loopback by default).")
    ] = DEFAULT_LISTEN,
    public_url: Annotated[
        str | None,
        typer.Option("--public-url", help="The URL the server calls, when not the endpoint's own (a proxy)."),
    ] = None,
    payload: Annotated[
        str, typer.Option("--payload", help="full: the Observation comes with the notification; empty: nothing.")
    ] = "full",
    poll: Annotated[
        float | None,
        typer.Option(
            "--poll",
            min=1,
            help="Pull everyone every SECONDS too (the net for lost notifications; without notifications: 300).",
        ),
    ] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the Subscription on the server at exit.")] = False,
    activation_timeout: Annotated[
        float, typer.Option("--activation-timeout", min=0, help="Seconds the server has to activate it.")
    ] = ACTIVATION_TIMEOUT,
    signals_csv: Annotated[Path | None, typer.Option("--signals", help="Write the flare signals to this CSV.")] = None,
    publish: Annotated[bool, typer.Option("--publish", help="Write the flare signals to the server as FHIR.")] = False,
    journal: JournalPath = DEFAULT_JOURNAL,
    mappings: Mappings = None,
    site: SiteFile = None,
) -> None:
    """Pull the study's lab results as they happen: notified by an R4 rest-hook Subscription, and by a periodic pull.

    Registers one Subscription (found again by its tag at the next start, never two) for laboratory Observations,
    delivered to a local endpoint that checks a shared secret (FHIR_LUPUS_WATCH_SECRET, else one per run); each
    notification runs the incremental pull (of the notified subject with --payload full, of everyone with empty).
    A server without Subscription is polled. Ends on Ctrl-C or SIGTERM, removing the Subscription unless --keep."""
    if payload not in ("full", "empty"):
        fail(FhirLupusError(f"--payload must be full or empty, not {payload!r}"))
    try:
        address = parse_listen(listen)
    except ValueError as exc:
        fail(exc)
    settings = settings_of(mappings, site=site, connection=connection)
    if publish:  # before any I/O: the fix is in the site profile
        try:
            settings.refuse_placeholders(connection.server, "watch --publish")
        except FhirLupusError as exc:
            fail(exc)
    secret, source = _secret()
    console.print(f"notification secret: {secret[:4]}... ({source})", highlight=False)
    options = WatchOptions(
        study=study,
        secret=secret,
        listen=address,
        public_url=public_url,
        payload="full" if payload == "full" else "empty",
        poll=poll,
        keep=keep,
        activation_timeout=activation_timeout,
    )
    stop = threading.Event()
    with open_client(settings) as client, open_journal(journal) as book, _stopped_by_signals(stop):
        try:
            definition = load_study(study, settings.pack)
            pull = pull_callable(client, book, definition, output=output, settings=settings)
            trial = TrialSource.loaded(*load_trial(data_dir, pack=settings.pack))  # read once: watch reads labs
            signals = signals_callable(
                trial, client, book, definition, csv=signals_csv, publish=publish, settings=settings, table=str(output)
            )
            report = watch(
                client,
                book,
                pull,
                options=options,
                settings=settings,
                stop=stop,
                signals=signals,
                on_pull=_show_pull,
                on_error=_show_error,
                on_note=_show_note,
            )
        except FhirLupusError as exc:
            fail(exc)
        except OSError as exc:  # the endpoint's address in use or not ours, the table not writable
            fail(OSError(f"{exc.strerror or exc} ({listen if exc.filename is None else exc.filename})"))
    outcome.print(
        f"watch ended: {report.pulls} pulls ({report.failed_pulls} failed) answered {report.notifications} "
        f"notifications and polls; endpoint {report.endpoint}",
        highlight=False,
    )


def _show_pull(work: Work, result: PullResult) -> None:
    whom = "everyone" if work.patients is None else f"{len(work.patients)} subject(s)"
    console.print(f"pull of {whom} ({work.notifications} notification(s) or poll(s)):", highlight=False)
    render_pull(result)


def _show_error(work: Work, exc: TransientHttpError) -> None:
    whom = "everyone" if work.patients is None else ", ".join(sorted(work.patients))
    outcome.print(f"[red]pull of {whom} failed:[/red] {escape(str(exc))} (the next notification or poll tries again)")


def _show_note(text: str) -> None:
    console.print(f"[yellow]note[/yellow] {text}", highlight=False)
