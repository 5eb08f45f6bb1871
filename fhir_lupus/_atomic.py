"""Atomic file writes for every output a command publishes (a CSV, the report page, a figure).

The content goes to a hidden temporary file beside the target, which then replaces it in one rename: a reader
sees the old file or the new one, never half of one, and a failed or interrupted write leaves the old file as
it was and no temporary file behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: Path, content: str | bytes, *, mode: int | None = None) -> None:
    """Write ``content`` (text is UTF-8) to ``path`` through a temporary file and a rename; ``mode`` sets the
    permission bits before the rename (600 for a file only its owner may read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(content.encode("utf-8") if isinstance(content, str) else content)
        if mode is not None:
            os.chmod(staging, mode)
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
