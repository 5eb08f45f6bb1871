"""No patient data left behind: ``map``, ``push`` and ``registry package`` stopped mid-run, the dry run, the modes.

Each command runs in a child process (tests/pausing.py) that pauses where its temporary files hold patient data,
and is signalled there. SIGKILL runs nothing: what it left is removed by the next run, which keeps what a run
still alive holds. SIGTERM is a normal exit (143) that removes the run's own. Afterwards no file under the output
directory, the working directory or the temporary directory ($TMPDIR) holds an MRN of the input, except the
outputs asked for. The children run with umask 0, so what is private is private by itself.
"""

from __future__ import annotations

import csv
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakefhir import BASE, FakeFhir, served
from support import REPO
from typer.testing import CliRunner

from fhir_lupus._scratch import PREFIX, sweep
from fhir_lupus.cli import app
from fhir_lupus.journal import Journal

PAUSING = Path(__file__).with_name("pausing.py")
WAIT = 60.0  # seconds a child may take to reach its pause or to end (a loaded machine); never slept through


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def files_under(*roots: Path) -> list[Path]:
    return sorted(path for root in roots for path in root.rglob("*") if path.is_file() and not path.is_symlink())


def leftovers(*roots: Path) -> list[Path]:
    return sorted(path for root in roots for path in root.rglob(f"{PREFIX}*"))


@dataclass
class Child:
    process: subprocess.Popen[bytes]
    log: Path
    marker: Path

    def release(self) -> None:
        """Let the paused run go on (tests/pausing.py)."""
        self.marker.unlink()

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        return self.process.wait(WAIT)


@dataclass
class Places:
    """A trial, and the folders a run may write in: the output folder, its working folder and its $TMPDIR."""

    data: Path
    out: Path
    cwd: Path
    tmp: Path
    logs: Path

    @property
    def mrns(self) -> list[bytes]:
        with (self.data / "subjects.csv").open(encoding="utf-8", newline="") as handle:
            found = [row["mrn"].encode() for row in csv.DictReader(handle) if row["mrn"]]
        assert found
        return found

    def holding_mrn(self) -> list[Path]:
        """Every file under the output, working and temporary folders that holds an MRN of the input."""
        return [
            path
            for path in files_under(self.out, self.cwd, self.tmp)
            if any(mrn in path.read_bytes() for mrn in self.mrns)
        ]

    def environ(self) -> dict[str, str]:
        path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
        return {**os.environ, "TMPDIR": str(self.tmp), "PYTHONPATH": path, "FHIR_LUPUS_REGISTRY_KEY": "k" * 32}

    def start(self, pause: str, calls: int, *args: str | Path, chunk_rows: int = 40_000) -> Child:
        """``fhir-lupus ARGS`` paused after the ``calls``-th return of ``pause`` (tests/pausing.py)."""
        number = len(list(self.logs.iterdir()))
        marker, log = self.logs / f"{number}.paused", self.logs / f"{number}.log"
        command = [sys.executable, str(PAUSING), pause, str(calls), str(marker), str(chunk_rows), *map(str, args)]
        with log.open("wb") as sink:
            process = subprocess.Popen(
                command, cwd=self.cwd, env=self.environ(), stdout=sink, stderr=subprocess.STDOUT, umask=0
            )
        deadline = time.monotonic() + WAIT
        while not marker.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the run never paused (exit {process.wait()}):\n{log.read_text(errors='replace')}")
            time.sleep(0.02)
        return Child(process, log, marker)


@pytest.fixture
def places(dataset: Callable[..., Path], tmp_path: Path) -> Places:
    folders = [tmp_path / name for name in ("out", "cwd", "tmp", "logs")]
    for folder in folders:
        folder.mkdir()
    return Places(dataset(), *folders)


def only_scratch(folder: Path) -> Path:
    """The one temporary directory in ``folder``: private, and so is every file in it."""
    (found,) = leftovers(folder)
    assert mode(found) == 0o700 and {mode(path) for path in files_under(found)} == {0o600}
    return found


