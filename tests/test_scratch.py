"""No patient data stays behind in temporary files (fhir_lupus/_scratch.py): removed at the end, on an error, on
SIGTERM (a normal exit), and after a kill by the next run that writes in the same directory."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhir_lupus._scratch import FILE_MODE, PREFIX, exit_on_termination, scratch_dir, sweep, write_atomic
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
