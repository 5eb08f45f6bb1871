"""No patient data stays behind in temporary files (fhir_lupus/_scratch.py): removed at the end, on an error, on
SIGTERM, SIGHUP and SIGINT (a normal exit), and after a kill by the next run that writes in the same directory;
private (700/600) whatever the umask. tests/test_no_data_left.py kills the real commands."""

from __future__ import annotations

import fcntl
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import REPO

from fhir_lupus._scratch import (
    DIR_MODE,
    FILE_MODE,
    LOCK_NAME,
    PREFIX,
    create_private,
    discard,
    exit_on_termination,
    open_private,
    private_dir,
    publish,
    scratch_dir,
    scratch_file,
    sweep,
    write_atomic,
)
from fhir_lupus.pipeline import MappedBatch
from fhir_lupus.streaming import write_bundle


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid  # reaped: no process has it (until the system reuses it)


def test_a_killed_run_s_leftovers_are_swept_and_a_live_one_s_kept(tmp_path: Path) -> None:
    gone = tmp_path / f"{PREFIX}{dead_pid()}-spool-x"
    gone.mkdir()
    (gone / "0.part").write_text("MRN DT2067885", encoding="utf-8")
    (tmp_path / f"{PREFIX}{dead_pid()}-labs.csv-y").write_text("patient rows", encoding="utf-8")
    live = tmp_path / f"{PREFIX}{os.getppid()}-spool-z"  # our parent is alive
    live.mkdir()
    mine = scratch_dir(tmp_path, "spool")  # making a temporary directory sweeps first
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, mine.name])
    assert sweep(tmp_path) == [] and mine.exists()  # our own is never swept


def test_write_atomic_leaves_nothing_and_keeps_the_usual_mode(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    write_atomic(target, "a,b\n")
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
    assert stat.S_IMODE(target.stat().st_mode) == FILE_MODE
    write_atomic(target, "secret", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_text() == "secret"


def test_sigterm_is_a_normal_exit_that_runs_the_cleanup(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    exit_on_termination()
    try:

        def batches() -> Iterator[MappedBatch]:
            yield MappedBatch(None, ())
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill` would, while the bundle is being spooled
            yield MappedBatch(None, ())

        with pytest.raises(SystemExit) as stopped:
            write_bundle(batches(), tmp_path / "bundle.json")
        assert stopped.value.code == 128 + signal.SIGTERM
        assert list(tmp_path.iterdir()) == []  # the spool (patient data) is gone, no output half written
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.fixture
def no_umask() -> Iterator[None]:
    """umask 0: what is private must be so by itself, not because the umask took the bits away."""
    before = os.umask(0)
    try:
        yield
    finally:
        os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_temporary_files_are_private_whatever_the_umask(tmp_path: Path, no_umask: None) -> None:
    directory = scratch_dir(tmp_path, "spool")
    with open_private(directory / "0.part") as part:
        part.write("MRN DT2067885")
    handle, staged = scratch_file(tmp_path, "labs.csv")
    os.close(handle)
    try:
        assert mode(directory) == mode(staged.parent) == 0o700
        assert mode(directory / "0.part") == mode(staged) == mode(directory / LOCK_NAME) == 0o600
        assert staged.parent.name.startswith(PREFIX) and staged.parent.parent == tmp_path
    finally:
        discard(directory)
        discard(staged)
    assert list(tmp_path.iterdir()) == []  # each with its directory and its lock


def test_private_files_are_600_from_the_first_byte(tmp_path: Path, no_umask: None) -> None:
    shared = tmp_path / "quarantine.csv"
    shared.write_text("old rows", encoding="utf-8")
    shared.chmod(0o644)
    with open_private(shared) as out:
        assert mode(shared) == 0o600  # before a byte is written
        out.write("new rows")
    assert shared.read_text(encoding="utf-8") == "new rows"
    create_private(tmp_path / "journal.sqlite")
    assert mode(tmp_path / "journal.sqlite") == 0o600
    mine = tmp_path / "shared.sqlite"
    mine.write_bytes(b"")
    mine.chmod(0o640)
    create_private(mine)  # an existing file keeps the mode its owner gave it
    assert mode(mine) == 0o640
    assert mode(private_dir(tmp_path / "j.sqlite.bulk")) == 0o700


def test_a_leftover_is_judged_by_its_lock_not_its_pid(tmp_path: Path) -> None:
    """A dead run's directory whose pid is in use again (by our parent, or by us: a container starts every run
    with the same pid) is swept; a directory whose lock is held is kept, whatever its pid says."""
    reused = []
    for pid in (os.getppid(), os.getpid()):
        leftover = tmp_path / f"{PREFIX}{pid}-spool-{len(reused)}"
        leftover.mkdir()
        (leftover / LOCK_NAME).touch()  # nobody holds it: its process is gone
        (leftover / "0.part").write_text("MRN DT2067885", encoding="utf-8")
        reused.append(leftover)
    held = tmp_path / f"{PREFIX}{dead_pid()}-spool-held"
    held.mkdir()
    (held / LOCK_NAME).touch()
    with (held / LOCK_NAME).open("rb") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # as its live process holds it
        assert sorted(sweep(tmp_path)) == sorted(reused)
        assert [p.name for p in tmp_path.iterdir()] == [held.name]
    assert sweep(tmp_path) == [held]  # released: its process is gone


def test_a_run_s_own_directories_are_never_swept_and_go_at_exit(tmp_path: Path) -> None:
    mine = scratch_dir(tmp_path, "spool")
    try:
        assert sweep(tmp_path) == [] and mine.exists()
    finally:
        discard(mine)
    assert list(tmp_path.iterdir()) == []
    script = (
        f"from pathlib import Path; from fhir_lupus._scratch import scratch_dir; scratch_dir(Path({str(tmp_path)!r}))"
    )
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", script], check=True, env=environ)  # made, never discarded
    assert list(tmp_path.iterdir()) == []  # removed at its exit


def test_a_published_directory_keeps_no_lock_and_gets_the_usual_modes(tmp_path: Path) -> None:
    staging = scratch_dir(tmp_path, "package")
    with open_private(staging / "Patient.ndjson") as out:
        out.write("{}\n")
    publish(staging, tmp_path / "package")
    assert [p.name for p in tmp_path.iterdir()] == ["package"]
    assert [p.name for p in (tmp_path / "package").iterdir()] == ["Patient.ndjson"]
    assert mode(tmp_path / "package") == DIR_MODE and mode(tmp_path / "package" / "Patient.ndjson") == FILE_MODE


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP])
def test_sigint_and_sighup_are_a_normal_exit_too(tmp_path: Path, signum: int) -> None:
    before = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    # the CLI's start: Python's own SIGINT handler (a test run earlier in this worker may have left another)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    exit_on_termination()
    try:

        def batches() -> Iterator[MappedBatch]:
            yield MappedBatch(None, ())
            os.kill(os.getpid(), signum)
            yield MappedBatch(None, ())

        with pytest.raises(SystemExit) as stopped:
            write_bundle(batches(), tmp_path / "bundle.json")
        assert stopped.value.code == 128 + signum
        assert list(tmp_path.iterdir()) == []
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)


def test_sigint_ignored_by_the_shell_stays_ignored() -> None:
    before = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell starts a background job
    try:
        exit_on_termination()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
