"""Look business keys up on the server, in batches: the only I/O the plan needs.

``search`` routes ask with OR-lists (``identifier=a,b,c``, a few dozen keys per request) and map every match
back to the keys it carries; a key nothing carries is asked again by the resource's identifiers under a
superseded system (the route's ``superseded_use``), and what they find is matched to the key; ``read``
routes read the id the journal knows, else our deterministic id. A parameter the server refuses despite its
CapabilityStatement raises RouteRefused, so that the caller can compute the routes again without it.
``unclaimed`` asks once whether a type holds any identifier of a system at all (``system|``, ``_summary=count``):
on a first push it holds none, and the look-ups of every key of that system would all come back empty.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from fhir_lupus._resource import Resource
from fhir_lupus.bundle import business_key, identifiers, superseded_keys
from fhir_lupus.client import FatalHttpError, FhirClient, InvalidResponse, UnknownSearchParameter, classify
from fhir_lupus.errors import RouteRefused
from fhir_lupus.journal import JournalEntry
from fhir_lupus.push._plan import Match
from fhir_lupus.push._routes import TypeRoute

__all__ = ["RouteRefused", "keys_of", "look_up", "old_keys", "unclaimed"]

Key = tuple[str, str]


def keys_of(resource: dict[str, Any], parameter: str) -> list[str]:
    """The business keys a server resource carries for ``parameter`` (identifiers, or a CodeSystem's url)."""
    if parameter == "identifier":
        return [f"{i.get('system')}|{i.get('value')}" for i in identifiers(resource)]
    value = resource.get("url")
    return [str(value)] if value else []


def look_up(
    client: FhirClient,
    resources: Iterable[Resource],
    routes: Mapping[str, TypeRoute],
    *,
    known: Mapping[Key, JournalEntry] | None = None,
    size: int = 40,
    old_systems: Callable[[str], tuple[str, ...]] = lambda _: (),
) -> dict[Key, list[Match]]:
    """Every server resource matching each resource's business key (an empty list: none). A key not found is
    looked up again under the systems it replaced: its identifiers of the route's ``superseded_use``, and its
    system (a CodeSystem: its url) under each system ``old_systems`` names (the superseded values of
    mappings/project.yaml and of the site profile, ``MappingPack.old_systems``)."""
    by_type: dict[str, list[Resource]] = defaultdict(list)
    for resource in resources:
        by_type[resource["resourceType"]].append(resource)
    found: dict[Key, list[Match]] = {}
    for resource_type, group in by_type.items():
        route = routes[resource_type]
        if route.lookup == "search" and route.search_param:
            found.update(_search(client, resource_type, route.search_param, group, size))
            found.update(_search_superseded(client, resource_type, route, group, found, size, old_systems))
        elif route.lookup == "read":
            found.update(_read(client, resource_type, group, known or {}))
    return found


def unclaimed(client: FhirClient, resource_type: str, system: str) -> bool:
    """True when the server holds no ``resource_type`` with an identifier of ``system``: one count-only search
    (``identifier=system|``, the FHIR token search for any value of a system) instead of a look-up per few dozen
    keys. False whenever the answer is not a plain count of 0: a system the query cannot carry unescaped, a
    parameter or ``_summary`` the server refuses (4xx), an answer without ``total``. A server that cannot be
    reached raises, as a look-up would."""
    if not system or any(char in system for char in "|,$\\"):
        return False
    try:
        page = next(client.search_pages(resource_type, {"identifier": f"{system}|", "_summary": "count"}))
    except (FatalHttpError, InvalidResponse):
        return False
    total = page.get("total")
    return isinstance(total, int) and not isinstance(total, bool) and total == 0


def _search(
    client: FhirClient, resource_type: str, parameter: str, group: list[Resource], size: int
) -> dict[Key, list[Match]]:
    keys = list(dict.fromkeys(business_key(r) for r in group))
    owners = {key: [key] for key in keys}
    return {(resource_type, key): matches for key, matches in _find(client, resource_type, parameter, owners, size)}


def _search_superseded(
    client: FhirClient,
    resource_type: str,
    route: TypeRoute,
    group: list[Resource],
    found: Mapping[Key, list[Match]],
    size: int,
    old_systems: Callable[[str], tuple[str, ...]],
) -> dict[Key, list[Match]]:
    """For each key the search did not find: the server resources carrying one of its superseded keys."""
    owners: dict[str, list[str]] = defaultdict(list)  # superseded key -> the current keys that carry it
    for resource in group:
        key = business_key(resource)
        if found.get((resource_type, key)) == []:
            for old in old_keys(resource, route, old_systems):
                if key not in owners[old]:
                    owners[old].append(key)
    if not owners:
        return {}
    param = route.search_param or "identifier"
    return {(resource_type, key): hits for key, hits in _find(client, resource_type, param, owners, size) if hits}


def old_keys(resource: Resource, route: TypeRoute, old_systems: Callable[[str], tuple[str, ...]]) -> list[str]:
    """The keys the resource had before: its identifiers of the route's ``superseded_use``, and its key under
    each system its own systems replaced (a CodeSystem: the older urls of its url)."""
    if resource["resourceType"] == "CodeSystem":
        url = resource.get("url")
        renamed = list(old_systems(str(url))) if url else []
    else:
        renamed = [
            f"{old}|{i['value']}"
            for i in identifiers(resource)
            if i.get("system") and i.get("value")
            for old in old_systems(str(i["system"]))
        ]
    return list(dict.fromkeys([*superseded_keys(resource, route.superseded_use), *renamed]))


def _find(
    client: FhirClient, resource_type: str, parameter: str, owners: Mapping[str, list[str]], size: int
) -> Iterator[tuple[str, list[Match]]]:
    """Search the keys of ``owners`` in OR-lists; yield each owner key with the resources found for its keys.

    An owner is the business key the matches are for: the searched key itself, or the current key of a
    superseded one (then each Match says which superseded key found it).
    """
    found: dict[str, list[Match]] = {owner: [] for owned in owners.values() for owner in owned}
    searched = list(owners)
    for start in range(0, len(searched), size):
        part = searched[start : start + size]
        params = {parameter: ",".join(k.replace(",", r"\,") for k in part), "_count": str(4 * size)}
        wanted = set(part)
        try:
            for match in client.search(resource_type, params):
                for key in keys_of(match, parameter):
                    if key not in wanted:
                        continue
                    for owner in owners[key]:
                        seen = found[owner]
                        if all(m.server_id != match.get("id") for m in seen):
                            seen.append(_match(match, superseded=None if key == owner else key))
        except UnknownSearchParameter as exc:
            raise RouteRefused(resource_type, parameter, str(exc)) from None
    yield from found.items()


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
            if classify(exc.status, exc.outcome) != "not-found":
                raise
            found[(resource_type, key)] = []
    return found


def _match(resource: dict[str, Any], *, superseded: str | None = None) -> Match:
    return Match(str(resource.get("id")), (resource.get("meta") or {}).get("versionId"), resource, superseded)
