"""Which files a command needs (mappings/checks/inputs.yaml), checked before anything is loaded.

A needed file must exist and hold at least one row: otherwise the command stops (InputError, exit 2) naming the
file and what it is for, before a wrong value can be computed from its absence (an empty labs.csv once made a
baseline SLEDAI-2K of 18 come out as 2, final). An optional file that is absent or empty is the loader's
business: it counts as absent, with a note, and what depends on it is unknown.
"""

from __future__ import annotations

from pathlib import Path

from fhir_lupus.errors import InputError
from fhir_lupus.model._check_rules import load_input_rules
from fhir_lupus.model._csv import has_rows
from fhir_lupus.terminology import MappingPack

__all__ = ["needed_files", "require_inputs"]

SUBJECTS = "subjects.csv"


def needed_files(data_dir: Path, command: str, pack: MappingPack | None = None) -> tuple[str, ...]:
    """The files ``command`` needs; for ``validate``, those of the stage the directory is at (``enrolled`` once
    subjects.csv has rows, else ``screening``)."""
    rules = load_input_rules(pack)
    if command == "validate":
        path = data_dir / SUBJECTS
        enrolled = path.is_file() and has_rows(path)
        return rules.stages["enrolled" if enrolled else "screening"]
    try:
        return rules.commands[command]
    except KeyError:
        raise ValueError(f"mappings/checks/inputs.yaml lists no command {command!r}") from None


def require_inputs(data_dir: Path, command: str, pack: MappingPack | None = None) -> None:
    """Raise InputError naming every file ``command`` needs that is missing or holds no row."""
    if not data_dir.is_dir():
        raise InputError(str(data_dir), 0, None, "not a directory")
    rules = load_input_rules(pack)
    problems: list[tuple[str, str]] = []
    for name in needed_files(data_dir, command, pack):
        path = data_dir / name
        if not path.is_file():
            problems.append((name, "is missing"))
        elif not has_rows(path):
            problems.append((name, "has no rows"))
    if problems:
        first, *others = problems
        said = [f"{first[1]}: `{command}` needs it ({rules.files[first[0]]})"]
        said += [f"{name} {what} ({rules.files[name]})" for name, what in others]
        raise InputError(str(data_dir / first[0]), 0, None, "; ".join(said))
