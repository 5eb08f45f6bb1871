"""Every temporary file or directory the tool writes, every private file, and the atomic write of every output.

Temporary files hold patient data (map's spools, a registry package being staged, pull rows spilled to disk, a
checked trial's chunks), so none may stay behind and nobody else may read them:
- each lives in a private directory (mode 700, files in it mode 600, whatever the umask) named
  ``.fhir-lupus-tmp-<pid>-...``, made beside the output it becomes (the final rename stays on one file system)
  or in the system's temporary directory when nothing is renamed out of it;
- the code that made it removes it (``discard``) when it ends, normally or by an exception; SIGTERM, SIGHUP and
  SIGINT are turned into a normal exit by ``exit_on_termination`` (the CLI installs it), so those removals run
  then too, and whatever is still held at exit is removed then;
- a process killed outright (SIGKILL, a power cut) runs nothing: what it left is removed by the next run that
  makes a temporary file in the same directory (``sweep``; the CLI also sweeps the temporary directory when it
  starts). Each directory holds a lock file that its process keeps locked (``flock``) while it lives, and a
  sweep removes only a directory whose lock it can take: a live run's is kept, and a dead run's is removed even
  when its pid now belongs to another process. A directory without a lock (made by an older version) is judged
  by its pid.

Files that hold patient data or secrets and are not temporary (the journal and its SQLite side files, the audit
log, the quarantine, the registry link table) are created mode 600 from their first byte (``create_private``,
``open_private``, ``write_atomic(mode=0o600)``). Outputs the user names (a bundle, a report, a package) get the
mode the umask gives, as any file a user's program writes.

``write_atomic`` (and ``write_csv`` through it): the content goes to a temporary file beside the target, which
then replaces it in one rename (``publish``), so a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import atexit
import csv
import io
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locks, leftovers are judged by their pid
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "LOCK_NAME",
    "PREFIX",
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "create_private",
    "discard",
    "exit_on_termination",
    "open_private",
    "private_dir",
    "publish",
    "scratch_dir",
    "scratch_file",
    "sweep",
    "write_atomic",
    "write_csv",
]

PREFIX = ".fhir-lupus-tmp-"
LOCK_NAME = ".lock"  # in each temporary directory, locked by its process while it lives
PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700


def _umask() -> int:
    mask = os.umask(0o077)  # read once, at import (one thread); os.umask can only be read by setting it
    os.umask(mask)
    return mask


_UMASK = _umask()
FILE_MODE, DIR_MODE = 0o666 & ~_UMASK, 0o777 & ~_UMASK  # what open() and mkdir() would give

_guard = threading.Lock()
_held: dict[Path, tuple[int | None, tuple[int, int]]] = {}  # our directory -> its lock's descriptor, (dev, inode)
_files: dict[Path, Path] = {}  # a file made by scratch_file -> the directory it is in


# -- private files ------------------------------------------------------------------------------------------


def _private_descriptor(path: Path, flags: int) -> int:
    """``os.open`` with mode 600, then exactly 600 (the umask could only take bits away; an existing file
    truncated or appended to is made private before a byte is written)."""
    fd = os.open(path, flags, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_private(path: Path, mode: str = "w", *, encoding: str | None = None, newline: str | None = None) -> IO[Any]:
    """``path`` opened for writing (``mode``: w, wb, a or ab), mode 600 before its first byte."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    return os.fdopen(_private_descriptor(path, flags), mode, encoding=encoding, newline=newline)


