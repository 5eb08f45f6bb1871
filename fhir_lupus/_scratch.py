"""Every temporary file or directory the tool writes, and the atomic write of every output it publishes.

Temporary files hold patient data (map's spools, a registry package being staged, pull rows spilled to disk), so
none may stay behind:
- each is named ``.fhir-lupus-tmp-<pid>-...`` in the directory it is made in, and removed by the code that made
  it when it ends, normally or by an exception. SIGTERM (and SIGHUP) is turned into a normal exit by
  ``exit_on_termination`` (the CLI installs it), so those removals run then too;
- a process killed outright (SIGKILL, a power cut) runs nothing: whatever it left is removed by the next run that
  makes a temporary file in the same directory (``sweep``), once no process with that pid is alive.

``write_atomic`` (and ``write_csv`` through it): the content goes to such a file beside the target, which then
replaces it in one rename, so a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import FrameType

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "PREFIX",
    "exit_on_termination",
    "scratch_dir",
    "scratch_file",
    "sweep",
    "write_atomic",
]

PREFIX = ".fhir-lupus-tmp-"


def _umask() -> int:
    mask = os.umask(0o077)  # read once, at import (one thread); os.umask can only be read by setting it
    os.umask(mask)
    return mask


_UMASK = _umask()
FILE_MODE, DIR_MODE = 0o666 & ~_UMASK, 0o777 & ~_UMASK  # what open() and mkdir() would give


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def sweep(directory: Path) -> list[Path]:
    """Remove the temporary files and directories a dead process of this tool left in ``directory``."""
    removed: list[Path] = []
    try:
        entries = list(directory.glob(f"{PREFIX}*"))
    except OSError:
        return removed
    for entry in entries:
        pid_text = entry.name[len(PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _alive(int(pid_text)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _prefix(hint: str) -> str:
    return f"{PREFIX}{os.getpid()}-{hint}-" if hint else f"{PREFIX}{os.getpid()}-"


def scratch_dir(beside: Path, hint: str = "") -> Path:
    """A new private directory in ``beside`` (made if needed), after sweeping what dead runs left there."""
    beside.mkdir(parents=True, exist_ok=True)
    sweep(beside)
    return Path(tempfile.mkdtemp(prefix=_prefix(hint), dir=beside))


def scratch_file(directory: Path | None = None, hint: str = "", suffix: str = "") -> tuple[int, Path]:
    """A new file (mode 600, open descriptor and path) in ``directory`` (default: the system's temporary
    directory), after sweeping what dead runs left there."""
    where = directory if directory is not None else Path(tempfile.gettempdir())
    where.mkdir(parents=True, exist_ok=True)
    sweep(where)
    handle, name = tempfile.mkstemp(prefix=_prefix(hint), suffix=suffix, dir=where)
    return handle, Path(name)


def write_atomic(path: Path, content: str | bytes, *, mode: int | None = None) -> None:
    """Write ``content`` (text is UTF-8) to ``path`` through a temporary file and a rename. The temporary file is
    mode 600 while it is written; before the rename it gets ``mode``, by default what open() would give."""
    handle, staging = scratch_file(path.parent, path.name)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(content.encode("utf-8") if isinstance(content, str) else content)
        os.chmod(staging, FILE_MODE if mode is None else mode)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def write_csv(
    path: Path, rows: Iterable[Sequence[object]], *, lineterminator: str = "\n", mode: int | None = None
) -> None:
    """``rows`` (the header first) as CSV, written with ``write_atomic``."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=lineterminator).writerows(rows)
    write_atomic(path, buffer.getvalue(), mode=mode)


def exit_on_termination() -> None:
    """Turn SIGTERM and SIGHUP into SystemExit (128 + the signal), so that every ``finally`` runs and removes its
    temporary files, as for an error. Called once by the CLI's entry point, in the main thread."""

    def leave(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), leave)
