"""Commands imported only when run: ``fhir-lupus --help`` lists them all, ``fhir-lupus pull`` imports pull's alone.

Every command module imports the library it drives (the mappers, SDTM, the report, Spark, the registry), and
importing them all took about a second before any command began (issue 25: a pull through the CLI waits for
it). So the root group knows each command by its module, its attribute and the sentence its listing shows
(``Entry``); a command is imported and built the first time click asks for it (``LazyCommands``), which a
listing does not do. tests/test_cli_imports.py checks that each listed sentence is the command's own and that
``--help`` and ``pull`` leave the rest unimported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any, NamedTuple

__all__ = ["Entry", "LazyCommands"]


class Entry(NamedTuple):
    """Where a command lives (``fhir_lupus.cli.<module>.<attribute>``: a function, or a ``typer.Typer`` group)
    and the one sentence the root's listing shows for it."""

    module: str
    attribute: str
    summary: str


class LazyCommands(MutableMapping[str, Any]):
    """The root's commands by name, in listing order; each built from its ``Entry`` when first looked up.

    ``build(name, entry, target)`` makes the click command of the imported function or group ``target``.
    """

    def __init__(self, entries: Mapping[str, Entry], build: Callable[[str, Entry, Any], Any]) -> None:
        self._entries = dict(entries)
        self._build = build
        self._built: dict[str, Any] = {}

    def summary(self, name: str) -> str:
        return self._entries[name].summary

    def loaded(self, name: str) -> bool:
        return name in self._built

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            entry = self._entries[name]  # KeyError: no such command, as a dict says it
            target = getattr(importlib.import_module(f"fhir_lupus.cli.{entry.module}"), entry.attribute)
            self._built[name] = self._build(name, entry, target)
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._entries.setdefault(name, Entry("", "", ""))
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._entries[name]
        self._built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