def create_private(path: Path) -> None:
    """Create ``path`` empty and mode 600 unless it exists (an existing file keeps the mode its owner gave it).

    For SQLite files: SQLite gives the side files it makes (-wal, -shm, -journal) the database file's mode.
    """
    try:
        fd = _private_descriptor(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return
    os.close(fd)


def private_dir(path: Path) -> Path:
    """``path`` made (its parents as mkdir makes them) mode 700 if it is new; an existing one is left as it is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(PRIVATE_DIR)
    except FileExistsError:
        return path
    os.chmod(path, PRIVATE_DIR)
    return path


# -- temporary files ----------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _lock_free(lock: Path) -> bool | None:
    """Whether nobody holds ``lock`` (its process is gone); None when there is no lock to ask."""
    if fcntl is None:
        return None
    try:
        fd = os.open(lock, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError:  # another user's, or unreadable: not ours to judge
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)  # releases the lock taken just now
    return True


def _left_behind(entry: Path) -> bool:
    try:
        identity = entry.lstat()
    except OSError:
        return False
    with _guard:
        if (identity.st_dev, identity.st_ino) in {ident for _fd, ident in _held.values()}:
            return False  # ours (asked by identity: a network file system may let a process take its own lock)
    if entry.is_dir() and not entry.is_symlink():
        free = _lock_free(entry / LOCK_NAME)
        if free is not None:
            return free
    pid_text = entry.name[len(PREFIX) :].split("-", 1)[0]
    return pid_text.isdigit() and int(pid_text) != os.getpid() and not _alive(int(pid_text))


def sweep(directory: Path) -> list[Path]:
    """Remove the temporary files and directories a dead process of this tool left in ``directory``."""
    removed: list[Path] = []
    try:
        entries = sorted(directory.glob(f"{PREFIX}*"))
    except OSError:
        return removed
    for entry in entries:
        if _left_behind(entry):
            _remove(entry)
            removed.append(entry)
    return removed


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def _prefix(hint: str) -> str:
    return f"{PREFIX}{os.getpid()}-{hint}-" if hint else f"{PREFIX}{os.getpid()}-"


def _hold(directory: Path) -> None:
    """Lock ``directory`` for this process's lifetime. The lock file is locked under another name and then
    renamed, so a sweep never finds it unlocked while we live."""
    fd: int | None = None
    if fcntl is not None:
        pending = directory / (LOCK_NAME + ".new")
        fd = _private_descriptor(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(pending, directory / LOCK_NAME)
    identity = directory.stat()
    with _guard:
        _held[directory] = (fd, (identity.st_dev, identity.st_ino))


def scratch_dir(beside: Path, hint: str = "") -> Path:
    """A new private directory in ``beside`` (made if needed), after sweeping what dead runs left there.
    Remove it with ``discard`` (or ``publish`` it)."""
    beside.mkdir(parents=True, exist_ok=True)
    sweep(beside)
    directory = Path(tempfile.mkdtemp(prefix=_prefix(hint), dir=beside))
    os.chmod(directory, PRIVATE_DIR)  # mkdtemp asks for 700; the umask could only take bits away
    _hold(directory)
    return directory


def scratch_file(directory: Path | None = None, hint: str = "", suffix: str = "") -> tuple[int, Path]:
    """A new file (mode 600; an open descriptor and its path), alone in a new private directory in ``directory``
    (default: the system's temporary directory). Remove it with ``discard`` (or ``publish`` it)."""
    where = directory if directory is not None else Path(tempfile.gettempdir())
    home = scratch_dir(where, hint)
    path = home / f"{hint or 'scratch'}{suffix}"
    handle = _private_descriptor(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
    with _guard:
        _files[path] = home
    return handle, path


def discard(path: Path) -> None:
    """Remove ``path`` (made by ``scratch_dir`` or ``scratch_file``, or any file in such a directory) with its
    directory, and release the directory's lock; nothing when it is gone already."""
    with _guard:
        home = _files.pop(path, path)
        held = _held.pop(home, None)
        for other in [file for file, directory in _files.items() if directory == home]:
            del _files[other]
    _remove(home)  # before the lock is released: a sweep never sees it unlocked
    if held is not None and held[0] is not None:
        os.close(held[0])


def publish(scratch: Path, target: Path, *, mode: int | None = None) -> None:
    """Put a finished temporary file (or directory) in place of ``target`` in one rename, then ``discard`` what
    is left. The file gets ``mode`` (default: what open() would give); a directory loses its lock and gets the
    modes mkdir and open() would give, its files included (it is an output now)."""
    if scratch.is_dir():
        (scratch / LOCK_NAME).unlink(missing_ok=True)
        for root, directories, files in os.walk(scratch):
            for name in directories:
                os.chmod(os.path.join(root, name), DIR_MODE)
            for name in files:
                os.chmod(os.path.join(root, name), FILE_MODE if mode is None else mode)
        os.chmod(scratch, DIR_MODE)
    else:
        os.chmod(scratch, FILE_MODE if mode is None else mode)
    os.replace(scratch, target)
    discard(scratch)


def write_atomic(path: Path, content: str | bytes, *, mode: int | None = None) -> None:
    """Write ``content`` (text is UTF-8) to ``path`` through a temporary file and a rename. The temporary file is
    mode 600 while it is written; before the rename it gets ``mode``, by default what open() would give."""
    handle, staging = scratch_file(path.parent, path.name)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(content.encode("utf-8") if isinstance(content, str) else content)
        publish(staging, path, mode=mode)
    finally:
        discard(staging)


def write_csv(
    path: Path, rows: Iterable[Sequence[object]], *, lineterminator: str = "\n", mode: int | None = None
) -> None:
    """``rows`` (the header first) as CSV, written with ``write_atomic``."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=lineterminator).writerows(rows)
    write_atomic(path, buffer.getvalue(), mode=mode)


def _discard_all() -> None:
    """At exit: whatever a caller did not remove (a run stopped between making and removing) goes now."""
    with _guard:
        held = list(_held)
    for directory in held:
        discard(directory)


def _forget() -> None:
    """In a forked child: the parent's directories are the parent's to remove (and to keep locked)."""
    global _guard
    _guard = threading.Lock()  # another thread of the parent may have held it at the fork
    for fd, _identity in _held.values():
        if fd is not None:
            os.close(fd)
    _held.clear()
    _files.clear()


atexit.register(_discard_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)


def exit_on_termination() -> None:
    """Turn SIGTERM, SIGHUP and SIGINT into SystemExit (128 + the signal), so that every ``finally`` runs and
    removes its temporary files, as for an error. SIGINT only where Python's own handler is installed (it is
    not when the shell started the process with SIGINT ignored, as in the background). Called once by the
    CLI's entry point, in the main thread."""

    def leave(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), leave)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, leave)
