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
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from fhir_lupus.errors import ResourceInvalidError
from fhir_lupus.mappers._context import Resource

__all__ = ["DEPENDENCY_ORDER", "conditional_query", "dumps", "transaction_bundle"]

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


def conditional_query(resource: Resource) -> str:
    """The search that identifies a resource on a server: its first identifier (CodeSystem: its url)."""
    if resource["resourceType"] == "CodeSystem":
        return "url=" + quote(resource["url"], safe=":/")
    identifier = resource["identifier"][0]
    return "identifier=" + quote(f"{identifier['system']}|{identifier['value']}", safe=":/|")


def transaction_bundle(resources: Iterable[Resource]) -> Resource:
    """A FHIR transaction Bundle of conditional entries, in dependency order.

    Raises ResourceInvalidError when a resource references one that is not in the bundle (a transaction
    must be complete on its own) or when two resources share an id.
    """
    ordered = sorted(resources, key=lambda r: DEPENDENCY_ORDER.index(r["resourceType"]))
    full_urls: dict[str, str] = {}
    for resource in ordered:
        local = f"{resource['resourceType']}/{resource['id']}"
        if local in full_urls:
            raise ResourceInvalidError(f"{local} appears twice in the bundle")
        full_urls[local] = f"urn:uuid:{resource['id']}"
    entries = []
    for resource in ordered:
        body = _rewrite_references({k: v for k, v in resource.items() if k != "id"}, full_urls, resource)
        resource_type = resource["resourceType"]
        query = conditional_query(resource)
        if resource_type == "Patient":
            request = {"method": "POST", "url": "Patient", "ifNoneExist": query}
        else:
            request = {"method": "PUT", "url": f"{resource_type}?{query}"}
        entries.append(
            {"fullUrl": full_urls[f"{resource_type}/{resource['id']}"], "resource": body, "request": request}
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _rewrite_references(node: Any, full_urls: dict[str, str], owner: Resource) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and not value.startswith("#"):
                if value not in full_urls:
                    raise ResourceInvalidError(
                        f"{owner['resourceType']}/{owner['id']} references {value}, "
                        "which is not in the bundle"
                    )
                out[key] = full_urls[value]
            else:
                out[key] = _rewrite_references(value, full_urls, owner)
        return out
    if isinstance(node, list):
        return [_rewrite_references(item, full_urls, owner) for item in node]
    return node


def dumps(document: Any, *, pretty: bool = True) -> str:
    """Deterministic JSON text: same input, same bytes (key order is the mappers' order)."""
    if pretty:
        return json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))
