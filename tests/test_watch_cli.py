"""``fhir-lupus watch`` through typer's CliRunner: the fake server of tests/subscriptionfake.py (respx), the real
endpoint on loopback, the pull injected where the command connects it (``pull_callable``), ended by SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from subscriptionfake import BASE, SubscriptionServer
from typer.testing import CliRunner

from fhir_lupus.audit import read_entries
from fhir_lupus.cli import _watch, app
from fhir_lupus.errors import FhirLupusError
from fhir_lupus.pull import PullResult
from fhir_lupus.watch import SECRET_HEADER
from tests.conftest import base_rows, write_dataset

runner = CliRunner()
SECRET = "cli-secret-abcdefghijklmnopqrstuvwxyz"
WAIT = 10.0  # a bound for a hung test, never a timing claim


@pytest.fixture
def server() -> Iterator[SubscriptionServer]:
    fake = SubscriptionServer()
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1", port=9).mock(side_effect=fake)
        mock.route(host="127.0.0.1").pass_through()
        yield fake


class Pulls:
    """What the command's pull was asked, as ``pull_callable`` would hand it over."""

    def __init__(self) -> None:
        self.calls: list[frozenset[str] | None] = []
        self.changed = threading.Condition()

    def factory(self, *_args: Any, **_kwargs: Any) -> Any:
        def pull(patients: frozenset[str] | None) -> PullResult:
            with self.changed:
                self.calls.append(patients)
                self.changed.notify_all()
            return PullResult(subjects=1 if patients else 3, total_rows=7)

        return pull

    def wait_for(self, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.calls) >= count, timeout=WAIT), self.calls


def _args(tmp_path: Path, *extra: str) -> list[str]:
    data = tmp_path / "data"
    if not data.exists():  # a small trial: watch reads it once for the flare signals
        write_dataset(data, base_rows())
    journal = str(tmp_path / "journal.sqlite")
    out = str(tmp_path / "labs.csv")
    return ["watch", str(data), "--server", BASE, "-o", out, "--journal", journal, "--listen", "127.0.0.1:0", *extra]


def _terminate_after(action: Any) -> threading.Thread:
    """Run ``action`` in a thread, then SIGTERM this process (the command's handler turns it into a clean stop)."""

    def run() -> None:
        try:
            action()
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_notification_pulls_its_subject_and_sigterm_removes_the_subscription(
    server: SubscriptionServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_watch.SECRET_ENV, SECRET)
    pulls = Pulls()
    monkeypatch.setattr(_watch, "pull_callable", pulls.factory)
    seen: dict[str, int] = {}

    def notify() -> None:
        pulls.wait_for(1)
        for _ in range(int(WAIT / 0.01)):
            active = [r for r in server.store.values() if r.get("status") == "active"]
            if active:
                break
            threading.Event().wait(0.01)
        endpoint = active[0]["channel"]["endpoint"]
        body = {"resourceType": "Observation", "subject": {"reference": "Patient/p3"}}
        seen["without"] = httpx.put(f"{endpoint}/Observation/o9", json=body).status_code
        seen["with"] = httpx.put(f"{endpoint}/Observation/o9", json=body, headers={SECRET_HEADER: SECRET}).status_code
        pulls.wait_for(2)

    helper = _terminate_after(notify)
    result = runner.invoke(app, _args(tmp_path))
    helper.join(timeout=WAIT)
    assert result.exit_code == 0, result.output
    assert seen == {"without": 401, "with": 200}
    assert pulls.calls[:2] == [None, frozenset({"p3"})]
    assert server.store == {}
    assert "pull of everyone" in result.output and "pull of 1 subject(s)" in result.output
    assert "watch ended: 2 pulls" in result.output
    assert SECRET not in result.output and f"{SECRET[:4]}..." in result.output
    audit = tmp_path / "journal.audit.jsonl"
    assert [e["outcome"] for e in read_entries(audit)] == ["registered", "removed"]
    assert SECRET not in audit.read_text(encoding="utf-8")


