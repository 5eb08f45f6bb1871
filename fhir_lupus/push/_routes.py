"""How each resource type is found and written on one server, decided from its CapabilityStatement.

A server may not search a type by the parameter that takes our business key (a small server without
``CodeSystem?url``), may not offer conditional writes, or may not let a client write a type at all. Each type
gets a route, from the most to the least preferred:
1. ``search``: look the key up with the first parameter of ``mappings/fhir/matching.yaml`` the server
   searches; write what it finds by id, and what it does not find by PUT to an id derived from the business
   key where the server allows update-as-create (not stated counts as allowed until the server refuses one:
   then ``refused`` holds (type, ``CREATE_BY_ID``) and new ones go conditionally), else conditionally on the
   same parameter. A PUT by id costs the server a read of one id; a conditional write costs it a search
   per entry (HAPI JPA: about half the create rate), and a key-derived id keeps a replayed chunk idempotent
   without a conditional. Create-only types (a hospital's Patient) are always created conditionally; a key
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

__all__ = ["CREATE_BY_ID", "TypeRoute", "plan_routes"]

Lookup = Literal["search", "read", "none"]
CREATE_BY_ID = "create-by-id"  # in ``refused``: the server refused a PUT to a new id of that type


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
    new_by_id: bool = False  # new ones by PUT to a key-derived id (lookup == "search"), not conditionally

    @property
    def skipped(self) -> bool:
        return self.skip_reason is not None

    def describe(self) -> str:
        """One line for reports: how this type is matched and written."""
        if self.skip_reason:
            return f"{self.resource_type}: skipped ({self.skip_reason})"
        if self.lookup == "search":
            new = (
                "PUT to an id derived from the key"
                if self.new_by_id
                else f"conditional {'create' if self.create_only else 'update'}"
                if self.conditional
                else "PUT to our id"
            )
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
    new_by_id: bool = True,
) -> dict[str, TypeRoute]:
    """A route per type; ``refused`` holds (type, parameter) pairs the server refused despite its statement.

    ``new_by_id`` False keeps new resources conditional wherever the server offers it: slower, but the
    server then sees a twin written by another system between our look-up and our write.
    """
    return {
        name: _route(name, capabilities, rules, only=only, skip=skip, refused=refused, new_by_id=new_by_id)
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
    new_by_id: bool,
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
            update_create is not False and caps.offers(name, "update") and (name, CREATE_BY_ID) not in refused
        )
        if writes_existing and writes_new:
            superseded = rules.superseded_use if param == "identifier" else frozenset()
            by_id = (
                (new_by_id or not conditional)
                and not create_only
                and update_create is not False
                and caps.offers(name, "update")
                and (name, CREATE_BY_ID) not in refused
            )
            return TypeRoute(
                name,
                "search",
                param,
                conditional,
                update_create,
                create_only,
                superseded_use=superseded,
                new_by_id=by_id,
            )
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
