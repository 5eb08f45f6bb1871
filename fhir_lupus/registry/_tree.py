"""Walks over a FHIR resource as plain JSON (dicts, lists, strings), the moves de-identification is made of:
every reference and string in it, an element path removed, every Identifier replaced, every date moved, and what
removal left empty pruned (ele-1, ext-1). No rule is decided here: ``_deidentify`` says what to remove and how.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import date, timedelta
from typing import Any

__all__ = [
    "FHIR_DATE",
    "drop_path",
    "prune",
    "references_in",
    "shift_date",
    "shift_dates",
    "strings_in",
    "walk_identifiers",
]

# A FHIR date (full precision), dateTime or instant: the lexical forms whose calendar date is moved.
FHIR_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})((?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:\d{2})?)$")


def shift_date(value: str, days: int) -> str | None:
    """``value`` moved by ``days`` when it is a full FHIR date/dateTime/instant (time and offset kept), else None."""
    match = FHIR_DATE.match(value)
    if match is None:
        return None
    year, month, day, rest = match.groups()
    try:
        moved = date(int(year), int(month), int(day)) + timedelta(days=days)
    except ValueError:
        return None
    return moved.isoformat() + rest


def references_in(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        for name, value in node.items():
            if name == "reference" and isinstance(value, str):
                yield value
            else:
                yield from references_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from references_in(value)


def strings_in(node: Any) -> Iterable[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings_in(value)


def drop_path(node: Any, parts: list[str]) -> None:
    if isinstance(node, list):
        for item in node:
            drop_path(item, parts)
    elif isinstance(node, dict):
        if len(parts) == 1:
            node.pop(parts[0], None)
        elif parts[0] in node:
            drop_path(node[parts[0]], parts[1:])


def walk_identifiers(node: Any, replace: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
    """Every Identifier (``identifier``, list or single, and ``valueIdentifier``) through ``replace``."""
    if isinstance(node, list):
        for item in node:
            walk_identifiers(item, replace)
        return
    if not isinstance(node, dict):
        return
    for name in list(node):
        value = node[name]
        if name in ("identifier", "valueIdentifier"):
            if isinstance(value, dict):
                new = replace(value)
                if new is None:
                    del node[name]
                else:
                    node[name] = new
            elif isinstance(value, list):
                node[name] = [n for n in (replace(i) for i in value if isinstance(i, dict)) if n is not None]
        else:
            walk_identifiers(value, replace)


def shift_dates(node: Any, days: int) -> None:
    if isinstance(node, list):
        for index, value in enumerate(node):
            if isinstance(value, str):
                moved = shift_date(value, days)
                if moved is not None:
                    node[index] = moved
            else:
                shift_dates(value, days)
    elif isinstance(node, dict):
        for name, value in node.items():
            if isinstance(value, str):
                if name != "birthDate":
                    moved = shift_date(value, days)
                    if moved is not None:
                        node[name] = moved
            else:
                shift_dates(value, days)


def prune(node: Any) -> Any:
    """Remove what removal left empty (ele-1), and extensions left with a url only (ext-1)."""
    if isinstance(node, dict):
        pruned = {k: prune(v) for k, v in node.items()}
        pruned = {k: v for k, v in pruned.items() if v not in (None, "", {}, [])}
        return pruned
    if isinstance(node, list):
        items = [prune(v) for v in node]
        return [v for v in items if v not in (None, "", {}, []) and not _bare_extension(v)]
    return node


def _bare_extension(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"url"}
