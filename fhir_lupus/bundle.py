"""Bundle entries: business keys, conditional or id-addressed requests, dependency order, reference rewriting.

A resource is identified across systems by its business key (first identifier, or a CodeSystem's url);
``mappings/fhir/matching.yaml`` says which search parameters take that key and which types are create-only,
and which identifiers carry the key under a superseded system (``superseded_keys``: looked up when the key
itself finds nothing).
An entry is written one of three ways:
- ``conditional``: ``PUT Type?identifier=system|value`` (update, or create when absent); for a create-only
  type (Patient) ``POST`` with ``ifNoneExist``, so a hospital's existing patient is linked, never overwritten;
- ``by-id``: ``PUT Type/server-id``, when a look-up or the journal already knows the server's id (the server
  does not have to search for it);
- ``create-by-id``: ``PUT Type/deterministic-id`` (update-as-create), for a server that cannot search the key.
Sending the same entries twice changes nothing the second time. Mappers reference resources as ``Type/id``
(deterministic ids); here those become ``urn:uuid`` full URLs inside a Bundle, server ids for resources the
server already has, or logical references by identifier for types that are not written at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Literal
from urllib.parse import quote

import orjson
from pydantic import BaseModel, ConfigDict

from fhir_lupus._resource import Resource
from fhir_lupus.errors import ResourceInvalidError
from fhir_lupus.terminology import MappingPack, load_pack

__all__ = [
    "DEPENDENCY_ORDER",
    "MatchingRules",
    "WriteKind",
    "business_key",
    "conditional_query",
    "dependency_sorted",
    "dumps",
    "entry",
    "identifiers",
    "key_id",
    "load_matching_rules",
    "local_ref",
    "reference_depths",
    "references",
    "rewrite_references",
    "search_parameter",
    "superseded_keys",
    "transaction_bundle",
]

# Referenced types before referring ones: a server or a fallback (batch, one-by-one) can apply them in order.
DEPENDENCY_ORDER = (
    "CodeSystem",
    "Organization",
    "Location",
    "Group",
    "ActivityDefinition",  # the schedule of activities: ResearchStudy.protocol refers to the PlanDefinition
    "PlanDefinition",
    "ResearchStudy",
    "Patient",
    "ResearchSubject",
    "Encounter",
    "Procedure",
    "MedicationAdministration",  # partOf the MSC infusion Procedure
    "MedicationStatement",
    "Observation",
    "AdverseEvent",  # refers to the treatments it suspects (Procedure, MedicationAdministration)
)

WriteKind = Literal["conditional", "by-id", "create-by-id"]
ReferenceTarget = str | dict[str, Any]  # "Type/server-id" or "urn:uuid:..."; a dict is a logical Identifier


class MatchingRules(BaseModel):
    """mappings/fhir/matching.yaml: how a type is found by its business key, and which types are create-only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default_search: tuple[str, ...]
    search: dict[str, tuple[str, ...]] = {}
    create_only: frozenset[str] = frozenset()
    superseded_use: frozenset[str] = frozenset()  # Identifier.use of identifiers under a superseded system

    def search_parameters(self, resource_type: str) -> tuple[str, ...]:
        """The parameters that take the type's business key, most preferred first."""
        return self.search.get(resource_type, self.default_search)


def load_matching_rules(pack: MappingPack | None = None) -> MatchingRules:
    return (pack or load_pack()).load(MatchingRules, "fhir/matching.yaml")


def local_ref(resource: Resource) -> str:
    """``Type/id`` as the mappers wrote it (the deterministic id)."""
    return f"{resource['resourceType']}/{resource['id']}"


def key_id(resource_type: str, key: str) -> str:
    """The server id a new resource is created at: a UUIDv5 of its type and business key.

    Not the mappers' id, which depends only on the trial's own record ids: two deployments writing the same
    trial under different identifier systems must not PUT over each other's resources.
    """
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{key}#{resource_type}"))


def business_key(resource: Resource) -> str:
    """What identifies a resource across systems: ``system|value`` of its first identifier (CodeSystem: url)."""
    if resource["resourceType"] == "CodeSystem":
        return str(resource["url"])
    identifier = identifiers(resource)[0]
    return f"{identifier['system']}|{identifier['value']}"


def identifiers(resource: Resource) -> list[dict[str, Any]]:
    """A resource's identifiers as a list: R4 AdverseEvent.identifier is a single Identifier, not a list."""
    found = resource.get("identifier") or []
    return [found] if isinstance(found, dict) else [i for i in found if isinstance(i, dict)]


