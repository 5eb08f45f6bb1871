"""How each resource type is found and written on one server, decided from its CapabilityStatement.

A server may not search a type by the parameter that takes our business key (a small server without
``CodeSystem?url``), may not offer conditional writes, or may not let a client write a type at all. Each type
gets a route, from the most to the least preferred:
1. ``search``: look the key up with the first parameter of ``mappings/fhir/matching.yaml`` the server
   searches; write what it finds by id, and what it does not find conditionally on the same parameter (or,
   without conditional writes, by PUT to the deterministic id where update-as-create is allowed); a key
   ``identifier`` does not find is looked up again by the resource's identifiers under superseded systems
   (``superseded_use`` in matching.yaml), and a resource found that way is updated by its id;
2. ``read``: the server cannot search the key, but reads by id and allows update-as-create: look up the
   deterministic id with a read, write by PUT to it (a server id known from the journal comes first);
3. skipped: neither works, or the user excluded the type (``--types`` / ``--skip-types``); references to a
   skipped type become logical references by identifier.
Routes are pure data; a parameter that the statement lists but the server refuses at run time is passed in
``refused`` and the routes are computed again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from fhir_lupus.bundle import MatchingRules
from fhir_lupus.client import Capabilities

__all__ = ["TypeRoute", "plan_routes"]

Lookup = Literal["search", "read", "none"]


@dataclass(frozen=True)
class TypeRoute:
    resource_type: str
    lookup: Lookup
    search_param: str | None = None  # the parameter taking the business key (lookup == "search")
    conditional: bool = False  # conditional update (create for create-only types) on search_param
    update_create: bool | None = None  # PUT Type/<new id> creates: True, False, or None (not stated)
    create_only: bool = False  # never updated once it exists (a hospital's Patient)
    skip_reason: str | None = None
    skipped_by_user: bool = False
    superseded_use: frozenset[str] = frozenset()  # identifiers of these uses are looked up when the key is not found

    @property
    def skipped(self) -> bool:
        return self.skip_reason is not None

    def describe(self) -> str:
        """One line for reports: how this type is matched and written."""
        if self.skip_reason:
            return f"{self.resource_type}: skipped ({self.skip_reason})"
        if self.lookup == "search":
            new = f"conditional {'create' if self.create_only else 'update'}" if self.conditional else "PUT to our id"
            uses = ", ".join(sorted(self.superseded_use))
            old = f" (then by identifiers of use {uses})" if uses else ""
            return f"{self.resource_type}: look-up by {self.search_param}{old}; new ones by {new}"
        return f"{self.resource_type}: look-up by read of our id; written by PUT to it (update-as-create)"


def plan_routes(
    resource_types: Iterable[str],
    capabilities: Capabilities,
    rules: MatchingRules,
    *,
    only: frozenset[str] | None = None,
    skip: frozenset[str] = frozenset(),
    refused: frozenset[tuple[str, str]] = frozenset(),
) -> dict[str, TypeRoute]:
    """A route per type; ``refused`` holds (type, parameter) pairs the server refused despite its statement."""
    return {
        name: _route(name, capabilities, rules, only=only, skip=skip, refused=refused)
        for name in sorted(set(resource_types))
    }


def _route(
    name: str,
    caps: Capabilities,
    rules: MatchingRules,
    *,
    only: frozenset[str] | None,
    skip: frozenset[str],
    refused: frozenset[tuple[str, str]],
) -> TypeRoute:
    create_only = name in rules.create_only
    if name in skip:
        return TypeRoute(name, "none", create_only=create_only, skip_reason="--skip-types", skipped_by_user=True)
    if only is not None and name not in only:
        return TypeRoute(name, "none", create_only=create_only, skip_reason="not in --types", skipped_by_user=True)
    update_create = caps.allows_update_create(name)
    wanted = rules.search_parameters(name)
    param = next((p for p in wanted if caps.searches(name, p) and (name, p) not in refused), None)
    if param is not None:
        conditional = name in (caps.conditional_create if create_only else caps.conditional_update)
        writes_existing = create_only or caps.offers(name, "update")
        writes_new = (conditional and caps.offers(name, "create" if create_only else "update")) or (
            update_create is not False and caps.offers(name, "update")
        )
        if writes_existing and writes_new:
            superseded = rules.superseded_use if param == "identifier" else frozenset()
            return TypeRoute(name, "search", param, conditional, update_create, create_only, superseded_use=superseded)
    if caps.offers(name, "read") and caps.offers(name, "update") and update_create is not False:
        return TypeRoute(name, "read", None, False, update_create, create_only)
    searched = " or ".join(wanted)
    reason = (
        f"the server cannot find {name} by {searched}"
        if param is None
        else f"the server offers no way to create {name} (conditional or update-as-create)"
    )
    if update_create is False:
        reason += " and refuses update-as-create"
    elif not caps.offers(name, "update"):
        reason += f" and offers no update of {name}"
    return TypeRoute(name, "none", None, False, update_create, create_only, skip_reason=reason)
