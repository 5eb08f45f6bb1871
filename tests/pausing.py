"""The ``fhir-lupus`` command in a child process that pauses mid-run, so that a test can signal it there.

    python tests/pausing.py MODULE:QUALNAME CALLS MARKER CHUNK_ROWS ARGS...

runs ``fhir-lupus ARGS...`` (its real entry point, ``fhir_lupus.cli.main``) with MODULE.QUALNAME wrapped: when its
CALLS-th call returns, the run writes MARKER and sleeps until a signal ends it, its temporary files on disk, or
until the test removes MARKER (``watch`` stops at its next chance on SIGTERM: the pause must end first).
CHUNK_ROWS (rows a chunk of subjects holds at most) makes a small trial several chunks, which a checked source
keeps on disk. tests/test_no_data_left.py uses it: waiting for a marker instead of sleeping keeps it exact.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path
from typing import Any


def pause_after(target: str, calls: int, marker: Path) -> None:
    module_name, qualname = target.split(":")
    owner: Any = importlib.import_module(module_name)
    *outer, name = qualname.split(".")
    for part in outer:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    seen = 0

    def paused(*args: Any, **kwargs: Any) -> Any:
        nonlocal seen
        result = original(*args, **kwargs)
        seen += 1
        if seen == calls:
            marker.write_text("paused", encoding="utf-8")
            while marker.exists():  # removed by the test: the run goes on (a command that stops when it can)
                time.sleep(0.05)  # a signal's handler raises here
        return result

    setattr(owner, name, paused)


def main(argv: list[str]) -> None:
    target, calls, marker, chunk_rows, *args = argv
    importlib.import_module("fhir_lupus.model._loader").CHUNK_ROWS = int(chunk_rows)
    pause_after(target, int(calls), Path(marker))
    from fhir_lupus.cli import main as fhir_lupus

    sys.argv = ["fhir-lupus", *args]
    fhir_lupus()


if __name__ == "__main__":
    main(sys.argv[1:])
