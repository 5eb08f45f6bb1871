"""One immutable search object for pull: what the server can filter, it filters; the rest is filtered here.

``Search("Observation").where(caps, patient="Patient/1", code="http://loinc.org|2160-0")`` puts each
parameter on the server when its CapabilityStatement lists it, and otherwise keeps it as a client-side filter
(token, reference, date and ``_lastUpdated`` comparisons are understood here), so a server without, say,
``code`` on Observation still gives the right answer, only more slowly. A parameter neither side can apply
raises UnsupportedInteraction naming it. A token parameter may carry the ``:not`` modifier
(``category:not=...``: resources without that token, those without the element included), checked against
the capability of the parameter itself. Each ``where`` returns a new Search; only ``fetch`` does I/O, and it
follows next links lazily, so memory stays flat.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from fhir_lupus.client import Capabilities, FhirClient, UnsupportedInteraction

__all__ = ["LOCAL_PARAMETERS", "MODIFIERS", "PAGE", "Search", "matches", "parse_instant"]

# Asked for as the page size; servers cap it (HAPI as configured here: 500, Medplum: 1000) and next links bring
# the rest. Fewer, larger pages: HAPI answers a page of 500 in about the time of two pages of 200.
PAGE = "1000"

# Modifiers understood on both sides: ``:not`` negates a token match (FHIR R4 search, "token").
MODIFIERS = frozenset({"not"})
# How a parameter is applied client-side: the elements it reads, and the kind of comparison.
LOCAL_PARAMETERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "_lastUpdated": ("instant", ("meta.lastUpdated",)),
    "identifier": ("token", ("identifier",)),
    "code": ("token", ("code.coding",)),
    "category": ("token", ("category.coding",)),
    "date": ("instant", ("effectiveDateTime", "effectivePeriod.start", "effectiveInstant")),
    "patient": ("reference", ("subject", "individual", "patient")),
    "subject": ("reference", ("subject",)),
    "study": ("reference", ("study",)),
}


@dataclass(frozen=True)
class Search:
    resource_type: str
    params: tuple[tuple[str, str], ...] = ()
    local: tuple[tuple[str, str], ...] = ()
    any_of: tuple[tuple[str, str], ...] = ()  # client-side alternatives: a resource passes if one matches
    fallbacks: tuple[str, ...] = ()  # what the server could not do, for the report

    def where(self, capabilities: Capabilities, **params: str) -> Search:
        """Add parameters (``_lastUpdated="ge2026-01-01"``); unsupported ones become client-side filters."""
        server, local, notes = list(self.params), list(self.local), list(self.fallbacks)
        for name, value in params.items():
            base, _, modifier = name.partition(":")
            if modifier and (modifier not in MODIFIERS or LOCAL_PARAMETERS.get(base, ("",))[0] != "token"):
                raise UnsupportedInteraction(f"the server cannot search {self.resource_type} by {name}")
            if capabilities.searches(self.resource_type, base):
                server.append((name, value))
            elif base in LOCAL_PARAMETERS:
                local.append((name, value))
                notes.append(f"{self.resource_type}?{base} is filtered here: the server does not search by it")
            else:
                raise UnsupportedInteraction(f"the server cannot search {self.resource_type} by {name}")
        return replace(self, params=tuple(server), local=tuple(local), fallbacks=tuple(notes))

    def where_any(self, capabilities: Capabilities, **params: str) -> Search:
        """Keep resources matching any one of ``params``, filtered here (FHIR search has no OR across
        parameters). Used when the server cannot apply them all: one search then brings what several would.
        """
        notes = list(self.fallbacks)
        for name in params:
            if name not in LOCAL_PARAMETERS:
                raise UnsupportedInteraction(f"the server cannot search {self.resource_type} by {name}")
            if not capabilities.searches(self.resource_type, name):
                notes.append(f"{self.resource_type}?{name} is filtered here: the server does not search by it")
        return replace(self, any_of=(*self.any_of, *params.items()), fallbacks=tuple(notes))

    def with_params(self, **params: str) -> Search:
        """Parameters sent as they are (paging size and the like), without a capability check."""
        return replace(self, params=(*self.params, *params.items()))

    def query(self) -> dict[str, str]:
        return dict(self.params)

    def fetch(self, client: FhirClient) -> Iterator[dict[str, Any]]:
        for resource in client.search(self.resource_type, self.query()):
            if all(matches(resource, name, value) for name, value in self.local) and (
                not self.any_of or any(matches(resource, name, value) for name, value in self.any_of)
            ):
                yield resource


def matches(resource: dict[str, Any], name: str, value: str) -> bool:
    """Whether ``resource`` satisfies ``name=value`` as a server would (OR over commas; ``:not`` negates)."""
    base, _, modifier = name.partition(":")
    if modifier == "not":
        return not matches(resource, base, value)
    kind, paths = LOCAL_PARAMETERS[name]
    found = [item for path in paths for item in _walk(resource, path.split("."))]
    alternatives = [v.replace("\\,", ",") for v in _split(value)]
    if kind == "token":
        return any(_token(item, wanted) for item in found for wanted in alternatives)
    if kind == "reference":
        return any(isinstance(item, dict) and item.get("reference") in alternatives for item in found)
    return any(_compare(str(item), wanted) for item in found for wanted in alternatives)


def _walk(node: Any, path: list[str]) -> list[Any]:
    if not path:
        return node if isinstance(node, list) else [node]
    if isinstance(node, list):
        return [hit for item in node for hit in _walk(item, path)]
    if isinstance(node, dict) and path[0] in node:
        return _walk(node[path[0]], path[1:])
    return []


def _split(value: str) -> list[str]:
    parts, current, escaped = [], "", False
    for char in value:
        if escaped:
            current += "\\" + char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def _token(item: Any, wanted: str) -> bool:
    if not isinstance(item, dict):
        return False
    system, bar, code = wanted.rpartition("|")
    value = item.get("code", item.get("value"))
    if not bar:
        return value == wanted
    return value == code and (not system or item.get("system") == system)


_PREFIXES = ("ge", "gt", "le", "lt", "eq")


def _compare(found: str, wanted: str) -> bool:
    prefix = wanted[:2] if wanted[:2] in _PREFIXES else "eq"
    bound = parse_instant(wanted[2:] if wanted[:2] in _PREFIXES else wanted)
    here = parse_instant(found)
    if bound is None or here is None:
        return False
    return {
        "ge": here >= bound,
        "gt": here > bound,
        "le": here <= bound,
        "lt": here < bound,
        "eq": here == bound,
    }[prefix]


def parse_instant(text: str) -> datetime | None:
    """A FHIR date, dateTime or instant as an aware datetime (dates at midnight UTC)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00")) if "T" in text else datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