def test_map_killed_then_terminated(places: Places) -> None:
    pause = "fhir_lupus.streaming:_Spool.close"  # every batch spooled, the bundle not yet written
    killed = places.start(pause, 1, "map", places.data, "-o", places.out / "bundle.json")
    spool = only_scratch(places.out)
    assert places.holding_mrn() and all(path.is_relative_to(spool) for path in places.holding_mrn())
    assert killed.stop(signal.SIGKILL) == -signal.SIGKILL
    assert leftovers(places.out) == [spool]  # a kill runs nothing

    alive = places.start(pause, 1, "map", places.data, "-o", places.out / "bundle.json")
    assert not spool.exists()  # the next run in the folder removed what the killed one left
    live = only_scratch(places.out)
    assert sweep(places.out) == [] and leftovers(places.out) == [live]  # what a run still alive holds is kept

    assert alive.stop(signal.SIGTERM) == 128 + signal.SIGTERM
    assert leftovers(places.out, places.cwd, places.tmp) == [] and places.holding_mrn() == []
    assert list(places.out.iterdir()) == []  # no bundle half written either


@pytest.fixture
def server_url() -> Iterator[str]:
    with served(FakeFhir()) as url:
        yield url


def test_push_killed_then_terminated(places: Places, server_url: str) -> None:
    journal = places.out / "journal.sqlite"
    push = ["push", places.data, "--server", server_url, "--journal", journal]
    pause = "fhir_lupus.push._planner:Planner.plan"  # the study written, the subjects planned
    killed = places.start(pause, 2, *push, chunk_rows=12)  # several chunks, kept on disk once checked
    chunks = only_scratch(places.tmp)
    assert any(path.is_relative_to(chunks) for path in places.holding_mrn())
    assert killed.stop(signal.SIGKILL) == -signal.SIGKILL
    assert leftovers(places.tmp) == [chunks]

    stopped = places.start(pause, 2, *push, chunk_rows=12)
    assert not chunks.exists()  # the next run's start swept the temporary directory
    only_scratch(places.tmp)
    assert stopped.stop(signal.SIGTERM) == 128 + signal.SIGTERM
    assert leftovers(places.out, places.cwd, places.tmp) == []
    kept = files_under(places.out)  # the journal (its side files after the kill), the audit log
    assert journal in kept and {mode(path) for path in kept} == {0o600}
    assert set(places.holding_mrn()) <= set(kept)


def test_registry_package_killed_then_terminated(places: Places) -> None:
    package = ["registry", "package", places.data, "-o", places.out / "package"]
    pause = "fhir_lupus.registry._runs:SortedRuns.merge_into"  # the package staged, not yet in place
    killed = places.start(pause, 1, *package)
    staging = only_scratch(places.out)
    assert any(path.name.endswith(".ndjson") for path in files_under(staging))
    assert killed.stop(signal.SIGKILL) == -signal.SIGKILL
    assert leftovers(places.out) == [staging]

    stopped = places.start(pause, 1, *package)
    assert not staging.exists()
    only_scratch(places.out)
    assert stopped.stop(signal.SIGTERM) == 128 + signal.SIGTERM
    assert leftovers(places.out, places.cwd, places.tmp) == [] and places.holding_mrn() == []
    assert list(places.out.iterdir()) == []  # neither the package nor its link table


runner = CliRunner()


