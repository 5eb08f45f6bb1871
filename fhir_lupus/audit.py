"""The audit trail: a hash-chained JSON Lines log of every push, pull, registry submission and watch Subscription.

(Over 400 lines: the entry format, its append and its verify are one contract, read and changed together.)

One entry per line, written with a single ``write()`` of the whole line (newline included) to a file opened
with ``O_APPEND``, then flushed and fsync'ed, under an exclusive lock so two processes cannot fork the chain.
A killed process can therefore leave at most a partial *last* line. Each entry holds::

    seq, prev, ts, actor, kind, server, outcome, counts, content_hash, details, tool_version, mapping_version,
    torn (only after a torn line), hash

``hash`` is the SHA-256 of the entry's canonical JSON (sorted keys, no spaces, UTF-8) without ``hash``;
``prev`` is the previous entry's ``hash`` (64 zeros for the first entry); ``seq`` counts from 1.

``verify`` reads the whole log and tells apart:

* **edited** -- an entry whose stored hash is not the hash of its content, or a line that is not an entry;
* **reordered** -- ``seq`` not increasing;
* **removed** -- a gap in ``seq``, a log not starting at 1, or (with an anchor: the journal's recorded head,
  or ``expect_head``) a head the log no longer contains;
* **replaced** -- a ``prev`` that is not the previous entry's hash (an entry re-hashed after an edit);
* **torn** -- a final line without newline that is not a complete entry: a killed append, not tampering.

The next append after a torn line terminates the fragment with a newline and records the fragment's SHA-256
and length in its ``torn`` field, so the fragment becomes an acknowledged, hash-protected part of the chain:
``verify`` then reports it as a note, and editing or removing it is tampering like any other change.

A chain without a secret proves order and integrity only against an edit that does not rewrite every later
entry; the head (``verify`` prints it, the journal keeps it) is the anchor to record elsewhere.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

try:  # POSIX; elsewhere appends are not locked against a concurrent process
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

from fhir_lupus._digest import EMPTY_DIGEST, DigestBuilder, digest_of
from fhir_lupus._version import __version__

if TYPE_CHECKING:
    from fhir_lupus.journal import Journal

__all__ = [
    "DEFAULT_AUDIT_PATH",
    "EMPTY_DIGEST",
    "GENESIS",
    "KINDS",
    "AuditEntry",
    "AuditLog",
    "DigestBuilder",
    "Problem",
    "VerifyReport",
    "append_event",
    "append_run",
    "default_audit_path",
    "digest_of",
    "entry_hash",
    "read_entries",
    "redact_server",
    "verify",
]

GENESIS = "0" * 64
KINDS = frozenset({"push", "pull", "registry-submit", "signals-publish", "subscription"})
ACTOR_ENV = "FHIR_LUPUS_ACTOR"
AUDIT_SUFFIX = ".audit.jsonl"
# next to the CLI's default journal (fhir_lupus/cli/_common.py DEFAULT_JOURNAL, fhir-lupus-journal.sqlite)
DEFAULT_AUDIT_PATH = Path("fhir-lupus-journal" + AUDIT_SUFFIX)
_TAIL_BLOCK = 65536

AuditEntry = dict[str, Any]


def default_audit_path(journal_path: Path) -> Path:
    """The audit log that goes with a journal: ``journal.sqlite`` -> ``journal.audit.jsonl``."""
    return journal_path.with_suffix(AUDIT_SUFFIX)


def redact_server(url: str) -> str:
    """The server URL without credentials, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _canonical(entry: Mapping[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 of the entry's canonical JSON without its ``hash`` field."""
    return hashlib.sha256(_canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def _actor() -> str:
    configured = os.environ.get(ACTOR_ENV, "").strip()
    if configured:
        return configured
    try:
        user = getpass.getuser()
    except Exception:  # no login name (containers without a passwd entry)
        user = f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def _tool_version() -> str:
    return __version__


def _parse(line: bytes) -> AuditEntry | None:
    """The entry on this line (with a hash field), or None when the line is not one."""
    try:
        entry = json.loads(line.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("hash"), str) or not isinstance(entry.get("seq"), int):
        return None
    return entry


def _tail(handle: Any) -> tuple[AuditEntry | None, bytes]:
    """The last complete entry and the unterminated fragment after it (b"" when the file ends in a newline).

    Reads backwards from the end, block by block, only as far as the last parseable line.
    """
    size = handle.seek(0, os.SEEK_END)
    data = b""
    position = size
    while position > 0:
        step = min(_TAIL_BLOCK, position)
        position -= step
        handle.seek(position)
        data = handle.read(step) + data
        lines = data.split(b"\n")
        fragment = lines[-1]
        candidates = lines[:-1] if position == 0 else lines[1:-1]  # the first piece may be cut off mid-line
        if fragment:
            whole = _parse(fragment)
            if whole is not None and entry_hash(whole) == whole["hash"]:
                return whole, b""  # complete entry, only its newline missing: chain to it
        for line in reversed(candidates):
            entry = _parse(line)
            if entry is not None:
                return entry, fragment
        if position == 0:
            return None, fragment
    return None, b""


def append_event(
    log_path: Path | None,
    kind: str,
    *,
    server: str,
    counts: Mapping[str, int],
    content_hash: str,
    details: Mapping[str, str] | None = None,
    outcome: str = "ok",
    mapping_version: str | None = None,
    actor: str | None = None,
) -> AuditEntry:
    """Append one entry (``kind``: one of KINDS) to the log; None means DEFAULT_AUDIT_PATH.

    ``server`` is stored without credentials or query; ``content_hash`` is the SHA-256 the caller computed
    over what was sent or received; ``details`` holds further short strings (never personal data).
    The actor is ``actor``, else $FHIR_LUPUS_ACTOR, else the OS user @ host. Returns the entry written.
    """
    if kind not in KINDS:
        raise ValueError(f"audit kind must be one of {sorted(KINDS)}, not {kind!r}")
    path = DEFAULT_AUDIT_PATH if log_path is None else log_path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+b", buffering=0) as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # released when the file is closed
        last, fragment = _tail(handle)
        entry: AuditEntry = {
            "seq": (last["seq"] + 1) if last else 1,
            "prev": last["hash"] if last else GENESIS,
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "actor": actor or _actor(),
            "kind": kind,
            "server": redact_server(server),
            "outcome": outcome,
            "counts": {str(k): int(v) for k, v in sorted(counts.items())},
            "content_hash": content_hash,
            "details": {str(k): str(v) for k, v in sorted((details or {}).items())},
            "tool_version": _tool_version(),
            "mapping_version": mapping_version,
        }
        if fragment:
            entry["torn"] = {"bytes": len(fragment), "sha256": hashlib.sha256(fragment).hexdigest()}
        entry["hash"] = entry_hash(entry)
        size = handle.seek(0, os.SEEK_END)
        ends_open = size > 0 and not fragment and _last_byte(handle, size) != b"\n"
        prefix = b"\n" if fragment or ends_open else b""
        handle.write(prefix + _canonical(entry) + b"\n")  # one write: a kill leaves at most a partial line
        os.fsync(handle.fileno())
    return entry


def _last_byte(handle: Any, size: int) -> bytes:
    handle.seek(size - 1)
    return bytes(handle.read(1))


# -- verification -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    line: int
    kind: str  # edited, removed, reordered, replaced; torn; note
    why: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.kind}: {self.why}"


@dataclass
class VerifyReport:
    path: Path
    entries: int = 0
    problems: list[Problem] = field(default_factory=list)  # tampering
    torn: Problem | None = None  # a final line cut off by a killed append
    notes: list[Problem] = field(default_factory=list)  # acknowledged torn fragments, a missing final newline
    head_seq: int = 0
    head_hash: str = GENESIS

    @property
    def status(self) -> str:
        """``tampered``, ``torn`` (only a torn last line) or ``ok``."""
        return "tampered" if self.problems else "torn" if self.torn else "ok"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def summary(self) -> str:
        if self.problems:
            first = self.problems[0]
            return f"{self.path}: TAMPERED at line {first.line}: {first.kind}: {first.why}"
        head = f"{self.entries} entries, head seq {self.head_seq} {self.head_hash}"
        if self.torn:
            return f"{self.path}: torn last line ({self.torn}); {head}"
        return f"{self.path}: ok, {head}"


def read_entries(log_path: Path) -> list[AuditEntry]:
    """The parseable entries of the log, in file order (``audit show``; ``verify`` judges them)."""
    entries = []
    for line in log_path.read_bytes().split(b"\n"):
        entry = _parse(line) if line else None
        if entry is not None:
            entries.append(entry)
    return entries


def verify(log_path: Path, *, expect_head: str | None = None, anchor: tuple[int, str] | None = None) -> VerifyReport:
    """Check the chain of ``log_path``; FileNotFoundError when it does not exist.

    ``expect_head`` (a hash) and ``anchor`` (seq, hash: the journal's record of the last append) must be
    entries of the log; when absent, entries after them were removed.
    """
    report = VerifyReport(log_path)
    lines = log_path.read_bytes().split(b"\n")
    final = lines.pop()  # b"" when the file ends with a newline, else the unterminated last line
    parsed: list[tuple[int, AuditEntry]] = []
    pending_fragment: tuple[int, bytes] | None = None  # an unparseable line: torn if the next entry says so
    for number, line in enumerate(lines, start=1):
        entry = _parse(line) if line else None
        if entry is None:
            if pending_fragment is not None:
                report.problems.append(Problem(pending_fragment[0], "edited", "not an audit entry"))
            pending_fragment = (number, line)
            continue
        _check_torn(report, number, entry, pending_fragment)
        pending_fragment = None
        parsed.append((number, entry))
    if final:
        entry = _parse(final)
        if entry is not None and entry_hash(entry) == entry["hash"]:
            _check_torn(report, len(lines) + 1, entry, pending_fragment)
            pending_fragment = None
            parsed.append((len(lines) + 1, entry))
            report.notes.append(Problem(len(lines) + 1, "note", "final newline missing (complete entry)"))
        else:
            report.torn = Problem(len(lines) + 1, "torn", f"incomplete last line of {len(final)} bytes")
    if pending_fragment is not None:
        report.problems.append(Problem(pending_fragment[0], "edited", "not an audit entry"))
    _check_chain(report, parsed)
    if parsed:
        report.head_seq, report.head_hash = parsed[-1][1]["seq"], parsed[-1][1]["hash"]
    report.entries = len(parsed)
    hashes = {entry["hash"]: entry["seq"] for _, entry in parsed}
    last_line = parsed[-1][0] if parsed else 1
    if anchor is not None and hashes.get(anchor[1]) != anchor[0]:
        report.problems.append(
            Problem(last_line, "removed", f"the journal records entry seq {anchor[0]} {anchor[1]}, not in the log")
        )
    if expect_head is not None and expect_head not in hashes:
        report.problems.append(Problem(last_line, "removed", f"expected head {expect_head} is not in the log"))
    report.problems.sort(key=lambda p: p.line)
    return report


def _check_torn(report: VerifyReport, number: int, entry: AuditEntry, fragment: tuple[int, bytes] | None) -> None:
    declared = entry.get("torn")
    if fragment is None:
        if declared:
            report.problems.append(
                Problem(number, "removed", f"entry seq {entry['seq']} follows a torn line that is missing")
            )
        return
    line, data = fragment
    if (
        isinstance(declared, dict)
        and declared.get("sha256") == hashlib.sha256(data).hexdigest()
        and declared.get("bytes") == len(data)
    ):
        report.notes.append(Problem(line, "note", f"torn fragment acknowledged by entry seq {entry['seq']}"))
    else:
        report.problems.append(Problem(line, "edited", "not an audit entry"))


def _check_chain(report: VerifyReport, parsed: list[tuple[int, AuditEntry]]) -> None:
    """Edited (own hash), reordered (seq not increasing, or a gap whose seqs come later), removed (the rest)."""
    present = {entry["seq"] for _, entry in parsed}
    previous: AuditEntry | None = None
    for number, entry in parsed:
        if entry_hash(entry) != entry["hash"]:
            report.problems.append(Problem(number, "edited", f"entry seq {entry['seq']}: hash mismatch"))
        if previous is None:
            if entry["seq"] != 1 and 1 in present:
                report.problems.append(Problem(number, "reordered", f"seq {entry['seq']} comes before seq 1"))
            elif entry["seq"] != 1 or entry.get("prev") != GENESIS:
                report.problems.append(
                    Problem(number, "removed", f"the log starts at seq {entry['seq']}, not at the first entry")
                )
        elif entry["seq"] <= previous["seq"]:
            how = "repeated" if entry["seq"] == previous["seq"] else f"after seq {previous['seq']}"
            report.problems.append(Problem(number, "reordered", f"seq {entry['seq']} {how} (not increasing)"))
        elif entry["seq"] > previous["seq"] + 1 and all(
            seq in present for seq in range(previous["seq"] + 1, entry["seq"])
        ):
            report.problems.append(
                Problem(number, "reordered", f"seq {entry['seq']} comes before seq {previous['seq'] + 1}")
            )
        elif entry["seq"] > previous["seq"] + 1:
            missing = entry["seq"] - previous["seq"] - 1
            report.problems.append(
                Problem(
                    number,
                    "removed",
                    f"{missing} entr{'y' if missing == 1 else 'ies'} missing before seq {entry['seq']}",
                )
            )
        elif entry.get("prev") != previous["hash"]:
            report.problems.append(
                Problem(
                    number,
                    "replaced",
                    f"seq {entry['seq']}: prev is not the hash of seq {previous['seq']} "
                    "(that entry was re-hashed after an edit, or replaced)",
                )
            )
        previous = entry


# where a push or a pull appends their audit entry: None = next to the journal
# (fhir_lupus.audit.default_audit_path), a path = there, False = nowhere (tests that need no trail)
AuditLog = Path | None | Literal[False]


def append_run(
    audit_log: AuditLog,
    journal: Journal,
    kind: str,
    *,
    server: str,
    counts: Mapping[str, int],
    digest: str,
    outcome: str,
    details: Mapping[str, str],
    mapping_version: str,
) -> None:
    """Append one run's entry (push, pull, registry) and record the new head in the journal; ``mapping_version``:
    the mapping pack's (mappings/project.yaml) the run used."""
    if audit_log is False:
        return
    path = default_audit_path(journal.path) if audit_log is None else audit_log
    entry = append_event(
        path,
        kind,
        server=server,
        counts=counts,
        content_hash=digest,
        details=details,
        outcome=outcome,
        mapping_version=mapping_version,
    )
    journal.set_audit_head(path, entry["seq"], entry["hash"])
