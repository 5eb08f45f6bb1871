"""Look business keys up on the server, in batches: the only I/O the plan needs.

``search`` routes ask with OR-lists (``identifier=a,b,c``, a few dozen keys per request) and map every match
back to the keys it carries; ``read`` routes read the id the journal knows, else our deterministic id. A
parameter the server refuses despite its CapabilityStatement raises RouteRefused, so that the caller can
compute the routes again without it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from fhir_lupus.bundle import business_key
from fhir_lupus.client import FatalHttpError, FhirClient, UnknownSearchParameter
from fhir_lupus.errors import FhirLupusError
from fhir_lupus.mappers._context import Resource
from fhir_lupus.sync.journal import JournalEntry
from fhir_lupus.sync.plan import Match
from fhir_lupus.sync.routes import TypeRoute

__all__ = ["RouteRefused", "keys_of", "look_up"]

Key = tuple[str, str]


class RouteRefused(FhirLupusError):
    """The server refused a search parameter that its CapabilityStatement lists."""

    def __init__(self, resource_type: str, parameter: str, message: str) -> None:
        self.resource_type = resource_type
        self.parameter = parameter
        super().__init__(f"the server refused {resource_type}?{parameter}: {message}")


def keys_of(resource: dict[str, Any], parameter: str) -> list[str]:
    """The business keys a server resource carries for ``parameter`` (identifiers, or a CodeSystem's url)."""
    if parameter == "identifier":
        return [f"{i.get('system')}|{i.get('value')}" for i in resource.get("identifier", []) if isinstance(i, dict)]
    value = resource.get("url")
    return [str(value)] if value else []


def look_up(
    client: FhirClient,
    resources: Iterable[Resource],
    routes: Mapping[str, TypeRoute],
    *,
    known: Mapping[Key, JournalEntry] | None = None,
    size: int = 40,
) -> dict[Key, list[Match]]:
    """Every server resource matching each resource's business key (an empty list: none)."""
    by_type: dict[str, list[Resource]] = defaultdict(list)
    for resource in resources:
        by_type[resource["resourceType"]].append(resource)
    found: dict[Key, list[Match]] = {}
    for resource_type, group in by_type.items():
        route = routes[resource_type]
        if route.lookup == "search" and route.search_param:
            found.update(_search(client, resource_type, route.search_param, group, size))
        elif route.lookup == "read":
            found.update(_read(client, resource_type, group, known or {}))
    return found


def _search(
    client: FhirClient, resource_type: str, parameter: str, group: list[Resource], size: int
) -> dict[Key, list[Match]]:
    keys = list(dict.fromkeys(business_key(r) for r in group))
    found: dict[Key, list[Match]] = {(resource_type, key): [] for key in keys}
    for start in range(0, len(keys), size):
        part = keys[start : start + size]
        params = {parameter: ",".join(k.replace(",", r"\,") for k in part), "_count": str(4 * size)}
        wanted = set(part)
        try:
            for match in client.search(resource_type, params):
                for key in keys_of(match, parameter):
                    seen = found.get((resource_type, key))
                    if key in wanted and seen is not None and all(m.server_id != match.get("id") for m in seen):
                        seen.append(_match(match))
        except UnknownSearchParameter as exc:
            raise RouteRefused(resource_type, parameter, str(exc)) from None
    return found


def _read(
    client: FhirClient, resource_type: str, group: list[Resource], known: Mapping[Key, JournalEntry]
) -> dict[Key, list[Match]]:
    found: dict[Key, list[Match]] = {}
    for resource in group:
        key = business_key(resource)
        entry = known.get((resource_type, key))
        resource_id = entry.server_id if entry and entry.server_id else str(resource["id"])
        try:
            found[(resource_type, key)] = [_match(client.read(resource_type, resource_id))]
        except FatalHttpError as exc:
            if exc.status not in (404, 410):
                raise
            found[(resource_type, key)] = []
    return found


def _match(resource: dict[str, Any]) -> Match:
    return Match(str(resource.get("id")), (resource.get("meta") or {}).get("versionId"), resource)
