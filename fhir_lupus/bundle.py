"""Transaction Bundles: conditional entries on business identifiers, dependency order, urn:uuid references.

Every entry is conditional, so sending the same bundle twice changes nothing the second time:
- Patient: conditional create (``ifNoneExist`` on its MRN or pseudonym) — a hospital's existing patient is
  linked, never duplicated and never overwritten;
- everything else: conditional update (``PUT Type?identifier=system|value``; CodeSystem on its url).
Mappers reference resources as ``Type/id`` (deterministic ids); here those become the entries' ``urn:uuid``
full URLs, which the server resolves to whatever it matched or created.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from fhir_lupus.errors import ResourceInvalidError
from fhir_lupus.mappers._context import Resource

__all__ = [
    "DEPENDENCY_ORDER",
    "business_key",
    "conditional_query",
    "dumps",
    "references",
    "rewrite_references",
    "search_parameter",
    "transaction_bundle",
]

# Referenced types before referring ones: a server or a fallback (batch, one-by-one) can apply them in order.
DEPENDENCY_ORDER = (
    "CodeSystem",
    "Organization",
    "Location",
    "Group",
    "ResearchStudy",
    "Patient",
    "ResearchSubject",
    "Encounter",
    "Procedure",
    "Observation",
)


def business_key(resource: Resource) -> str:
    """What identifies a resource across systems: ``system|value`` of its first identifier (CodeSystem: url)."""
    if resource["resourceType"] == "CodeSystem":
        return str(resource["url"])
    identifier = resource["identifier"][0]
    return f"{identifier['system']}|{identifier['value']}"


def search_parameter(resource_type: str) -> str:
    """The search parameter that takes a business key: ``url`` for CodeSystem, ``identifier`` otherwise."""
    return "url" if resource_type == "CodeSystem" else "identifier"


def conditional_query(resource: Resource) -> str:
    """The search that identifies a resource on a server: its first identifier (CodeSystem: its url)."""
    return f"{search_parameter(resource['resourceType'])}=" + quote(business_key(resource), safe=":/|")


def references(node: Any) -> set[str]:
    """Every non-local ``reference`` string inside a resource (``#contained`` ones are left out)."""
    if isinstance(node, dict):
        own = node.get("reference")
        found = {own} if isinstance(own, str) and not own.startswith("#") else set()
        return found.union(*(references(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(references(item) for item in node))
    return set()


def transaction_bundle(
    resources: Iterable[Resource],
    *,
    external: Mapping[str, str] | None = None,
    bundle_type: str = "transaction",
) -> Resource:
    """A FHIR transaction (or batch) Bundle of conditional entries, in dependency order.

    ``external`` maps references to resources outside the bundle (``Type/local-id``) to what the server
    knows them as (``Type/server-id``), for a push that sends only what changed. Raises
    ResourceInvalidError when a reference resolves neither way, or when two resources share an id.
    """
    ordered = sorted(resources, key=lambda r: DEPENDENCY_ORDER.index(r["resourceType"]))
    full_urls: dict[str, str] = {}
    for resource in ordered:
        local = f"{resource['resourceType']}/{resource['id']}"
        if local in full_urls:
            raise ResourceInvalidError(f"{local} appears twice in the bundle")
        full_urls[local] = f"urn:uuid:{resource['id']}"
    targets = {**(external or {}), **full_urls}
    entries = []
    for resource in ordered:
        body = _rewrite_references({k: v for k, v in resource.items() if k != "id"}, targets, resource, True)
        resource_type = resource["resourceType"]
        query = conditional_query(resource)
        if resource_type == "Patient":
            request = {"method": "POST", "url": "Patient", "ifNoneExist": query}
        else:
            request = {"method": "PUT", "url": f"{resource_type}?{query}"}
        entries.append(
            {"fullUrl": full_urls[f"{resource_type}/{resource['id']}"], "resource": body, "request": request}
        )
    return {"resourceType": "Bundle", "type": bundle_type, "entry": entries}


def rewrite_references(resource: Resource, targets: Mapping[str, str], *, strict: bool = True) -> Resource:
    """A copy of ``resource`` whose ``Type/id`` references are replaced through ``targets``.

    ``strict``: every reference must resolve (ResourceInvalidError otherwise); else unknown ones stay as they are.
    """
    rewritten: Resource = _rewrite_references(resource, targets, resource, strict)
    return rewritten


def _rewrite_references(node: Any, full_urls: Mapping[str, str], owner: Resource, strict: bool) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and not value.startswith("#"):
                if value not in full_urls and strict:
                    raise ResourceInvalidError(
                        f"{owner['resourceType']}/{owner.get('id')} references {value}, which is not in the bundle"
                    )
                out[key] = full_urls.get(value, value)
            else:
                out[key] = _rewrite_references(value, full_urls, owner, strict)
        return out
    if isinstance(node, list):
        return [_rewrite_references(item, full_urls, owner, strict) for item in node]
    return node


def dumps(document: Any, *, pretty: bool = True) -> str:
    """Deterministic JSON text: same input, same bytes (key order is the mappers' order)."""
    if pretty:
        return json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))