def test_keep_leaves_the_subscription(
    server: SubscriptionServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pulls = Pulls()
    monkeypatch.setattr(_watch, "pull_callable", pulls.factory)

    def registered() -> None:
        pulls.wait_for(1)
        for _ in range(int(WAIT / 0.01)):
            if any(r.get("status") == "active" for r in server.store.values()):
                return
            threading.Event().wait(0.01)

    helper = _terminate_after(registered)
    result = runner.invoke(app, _args(tmp_path, "--keep"))
    helper.join(timeout=WAIT)
    assert result.exit_code == 0, result.output
    assert len(server.store) == 1
    assert [e["outcome"] for e in read_entries(tmp_path / "journal.audit.jsonl")] == ["registered"]


def test_a_pull_no_retry_can_fix_ends_watch_with_its_exit_code(
    server: SubscriptionServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def factory(*_args: Any, **_kwargs: Any) -> Any:
        def pull(_patients: frozenset[str] | None) -> PullResult:
            raise FhirLupusError("0 ResearchStudy resources on the server carry NCT00698191; expected 1")

        return pull

    monkeypatch.setattr(_watch, "pull_callable", factory)
    result = runner.invoke(app, _args(tmp_path, "--activation-timeout", "0"))
    assert result.exit_code == 2
    assert "0 ResearchStudy resources" in result.output
    assert server.store == {}  # removed on the way out


def test_an_address_in_use_exits_2_saying_so(
    server: SubscriptionServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_watch, "pull_callable", Pulls().factory)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = _args(tmp_path)
        result = runner.invoke(app, [*args[: args.index("--listen")], "--listen", f"127.0.0.1:{port}"])
    assert result.exit_code == 2
    assert f"127.0.0.1:{port}" in result.output and "unexpected" not in result.output
    assert server.store == {}


@pytest.mark.parametrize(
    ("extra", "said"), [(["--payload", "some"], "--payload"), (["--listen", "nowhere"], "HOST:PORT")]
)
def test_bad_options_exit_2_before_any_request(
    server: SubscriptionServer, tmp_path: Path, extra: list[str], said: str
) -> None:
    args = _args(tmp_path)
    args = args[: args.index("--listen")] + extra
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and said in result.output
    assert server.requests == []


def test_the_commands_pull_is_the_incremental_pull_of_the_study(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[dict[str, Any]] = []

    def pull_study(*args: Any, **kwargs: Any) -> PullResult:
        asked.append({"args": args, **kwargs})
        return PullResult()

    monkeypatch.setattr(_watch, "pull_study", pull_study)
    settings = object()
    pull = _watch.pull_callable("client", "journal", "study", output=Path("labs.csv"), settings=settings)  # type: ignore[arg-type]
    pull(None)
    pull(frozenset({"p3"}))
    common = {"args": ("client", "journal", "study"), "since": "auto", "output": Path("labs.csv"), "settings": settings}
    assert asked == [{**common, "patients": None}, {**common, "patients": frozenset({"p3"})}]


def test_after_each_pull_the_signals_of_the_whole_table_are_written_and_only_new_ones_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fhir_lupus.journal import Journal
    from fhir_lupus.model import load_study
    from fhir_lupus.pull import PullStore
    from fhir_lupus.source import TrialSource
    from fhir_lupus.terminology import load_pack
    from tests.test_signals import SETTINGS, lab

    study = load_study("NCT00698191", load_pack())
    journal = Journal(tmp_path / "journal.sqlite")
    server = "http://127.0.0.1:9/fhir"

    def pulled(*rows: Any) -> None:  # what a pull leaves in the store
        with PullStore(journal.path, server, study.nct_id) as store:
            store.stage(rows)
            with store.transaction():
                store.merge(replace_all=False)

    class Client:
        base_url = server

    trial = TrialSource.directory(write_dataset(tmp_path / "data", base_rows()), settings=SETTINGS)
    csv_out = tmp_path / "signals.csv"
    after_pull = _watch.signals_callable(
        trial,
        Client(),
        journal,
        study,
        csv=csv_out,
        publish=False,
        settings=SETTINGS,  # type: ignore[arg-type]
        table="labs.csv",
    )
    pulled(lab("c3", "0.95", "g/L", 1, low="0.9"), lab("c3", "0.85", "g/L", 2, low="0.9"))
    first = after_pull(PullResult())
    assert [s.definition_id for s in first] == ["sledai-2k-low-complement"]  # type: ignore[attr-defined]
    assert "flare signal" in "".join(capsys.readouterr())
    assert len(csv_out.read_text(encoding="utf-8").splitlines()) == 2
    pulled(lab("platelets", "150", "10^9/L", 1), lab("platelets", "80", "10^9/L", 3))
    second = after_pull(PullResult())
    assert [s.definition_id for s in second] == ["sledai-2k-thrombocytopenia"]  # type: ignore[attr-defined]
    printed = "".join(capsys.readouterr())
    assert "thrombocytopenia" in printed.lower() and "complement" not in printed.lower()  # only the new one
    assert len(csv_out.read_text(encoding="utf-8").splitlines()) == 3  # the CSV holds them all
    journal.close()
