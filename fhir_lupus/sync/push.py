"""Push mapped resources to a FHIR server: planned from the server, applied in accepted sizes, resumable.

1. Read the CapabilityStatement and give every type a route (``routes.py``): how its business key is looked
   up and how new resources are written; a type the server cannot take is skipped with one warning.
2. For each bounded batch of resources (referenced ones first): ask the journal what it knows, look the rest
   up on the server in OR-list searches, and plan (``plan.py``): create, update, unchanged, conflict,
   held back or skipped.
3. Apply the plan (``apply.py``): by-id writes for everything whose server id is known, conditional writes
   for the rest; chunk sizes adapt to what the server accepts and are remembered per server.
4. One Provenance for the push (and for any earlier push whose Provenance is still missing).
A push that is killed, or stopped by a server failure, leaves the journal with what the server confirmed;
the next push looks the rest up before writing, so nothing is written twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhir_lupus.bundle import business_key, dependency_sorted, load_matching_rules, local_ref, references
from fhir_lupus.client import Capabilities, FhirClient, FhirHttpError, WriteStrategy
from fhir_lupus.mappers._context import Resource
from fhir_lupus.sync.apply import Applier, ApplyCounts, Problem, WriteLimits
from fhir_lupus.sync.journal import Journal
from fhir_lupus.sync.lookup import RouteRefused, look_up
from fhir_lupus.sync.plan import Plan, content_hash, needs_lookup, plan_batch
from fhir_lupus.sync.provenance import load_provenance_template, provenance_resource, write_provenance
from fhir_lupus.sync.routes import TypeRoute, plan_routes
from fhir_lupus.terminology import load_pack

__all__ = ["Planner", "PushReport", "content_hash", "push_resources"]

Progress = Callable[[int, int], None]
BATCH_SIZE = 1000  # resources planned and applied at a time


@dataclass
class PushReport(ApplyCounts):
    """What a push did: the counts of its writes (ApplyCounts) and of its plans, routes, limits, Provenance."""

    push_id: str = ""
    server: str = ""
    strategy: WriteStrategy | None = None
    total: int = 0
    unchanged: int = 0
    routes: dict[str, TypeRoute] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    bundle_sizes: dict[str, int] = field(default_factory=dict)
    provenance: str | None = None
    provenance_missing: list[str] = field(default_factory=list)
    earlier_provenance: list[str] = field(default_factory=list)
    content_hashes: list[str] = field(default_factory=list)  # one per resource offered, as the plans computed them

    @property
    def written(self) -> int:
        return self.created + self.updated

    @property
    def conflicts(self) -> list[Problem]:
        return [p for p in self.problems if p.kind == "conflict"]

    def count(self, kind: str) -> int:
        return sum(1 for p in self.problems if p.kind == kind)

    @property
    def complete(self) -> bool:
        """Everything asked for was written or found unchanged, with its Provenance."""
        forced_skips = [r for r in self.routes.values() if r.skipped and not r.skipped_by_user]
        return not any(p.kind != "skipped" for p in self.problems) and not (self.provenance_missing or forced_skips)

    def summary(self) -> str:
        sizes = ", ".join(f"{kind} {size}" for kind, size in sorted(self.bundle_sizes.items()))
        return (
            f"{self.total} resources: {self.created} created, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.linked} linked, {self.count('conflict')} conflicts, {self.count('held-back')} held back, "
            f"{self.count('refused')} refused, {self.count('skipped')} skipped "
            f"({self.chunks} chunk(s), {self.strategy or 'nothing sent'}"
            + (f"; bundle sizes {sizes}" if sizes else "")
            + (f"; {self.size_refusals} size refusal(s)" if self.size_refusals else "")
            + ")"
        )


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
        mappings_dir: Path | None = None,
        verify: bool = False,
        warn: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.client = client
        self.journal = journal
        self.capabilities = client.capabilities()
        self._rules = load_matching_rules(mappings_dir)
        self._types = frozenset(resource_types)
        self._only, self._skip = only_types, skip_types
        self._refused: frozenset[tuple[str, str]] = frozenset()
        self.routes = self._routes()
        self.verify = verify
        self.warn = warn
        self.held_back: set[str] = set()
        self.logical: dict[str, dict[str, Any]] = {}
        self._seen: dict[str, str] = {}  # dry run: server ids found in earlier batches
        self._creates: set[str] = set()  # dry run: what earlier batches would create

    def _routes(self) -> dict[str, TypeRoute]:
        return plan_routes(
            self._types, self.capabilities, self._rules, only=self._only, skip=self._skip, refused=self._refused
        )

    def plan(self, batch: list[Resource], held_back: Iterable[str] = ()) -> Plan:
        server = self.client.base_url
        keys = [(r["resourceType"], business_key(r)) for r in batch]
        known = self.journal.lookup(server, keys) if self.journal else {}
        inside = {local_ref(r) for r in batch}
        outside = {t for r in batch for t in references(r)} - inside
        refs = self.journal.server_refs(server, outside) if self.journal else {}
        refs.update({ref: self._seen[ref] for ref in outside if ref in self._seen})
        while True:
            wanted = needs_lookup(batch, self.routes, known, verify=self.verify)
            try:
                found = look_up(self.client, wanted, self.routes, known=known)
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
        )
        self.held_back = plan.held_back
        self.logical = plan.logical
        if self.verify:  # nothing is written between batches: remember what the plan knows and would create
            self._seen.update({ref: plan.server_refs[ref] for ref in inside if ref in plan.server_refs})
            self._creates.update(item.local_ref for item in plan.items if item.action == "create")
        return plan


def push_resources(
    resources: Iterable[Resource],
    client: FhirClient,
    journal: Journal,
    *,
    source: str,
    mapping_version: str,
    chunk_size: int = 500,
    progress: Progress | None = None,
    strategy: WriteStrategy | None = None,
    only_types: frozenset[str] | None = None,
    skip_types: frozenset[str] = frozenset(),
    batch_size: int = BATCH_SIZE,
    mappings_dir: Path | None = None,
) -> PushReport:
    """Plan and apply in batches; see the module docstring. ``strategy`` overrides the statement's choice.

    ``chunk_size`` is an upper bound: chunks shrink to what the server accepts, and the journal remembers it.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    server = client.base_url
    ordered = dependency_sorted(resources)
    report = PushReport(push_id=str(uuid.uuid4()), server=server, total=len(ordered))
    planner = Planner(
        client,
        journal,
        {r["resourceType"] for r in ordered},
        only_types=only_types,
        skip_types=skip_types,
        mappings_dir=mappings_dir,
        warn=report.warnings.append,
    )
    capabilities = planner.capabilities
    report.strategy = strategy or capabilities.write_strategy()
    limits = WriteLimits(chunk_size, journal.write_limits(server))
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        if progress:
            progress(done, len(ordered))

    applier = Applier(
        client, journal, report.push_id, report.strategy, planner.routes, limits, counts=report, on_written=advance
    )
    journal.start_push(report.push_id, server, source)
    status = "failed"
    try:
        advance(0)
        for batch in _batches(ordered, batch_size):
            plan = planner.plan(batch, applier.held_back)
            applier.routes = planner.routes
            _record_settled(plan, journal, server, report.push_id)
            _count_plan(plan, report)
            report.content_hashes.extend(item.digest for item in plan.items)
            advance(sum(1 for item in plan.items if item.action not in ("create", "update")))
            applier.apply(plan)
        status = "completed"
    finally:
        report.routes = planner.routes
        report.bundle_sizes = {kind: limits.size(kind) for kind in ("conditional", "direct")}
        _warn_forced_skips(report)
        journal.finish_push(report.push_id, status, report.summary())
    _write_provenances(client, capabilities, journal, report, source, mapping_version, mappings_dir)
    if not report.complete:
        journal.finish_push(report.push_id, "completed-with-problems", report.summary())
    return report


