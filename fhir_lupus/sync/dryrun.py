"""Dry run: what a push would do, read from the server's current state, writing nothing.

Each resource is looked up by its business identifier (OR-lists, a few dozen per search). No match means
create, several mean conflict (with the matching ids), one match is compared with what we would send: equal
means unchanged, otherwise update, with the differing element paths as the diff. Server-managed elements
(id, meta, text) are ignored; references are compared through the ids the lookups found.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from fhir_lupus.bundle import business_key, rewrite_references, search_parameter
from fhir_lupus.client import FhirClient
from fhir_lupus.mappers._context import Resource

__all__ = ["DryRunItem", "DryRunReport", "diff_paths", "dry_run"]

Action = Literal["create", "update", "unchanged", "conflict"]
SERVER_MANAGED = frozenset({"id", "meta", "text"})


@dataclass(frozen=True)
class DryRunItem:
    resource_type: str
    business_key: str
    action: Action
    server_ids: tuple[str, ...] = ()
    diffs: tuple[str, ...] = ()


@dataclass
class DryRunReport:
    items: list[DryRunItem] = field(default_factory=list)

    @property
    def counts(self) -> Counter[str]:
        return Counter(item.action for item in self.items)


def dry_run(resources: Iterable[Resource], client: FhirClient, *, lookup_size: int = 40) -> DryRunReport:
    resources = list(resources)
    matches = _lookup(resources, client, lookup_size)
    server_refs = {
        f"{r['resourceType']}/{r['id']}": f"{r['resourceType']}/{found[0]['id']}"
        for r in resources
        if len(found := matches.get((r["resourceType"], business_key(r)), [])) == 1
    }
    report = DryRunReport()
    for resource in resources:
        key = business_key(resource)
        found = matches.get((resource["resourceType"], key), [])
        ids = tuple(str(m.get("id")) for m in found)
        if not found:
            report.items.append(DryRunItem(resource["resourceType"], key, "create"))
        elif len(found) > 1:
            report.items.append(DryRunItem(resource["resourceType"], key, "conflict", ids))
        else:
            ours = _comparable(rewrite_references(resource, server_refs, strict=False))
            theirs = _comparable(found[0])
            diffs = tuple(diff_paths(theirs, ours))
            report.items.append(
                DryRunItem(resource["resourceType"], key, "update" if diffs else "unchanged", ids, diffs)
            )
    return report


def _lookup(resources: list[Resource], client: FhirClient, size: int) -> dict[tuple[str, str], list[dict[str, Any]]]:
    wanted: dict[str, list[str]] = defaultdict(list)
    for resource in resources:
        wanted[resource["resourceType"]].append(business_key(resource))
    found: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for resource_type, keys in wanted.items():
        parameter = search_parameter(resource_type)
        wanted_keys = set(keys)
        for start in range(0, len(keys), size):
            group = keys[start : start + size]
            params = {parameter: ",".join(k.replace(",", r"\,") for k in group), "_count": str(4 * size)}
            for match in client.search(resource_type, params):
                for key in _keys_of(match, resource_type):
                    if key in wanted_keys and match not in found[(resource_type, key)]:
                        found[(resource_type, key)].append(match)
    return found


def _keys_of(resource: dict[str, Any], resource_type: str) -> list[str]:
    if resource_type == "CodeSystem":
        return [str(resource.get("url", ""))]
    return [f"{i.get('system')}|{i.get('value')}" for i in resource.get("identifier", [])]


def _comparable(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in SERVER_MANAGED}


def diff_paths(before: Any, after: Any, path: str = "") -> list[str]:
    """Element paths where two JSON values differ (``code.coding[0].display``); numbers compare by value."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [
            hit
            for key in sorted(set(before) | set(after), key=str)
            for hit in diff_paths(before.get(key), after.get(key), f"{path}.{key}" if path else key)
        ]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            hit for i, (b, a) in enumerate(zip(before, after, strict=True)) for hit in diff_paths(b, a, f"{path}[{i}]")
        ]
    if isinstance(before, (int, float)) and isinstance(after, (int, float)) and not isinstance(before, bool):
        return [] if float(before) == float(after) else [path]
    return [] if before == after else [path or "<root>"]
