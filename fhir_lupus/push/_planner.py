"""One server's plans, batch after batch: what push and the dry run both see before anything is written.

The routes (``_routes``) come from the server's CapabilityStatement and change when the server refuses a search
parameter or a PUT to a new id; the journal answers what it knows, the server is asked the rest (``_lookup``),
and ``_plan`` decides each resource. What one batch held back or would create is carried to the next.

A type and identifier system the server held nothing of when the push first met them (``unclaimed``: one count)
needs no look-up for the rest of the push: every key of that system not yet written is new, and only this push
writes under it (a second writer of the same trial PUTs to the same key-derived ids, or writes conditionally).
Resources that also had keys under a superseded system are still looked up by those. A push stopped half way
finds what it wrote on the next run: the count is then no longer 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fhir_lupus._resource import Resource
from fhir_lupus.bundle import business_key, identifiers, load_matching_rules, local_ref, references
from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal, JournalEntry
from fhir_lupus.push._lookup import RouteRefused, look_up, old_keys, unclaimed
from fhir_lupus.push._plan import Match, Plan, load_finality_rules, needs_lookup, plan_batch
from fhir_lupus.push._routes import CREATE_BY_ID, TypeRoute, plan_routes
from fhir_lupus.terminology import MappingPack, load_pack

__all__ = ["Planner"]

Key = tuple[str, str]  # (resource type, business key)


class Planner:
    """Plans batch after batch for one server; carries what earlier batches held back or skipped.

    Shared by push and the dry run, so both see the server the same way (``verify`` compares every
    resource with the server copy, as the dry run does).
    """

    def __init__(
        self,
        client: FhirClient,
        journal: Journal | None,
        resource_types: Iterable[str],
        *,
        only_types: frozenset[str] | None = None,
        skip_types: frozenset[str] = frozenset(),
        pack: MappingPack | None = None,
        verify: bool = False,
        warn: Callable[[str], None] = lambda _: None,
        new_by_id: bool = True,
        recheck: frozenset[Key] = frozenset(),
    ) -> None:
        """``recheck``: keys the journal settles but the server changed since the last push (``_since``): they are
        looked up and compared, like a key the journal does not know."""
        self.client = client
        self.recheck = recheck
        self.journal = journal
        self.capabilities = client.capabilities()
        self._rules = load_matching_rules(pack)
        self._old_systems = (pack or load_pack()).old_systems
        self._finality = load_finality_rules(pack)
        self._types = frozenset(resource_types)
        self._only, self._skip = only_types, skip_types
        self._refused: frozenset[tuple[str, str]] = frozenset()
        self._new_by_id = new_by_id
        self.routes = self._routes()
        self.seen_types: set[str] = set()  # the types of the resources planned so far (what the report shows)
        self.verify = verify
        self.warn = warn
        self.held_back: set[str] = set()
        self.logical: dict[str, dict[str, Any]] = {}
        self._seen: dict[str, str] = {}  # dry run: server ids found in earlier batches
        self._creates: set[str] = set()  # dry run: what earlier batches would create
        self._unclaimed: dict[Key, bool] = {}  # (type, identifier system) -> the server held none when first met

    def _routes(self) -> dict[str, TypeRoute]:
        return plan_routes(
            self._types,
            self.capabilities,
            self._rules,
            only=self._only,
            skip=self._skip,
            refused=self._refused,
            new_by_id=self._new_by_id,
        )

    def refuse_by_id(self, resource_types: Iterable[str]) -> None:
        """The server refused PUTs to new ids of these types: create them conditionally from now on."""
        self._refused |= {(name, CREATE_BY_ID) for name in resource_types}
        self.routes = self._routes()
        for name in sorted(resource_types):
            self.warn(f"the server refused {name} created by PUT to a new id; now: {self.routes[name].describe()}")

    def _known_under_old_keys(
        self, batch: list[Resource], known: Mapping[Key, JournalEntry]
    ) -> dict[Key, JournalEntry]:
        """What the journal knows of a resource under a key it had before (a system since superseded), for the
        types found by reading their id: that id derives from the key, so only the journal can say where the
        resource written under the old key lives (a searchable type is found by searching its old keys)."""
        if self.journal is None:
            return {}
        wanted: dict[Key, Key] = {}  # (type, old key) -> (type, current key)
        for resource in batch:
            current = (resource["resourceType"], business_key(resource))
            route = self.routes.get(current[0])
            if current in known or route is None or route.lookup != "read":
                continue
            for old in old_keys(resource, route, self._old_systems):
                wanted[(current[0], old)] = current
        if not wanted:
            return {}
        return {wanted[old]: entry for old, entry in self.journal.lookup(self.client.base_url, wanted).items()}

    def _new_for_certain(self, wanted: list[Resource]) -> dict[Key, list[Match]]:
        """The keys among ``wanted`` that no look-up could find (module docstring): searched by identifier, of
        a system the server held none of when this push first met it, and without keys under older systems."""
        absent: dict[Key, list[Match]] = {}
        for resource in wanted:
            kind = str(resource["resourceType"])
            route = self.routes[kind]
            if route.lookup != "search" or route.search_param != "identifier":
                continue
            system = str(identifiers(resource)[0].get("system") or "")
            if (kind, system) not in self._unclaimed:
                self._unclaimed[(kind, system)] = unclaimed(self.client, kind, system)
            if self._unclaimed[(kind, system)] and not old_keys(resource, route, self._old_systems):
                absent[(kind, business_key(resource))] = []
        return absent

    def plan(self, batch: list[Resource], held_back: Iterable[str] = ()) -> Plan:
        server = self.client.base_url
        self.seen_types.update(r["resourceType"] for r in batch)
        keys = [(r["resourceType"], business_key(r)) for r in batch]
        known = self.journal.lookup(server, keys) if self.journal else {}
        known.update(self._known_under_old_keys(batch, known))
        inside = {local_ref(r) for r in batch}
        outside = {t for r in batch for t in references(r)} - inside
        refs = self.journal.server_refs(server, outside) if self.journal else {}
        refs.update({ref: self._seen[ref] for ref in outside if ref in self._seen})
        while True:
            wanted = needs_lookup(
                batch, self.routes, known, verify=self.verify, finality=self._finality, recheck=self.recheck
            )
            absent = self._new_for_certain(wanted)
            wanted = [r for r in wanted if (r["resourceType"], business_key(r)) not in absent]
            try:
                found = look_up(self.client, wanted, self.routes, known=known, old_systems=self._old_systems)
                found.update(absent)
                break
            except RouteRefused as exc:
                self._refused |= {(exc.resource_type, exc.parameter)}
                self.routes = self._routes()
                self.warn(f"{exc}; now: {self.routes[exc.resource_type].describe()}")
        plan = plan_batch(
            batch,
            self.routes,
            known=known,
            found=found,
            server_refs=refs,
            held_back=self.held_back | set(held_back),
            logical=self.logical,
            will_exist=self._creates,
            verify=self.verify,
            finality=self._finality,
        )
        self.held_back = plan.held_back
        self.logical = plan.logical
        if self.verify:  # nothing is written between batches: remember what the plan knows and would create
            self._seen.update({ref: plan.server_refs[ref] for ref in inside if ref in plan.server_refs})
            self._creates.update(item.local_ref for item in plan.items if item.action == "create")
        return plan