def _batches(items: list[Resource], size: int) -> Iterator[list[Resource]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _record_settled(plan: Plan, journal: Journal, server: str, push_id: str) -> None:
    """What the look-ups settled without a write (a match equal to ours, a linked record) goes in the journal."""
    settled = [item.journal_entry("matched") for item in plan.items if item.record]
    if settled:
        journal.record(server, push_id, settled)


def _count_plan(plan: Plan, report: PushReport) -> None:
    for item in plan.items:
        if item.action == "unchanged":
            report.unchanged += 1
        elif item.action == "conflict" or item.action == "held-back" or item.action == "skipped":
            report.problems.append(Problem(item.action, item.resource_type, item.key, item.reason, item.server_ids))


def _warn_forced_skips(report: PushReport) -> None:
    for route in report.routes.values():
        if route.skipped and not route.skipped_by_user:
            message = (
                f"{route.resource_type} not written: {route.skip_reason}. Pass --skip-types {route.resource_type} "
                "to push without it on purpose (references to it become logical references by identifier)"
            )
            if message not in report.warnings:
                report.warnings.append(message)


def _write_provenances(
    client: FhirClient,
    capabilities: Capabilities,
    journal: Journal,
    report: PushReport,
    source: str,
    mapping_version: str,
    mappings_dir: Path | None,
) -> None:
    """This push's Provenance, and any an earlier push still owes; a failure is reported, not raised."""
    pack = load_pack(mappings_dir)
    template = load_provenance_template(mappings_dir)
    for record in journal.awaiting_provenance(report.server):
        targets = journal.targets(record.push_id)
        if not targets:
            continue
        resource = provenance_resource(
            record.push_id,
            targets,
            source=record.source if record.push_id != report.push_id else source,
            mapping_version=mapping_version,
            pack=pack,
            template=template,
        )
        try:
            reference = write_provenance(client, capabilities, resource, record.push_id)
        except FhirHttpError as exc:
            report.provenance_missing.append(
                f"the Provenance of push {record.push_id} ({len(targets)} targets) was not written: {exc}; "
                "the next push writes it"
            )
            continue
        journal.provenance_written(record.push_id, reference)
        if record.push_id == report.push_id:
            report.provenance = reference
        else:
            report.earlier_provenance.append(reference)
