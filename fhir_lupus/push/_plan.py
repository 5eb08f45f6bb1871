"""The push plan: what to do with each resource, decided without any I/O.

Given a batch of mapped resources in dependency order, the journal's records for their keys, what the
look-ups found on the server, and the routes per type, every resource gets one action:
- ``create``: the server has no resource with its key (by PUT to an id derived from the key where the server
  allows it, conditionally where it does not; a type looked up by reading our id, by PUT to that id);
- ``update``: the server has it under a known id and our content differs (written by PUT to that id); a
  resource found only by an identifier under a superseded system is always an update (it gains our key);
- ``unchanged``: the journal or the server copy equals what we would send, or it is a create-only record
  (a hospital's Patient) that exists and is linked, never overwritten;
- ``conflict``: several server resources carry the key; none is touched;
- ``held-back``: it refers to a conflict (or to something refused) directly or through others; or it is
  preliminary and would replace a final server copy, or one whose status the plan cannot see
  (``mappings/fhir/push.yaml``: such resources are always looked up, so that the server copy is compared);
- ``skipped``: its type is not written on this server; references to it become logical references.
The dependency closure is computed once, in the same pass, because resources come referenced-first.
The dry run is this plan rendered; push applies it (``push/_apply.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from fhir_lupus._resource import Resource
from fhir_lupus.bundle import (
    WriteKind,
    business_key,
    identifiers,
    key_id,
    local_ref,
    references,
    rewrite_references,
)
from fhir_lupus.journal import JournalEntry
from fhir_lupus.push._routes import TypeRoute
from fhir_lupus.terminology import MappingPack, load_pack

__all__ = [
    "Action",
    "FinalityRules",
    "Match",
    "Plan",
    "PlanItem",
    "content_hash",
    "diff_paths",
    "load_finality_rules",
    "needs_lookup",
    "plan_batch",
]

Action = Literal["create", "update", "unchanged", "conflict", "held-back", "skipped"]
Key = tuple[str, str]
SERVER_MANAGED = frozenset({"id", "meta", "text"})
LINKED = "existing record linked, never overwritten"
EQUAL = "server copy equal"


def content_hash(resource: Resource) -> str:
    """SHA-256 of the resource's canonical JSON: equal hashes mean nothing to send."""
    return hashlib.sha256(json.dumps(resource, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class StatusClasses(BaseModel):
    """The values of a type's ``status`` that make a version final, and those that make it preliminary."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    final: frozenset[str]
    preliminary: frozenset[str]

    @model_validator(mode="after")
    def _apart(self) -> StatusClasses:
        both = self.final & self.preliminary
        if both:
            raise ValueError(f"both final and preliminary: {', '.join(sorted(both))}")
        return self


class FinalityRules(BaseModel):
    """mappings/fhir/push.yaml: per type, the statuses a preliminary version of ours never replaces."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keep_final: dict[str, StatusClasses] = {}

    def preliminary(self, resource: Mapping[str, Any]) -> str | None:
        """The resource's status when its type calls it preliminary, else None."""
        classes = self.keep_final.get(str(resource.get("resourceType")))
        status = resource.get("status")
        return status if classes is not None and isinstance(status, str) and status in classes.preliminary else None

    def is_final(self, resource_type: str, status: Any) -> bool:
        classes = self.keep_final.get(resource_type)
        return classes is not None and status in classes.final


def load_finality_rules(pack: MappingPack | None = None) -> FinalityRules:
    return (pack or load_pack()).load(FinalityRules, "fhir/push.yaml")


@dataclass(frozen=True)
class Match:
    """A server resource found for a business key (its content when the look-up returned it)."""

    server_id: str
    version_id: str | None = None
    resource: dict[str, Any] | None = None
    superseded: str | None = None  # found by this superseded key, not by the business key itself


@dataclass(frozen=True)
class PlanItem:
    resource: Resource
    key: str
    action: Action
    write: WriteKind | None = None
    server_id: str | None = None  # the id to write to, or the one matched
    server_ids: tuple[str, ...] = ()  # every match, for a conflict
    version_id: str | None = None
    reason: str = ""
    diffs: tuple[str, ...] = ()
    record: bool = False  # the journal should learn this outcome (a match found, or a new hash linked)
    digest: str = ""  # content_hash of the resource, computed once by the plan

    @property
    def resource_type(self) -> str:
        return str(self.resource["resourceType"])

    @property
    def local_ref(self) -> str:
        return local_ref(self.resource)

    def journal_entry(
        self, outcome: str, *, server_id: str | None = None, version_id: str | None = None
    ) -> JournalEntry:
        """What the journal keeps for this resource; ``server_id``/``version_id`` as the server answered."""
        return JournalEntry(
            self.resource_type,
            self.key,
            self.digest or content_hash(self.resource),
            server_id or self.server_id,
            version_id or self.version_id,
            outcome,
            self.local_ref,
        )


@dataclass
class Plan:
    items: list[PlanItem]
    server_refs: dict[str, str]  # local ref -> Type/server-id, for every resource whose id is known
    logical: dict[str, dict[str, Any]]  # local ref of a skipped resource -> its Identifier
    held_back: set[str] = field(default_factory=set)

    def writes(self) -> list[PlanItem]:
        return [item for item in self.items if item.action in ("create", "update")]


def needs_lookup(
    resources: Iterable[Resource],
    routes: Mapping[str, TypeRoute],
    known: Mapping[Key, JournalEntry],
    *,
    verify: bool,
    finality: FinalityRules | None = None,
    recheck: frozenset[Key] = frozenset(),
) -> list[Resource]:
    """The resources a look-up must settle: those the journal cannot (every routed one when verifying), every
    preliminary one (``finality``, default mappings/fhir/push.yaml), whose server copy may have become final, and
    those ``recheck`` names (changed on the server since the last push: the journal's word no longer holds)."""
    finality = load_finality_rules() if finality is None else finality
    wanted = []
    for resource in resources:
        route = routes[resource["resourceType"]]
        if route.skipped:
            continue
        key = (resource["resourceType"], business_key(resource))
        entry = known.get(key)
        if verify or not (entry and entry.server_id) or finality.preliminary(resource) or key in recheck:
            wanted.append(resource)
    return wanted


def plan_batch(
    resources: Iterable[Resource],
    routes: Mapping[str, TypeRoute],
    *,
    known: Mapping[Key, JournalEntry],
    found: Mapping[Key, list[Match]],
    server_refs: Mapping[str, str],
    held_back: Iterable[str] = (),
    logical: Mapping[str, dict[str, Any]] | None = None,
    will_exist: Iterable[str] = (),
    verify: bool = False,
    finality: FinalityRules | None = None,
) -> Plan:
    """One action per resource; see the module docstring.

    ``found`` holds the look-up results (a key absent from it was not looked up); ``server_refs`` the server
    ids of resources outside the batch; ``held_back`` and ``logical`` what earlier batches held back or
    skipped; ``will_exist`` the resources a dry run's earlier batches would create. ``verify`` (the dry run)
    compares with the server copy even when the journal says unchanged. ``finality`` (default
    mappings/fhir/push.yaml) says which statuses are final and which preliminary.
    """
    finality = load_finality_rules() if finality is None else finality
    plan = Plan([], dict(server_refs), dict(logical or {}), set(held_back))
    in_batch: set[str] = set(will_exist)
    for resource in resources:
        digest = content_hash(resource)
        route = routes[resource["resourceType"]]
        decided = _decide(resource, digest, route, plan, known, found, in_batch, verify)
        matches = found.get((resource["resourceType"], decided.key))
        item = replace(_keep_final(decided, matches, finality), digest=digest)
        plan.items.append(item)
        in_batch.add(item.local_ref)
        if item.action in ("conflict", "held-back"):
            plan.held_back.add(item.local_ref)
        elif item.action == "skipped":
            held = identifiers(resource)
            if held:
                first = held[0]
                plan.logical[item.local_ref] = {k: first[k] for k in ("system", "value") if k in first}
            else:  # nothing to refer to it by: whatever refers to it cannot be written
                plan.held_back.add(item.local_ref)
        elif item.server_id and item.action != "create":
            plan.server_refs[item.local_ref] = f"{item.resource_type}/{item.server_id}"
    return plan


def _decide(
    resource: Resource,
    digest: str,
    route: TypeRoute,
    plan: Plan,
    known: Mapping[Key, JournalEntry],
    found: Mapping[Key, list[Match]],
    in_batch: set[str],
    verify: bool,
) -> PlanItem:
    key = business_key(resource)
    if route.skipped:
        return PlanItem(resource, key, "skipped", reason=route.skip_reason or "")
    for target in sorted(references(resource)):
        if target in plan.held_back:
            return PlanItem(resource, key, "held-back", reason=f"refers to {target}, which is held back")
        if target not in plan.server_refs and target not in plan.logical and target not in in_batch:
            return PlanItem(resource, key, "held-back", reason=f"refers to {target}, which the server does not have")
    resource_type = resource["resourceType"]
    entry = known.get((resource_type, key))
    matches = found.get((resource_type, key))
    if matches is not None:
        if len(matches) > 1:
            ids = tuple(sorted(m.server_id for m in matches))
            return PlanItem(resource, key, "conflict", server_ids=ids, reason="several server resources match")
        if not matches:
            return _create(resource, key, route)
        match = matches[0]
        if route.create_only:
            return _known(resource, key, match.server_id, match.version_id, "unchanged", reason=LINKED, record=True)
        if match.superseded:  # the server copy lacks our key: always rewritten, so that the key finds it next time
            diffs = (
                tuple(diff_paths(_comparable(match.resource), _comparable(_as_server_sees(resource, plan))))
                if match.resource is not None
                else ()
            )
            why = f"found by superseded identifier {match.superseded}"
            return _known(resource, key, match.server_id, match.version_id, "update", reason=why, diffs=diffs)
        if match.resource is not None:
            diffs = tuple(diff_paths(_comparable(match.resource), _comparable(_as_server_sees(resource, plan))))
            if not diffs:
                return _known(resource, key, match.server_id, match.version_id, "unchanged", reason=EQUAL, record=True)
            return _known(resource, key, match.server_id, match.version_id, "update", diffs=diffs)
        if entry and entry.server_id == match.server_id and entry.content_hash == digest and not verify:
            return _known(resource, key, match.server_id, match.version_id, "unchanged")
        return _known(resource, key, match.server_id, match.version_id, "update")
    if entry and entry.server_id:
        if entry.content_hash == digest:
            return _known(resource, key, entry.server_id, entry.version_id, "unchanged")
        if route.create_only:
            return _known(resource, key, entry.server_id, entry.version_id, "unchanged", reason=LINKED, record=True)
        return _known(resource, key, entry.server_id, entry.version_id, "update")
    return _create(resource, key, route)


def _keep_final(item: PlanItem, matches: list[Match] | None, finality: FinalityRules) -> PlanItem:
    """An update that would write a preliminary version goes ahead only where the server copy was seen and is
    not final; otherwise it is held back. The plan does no I/O: a server copy it cannot see (not looked up, or a
    look-up without content) is never overwritten, and the next push looks it up again."""
    ours = finality.preliminary(item.resource) if item.action == "update" else None
    if ours is None:
        return item
    target = f"{item.resource_type}/{item.server_id}"
    server = next((m.resource for m in matches or () if m.server_id == item.server_id), None)
    theirs = server.get("status") if server is not None else None
    if theirs is None:
        seen = (
            "it was not looked up"
            if matches is None
            else "the look-up returned no content"
            if server is None
            else "the server copy has no status"
        )
        reason = f"ours is {ours} and the server's status of {target} is unknown ({seen}): not replaced"
    elif finality.is_final(item.resource_type, theirs):
        reason = f"the server holds a final version ({target}, status {theirs}); ours is {ours}: not replaced"
    else:
        return item
    return PlanItem(item.resource, item.key, "held-back", server_ids=(str(item.server_id),), reason=reason)


def _known(
    resource: Resource,
    key: str,
    server_id: str,
    version_id: str | None,
    action: Literal["update", "unchanged"],
    *,
    reason: str = "",
    diffs: tuple[str, ...] = (),
    record: bool = False,
) -> PlanItem:
    """An item for a resource whose server id is known: unchanged, or an update by that id."""
    return PlanItem(
        resource,
        key,
        action,
        "by-id" if action == "update" else None,
        server_id=server_id,
        server_ids=(server_id,),
        version_id=version_id,
        reason=reason,
        diffs=diffs,
        record=record,
    )


def _create(resource: Resource, key: str, route: TypeRoute) -> PlanItem:
    if route.lookup == "search" and route.new_by_id:
        return PlanItem(resource, key, "create", "create-by-id", server_id=key_id(resource["resourceType"], key))
    if route.lookup == "search" and route.conditional:
        return PlanItem(resource, key, "create", "conditional")
    return PlanItem(resource, key, "create", "create-by-id", server_id=str(resource["id"]))


def _as_server_sees(resource: Resource, plan: Plan) -> Resource:
    """Our resource with its references as the server would store them (ids known so far, logical ones)."""
    return rewrite_references(resource, {**plan.server_refs, **plan.logical}, strict=False)


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