def superseded_keys(resource: Resource, uses: frozenset[str]) -> list[str]:
    """``system|value`` of the identifiers whose ``use`` is one of ``uses`` (the key under a superseded system)."""
    current = business_key(resource)
    keys = [
        f"{i['system']}|{i['value']}"
        for i in identifiers(resource)
        if i.get("use") in uses and i.get("system") and i.get("value")
    ]
    return [k for k in dict.fromkeys(keys) if k != current]


def search_parameter(resource_type: str, rules: MatchingRules | None = None) -> str:
    """The preferred search parameter that takes a type's business key (``url`` for CodeSystem)."""
    return (rules or load_matching_rules()).search_parameters(resource_type)[0]


def conditional_query(resource: Resource, parameter: str | None = None) -> str:
    """The search that identifies a resource on a server: ``parameter=<business key>``, URL-encoded."""
    parameter = parameter or search_parameter(resource["resourceType"])
    return f"{parameter}=" + quote(business_key(resource), safe=":/|")


_CONTAINERS = (dict, list)  # a tuple: ``dict | list`` in a hot loop builds a union object per test


def references(node: Any) -> set[str]:
    """Every non-local ``reference`` string inside a resource (``#contained`` ones are left out)."""
    found: set[str] = set()
    _collect_references(node, found)
    return found


def _collect_references(node: Any, found: set[str]) -> None:
    """``references`` into one set, descending only into containers (most values are strings): the bundle
    writer asks this of every resource, and a set per element was a third of writing the bundle."""
    if isinstance(node, dict):
        own = node.get("reference")
        if isinstance(own, str) and not own.startswith("#"):
            found.add(own)
        children: Iterable[Any] = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return
    for child in children:
        if isinstance(child, _CONTAINERS):
            _collect_references(child, found)


def dependency_sorted(resources: Iterable[Resource]) -> list[Resource]:
    """Referenced resources before referring ones: type order, then depth among resources of the list.

    Observations refer to Observations (a SLEDAI-2K score is derived from lab results), so type order alone
    is not enough for a writer that sends them in separate requests. Raises ResourceInvalidError on a cycle.
    """
    items = list(resources)
    depth = reference_depths(items)
    return sorted(items, key=lambda r: (DEPENDENCY_ORDER.index(r["resourceType"]), depth[local_ref(r)]))


def reference_depths(resources: Iterable[Resource], known: Mapping[str, int] | None = None) -> dict[str, int]:
    """``Type/id`` -> depth: 0 for a resource that refers to none of the others, else 1 + its deepest parent.

    ``known``: depths already computed for resources outside the list (a streamed subject's batch refers to the
    study-level resources), so a batch gets the depths the whole trial would give it.
    Raises ResourceInvalidError on a cycle.
    """
    by_ref = {local_ref(r): r for r in resources}
    depth: dict[str, int] = {}
    outside = known or {}

    def level(ref: str, trail: frozenset[str] = frozenset()) -> int:
        if ref in outside and ref not in by_ref:
            return outside[ref]
        if ref not in depth:
            if ref in trail:
                raise ResourceInvalidError(f"reference cycle through {ref}")
            parents = [p for p in references(by_ref[ref]) if (p in by_ref or p in outside) and p != ref]
            depth[ref] = 1 + max((level(p, trail | {ref}) for p in parents), default=-1)
        return depth[ref]

    for ref in by_ref:
        level(ref)
    return depth


def entry(
    resource: Resource,
    *,
    write: WriteKind,
    targets: Mapping[str, ReferenceTarget],
    server_id: str | None = None,
    parameter: str | None = None,
    create_only: bool = False,
) -> dict[str, Any]:
    """One Bundle entry (fullUrl, resource, request) writing ``resource`` the way ``write`` says.

    ``targets`` resolves every reference the resource makes (ResourceInvalidError for one it cannot).
    ``server_id`` is the id to PUT to for ``by-id`` and ``create-by-id``.
    """
    resource_type = resource["resourceType"]
    body = rewrite_references({k: v for k, v in resource.items() if k != "id"}, targets, owner=resource)
    request: dict[str, str]
    if write == "conditional":
        query = conditional_query(resource, parameter)
        if create_only:
            request = {"method": "POST", "url": resource_type, "ifNoneExist": query}
        else:
            request = {"method": "PUT", "url": f"{resource_type}?{query}"}
    else:
        if not server_id:
            raise ValueError(f"a {write} entry needs a server id ({local_ref(resource)})")
        body = {
            "resourceType": resource_type,
            "id": server_id,
            **{k: v for k, v in body.items() if k != "resourceType"},
        }
        request = {"method": "PUT", "url": f"{resource_type}/{server_id}"}
    return {"fullUrl": f"urn:uuid:{resource['id']}", "resource": body, "request": request}