def test_push_dry_run_writes_nothing(
    fake: FakeFhir, dataset: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a journal, not an audit line, not a temporary file left, not SQLite's side files of a journal it reads."""
    data, cwd, tmp = dataset(), tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setattr("fhir_lupus.model._loader.CHUNK_ROWS", 12)  # chunks kept in $TMPDIR while it runs
    preview = runner.invoke(app, ["push", str(data), "--server", BASE, "--dry-run"])
    assert preview.exit_code == 0 and "dry run (nothing written)" in preview.output, preview.output
    assert list(cwd.iterdir()) == [] and list(tmp.iterdir()) == []
    assert fake.count("POST") == fake.count("PUT") == 0

    pushed = runner.invoke(app, ["push", str(data), "--server", BASE])
    assert pushed.exit_code == 0, pushed.output
    before = {path.name: path.read_bytes() for path in cwd.iterdir()}
    assert sorted(before) == ["fhir-lupus-journal.audit.jsonl", "fhir-lupus-journal.sqlite"]
    assert {mode(path) for path in cwd.iterdir()} == {0o600}
    again = runner.invoke(app, ["push", str(data), "--server", BASE, "--dry-run"])
    assert again.exit_code == 0 and " 0 create, 0 update" in again.output, again.output
    assert {path.name: path.read_bytes() for path in cwd.iterdir()} == before
    assert list(tmp.iterdir()) == []


def test_a_journal_read_in_memory_sees_the_last_commits_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    assert Journal(path, in_memory=True).write_limits("s") == {} and list(tmp_path.iterdir()) == []
    with Journal(path) as open_elsewhere:  # a push running: its commits are in the -wal
        open_elsewhere.set_write_limit("s", "direct", 7)
        names = sorted(p.name for p in tmp_path.iterdir())
        assert names == ["journal.sqlite", "journal.sqlite-shm", "journal.sqlite-wal"]
        assert {mode(p) for p in tmp_path.iterdir()} == {0o600}  # SQLite's side files too
        with Journal(path, in_memory=True) as copy:
            assert copy.write_limits("s") == {"direct": 7}
            copy.set_write_limit("s", "direct", 3)  # in memory only
    assert [p.name for p in tmp_path.iterdir()] == ["journal.sqlite"]  # closed: no side files left
    content = path.read_bytes()
    with Journal(path, in_memory=True) as copy:
        assert copy.write_limits("s") == {"direct": 7}
    assert [p.name for p in tmp_path.iterdir()] == ["journal.sqlite"] and path.read_bytes() == content


def test_quarantine_files_are_private(dataset: Callable[..., Path], tmp_path: Path) -> None:
    data = dataset(lambda rows: rows["labs.csv"][0].update(value="not a number"))
    result = runner.invoke(app, ["validate", str(data), "--quarantine", str(tmp_path / "quarantine")])
    assert result.exit_code == 1, result.output
    written = list((tmp_path / "quarantine").iterdir())
    assert [path.name for path in written] == ["labs.csv.rejected.csv"] and mode(written[0]) == 0o600


def test_watch_killed_then_terminated(places: Places, server_url: str) -> None:
    """watch's pulled table is written through a private scratch file: killed mid-write, the scratch stays until
    the next run in the folder sweeps it; stopped by SIGTERM, watch leaves only its outputs (no half table)."""
    pushed = runner.invoke(app, ["push", str(places.data), "--server", server_url, "--journal", str(places.cwd / "p")])
    assert pushed.exit_code == 0, pushed.output
    table, journal = places.out / "labs.csv", places.out / "journal.sqlite"
    watch: list[str | Path] = ["watch", places.data, "--server", server_url, "-o", table, "--journal", journal]
    watch += ["--poll", "3600"]
    watch += ["--listen", "127.0.0.1:0", "--activation-timeout", "0", "--signals", places.out / "signals.csv"]
    pause = "fhir_lupus.pull._store:flat"  # the 3rd row of the table written to its scratch file
    killed = places.start(pause, 3, *watch)
    scratch = only_scratch(places.out)
    assert killed.stop(signal.SIGKILL) == -signal.SIGKILL
    assert leftovers(places.out) == [scratch] and not table.exists()

    stopped = places.start(pause, 3, *watch)
    assert not scratch.exists()  # the next run's first write in the folder swept it
    only_scratch(places.out)
    stopped.process.send_signal(signal.SIGTERM)  # watch ends once its pull is over: the pull goes on
    stopped.release()
    assert stopped.process.wait(WAIT) == 0, stopped.log.read_text(errors="replace")
    assert leftovers(places.out, places.cwd, places.tmp) == []
    kept = {path.name for path in files_under(places.out)}
    assert kept <= {table.name, "labs.unmapped.csv", journal.name, "journal.audit.jsonl", "signals.csv"}
    again = places.out / "again.csv"  # the whole table, never part of it: as a pull of everything writes it
    pulled = runner.invoke(app, ["pull", "--server", server_url, "-o", str(again), "--journal", str(places.cwd / "j")])
    assert pulled.exit_code == 0, pulled.output
    assert table.read_bytes() == again.read_bytes()