def transaction_bundle(
    resources: Iterable[Resource],
    *,
    external: Mapping[str, str] | None = None,
    bundle_type: str = "transaction",
    rules: MatchingRules | None = None,
) -> Resource:
    """A FHIR transaction (or batch) Bundle of conditional entries, in dependency order.

    ``external`` maps references to resources outside the bundle (``Type/local-id``) to what the server
    knows them as (``Type/server-id``). Raises ResourceInvalidError when a reference resolves neither way,
    or when two resources share an id.
    """
    rules = rules or load_matching_rules()
    ordered = dependency_sorted(resources)
    full_urls: dict[str, ReferenceTarget] = {}
    for resource in ordered:
        if local_ref(resource) in full_urls:
            raise ResourceInvalidError(f"{local_ref(resource)} appears twice in the bundle")
        full_urls[local_ref(resource)] = f"urn:uuid:{resource['id']}"
    targets = {**(external or {}), **full_urls}
    entries = [
        entry(
            resource,
            write="conditional",
            targets=targets,
            parameter=search_parameter(resource["resourceType"], rules),
            create_only=resource["resourceType"] in rules.create_only,
        )
        for resource in ordered
    ]
    return {"resourceType": "Bundle", "type": bundle_type, "entry": entries}


def rewrite_references(
    resource: Resource, targets: Mapping[str, ReferenceTarget], *, strict: bool = True, owner: Resource | None = None
) -> Resource:
    """A copy of ``resource`` whose ``Type/id`` references are replaced through ``targets``.

    A string target replaces the reference; a dict target (an Identifier) turns the Reference into a logical
    reference (``identifier`` instead of ``reference``, the display kept). ``strict``: every reference must
    resolve (ResourceInvalidError otherwise); else unknown ones stay as they are.
    """
    rewritten: Resource = _rewrite(resource, targets, owner or resource, strict)
    return rewritten


def _rewrite(node: Any, targets: Mapping[str, ReferenceTarget], owner: Resource, strict: bool) -> Any:
    if isinstance(node, dict):
        value = node.get("reference")
        if isinstance(value, str) and not value.startswith("#"):
            target = targets.get(value)
            if target is None:
                if strict:
                    raise ResourceInvalidError(
                        f"{owner['resourceType']}/{owner.get('id')} references {value}, which is not in the bundle"
                    )
                return {key: _rewrite(item, targets, owner, strict) for key, item in node.items()}
            if isinstance(target, dict):
                rest = {k: v for k, v in node.items() if k not in ("reference", "type")}
                return {"type": value.split("/")[0], "identifier": target, **rest}
            return {
                key: (target if key == "reference" else _rewrite(item, targets, owner, strict))
                for key, item in node.items()
            }
        # a leaf (a string, a number) is kept as it is without a call: most values are leaves
        return {
            key: _rewrite(item, targets, owner, strict) if isinstance(item, _CONTAINERS) else item
            for key, item in node.items()
        }
    if isinstance(node, list):
        return [_rewrite(item, targets, owner, strict) if isinstance(item, _CONTAINERS) else item for item in node]
    return node


def dumps(document: Any, *, pretty: bool = True) -> str:
    """Deterministic JSON text: same input, same bytes (key order is the mappers' order).

    orjson, not ``json``: with ``indent`` the standard library falls back to its pure-Python encoder, which
    took a quarter of ``fhir-lupus map``. The text is what ``json.dumps(ensure_ascii=False)`` with ``indent=2``
    (pretty) or without spaces (compact) writes, UTF-8 kept as is, except numbers under 1e-4: orjson writes
    ``0.00001`` and ``2.5e-7`` where ``json`` writes ``1e-05`` and ``2.5e-07`` (the same values). Content
    hashes (``push.content_hash``) keep ``json``, so journals written before stay valid.
    """
    if pretty:
        return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"
    return orjson.dumps(document).decode()
