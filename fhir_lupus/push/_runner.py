"""Push mapped resources to a FHIR server: planned from the server, applied in accepted sizes, resumable.

1. Read the CapabilityStatement and give every type a route (``_routes``, through ``_planner``): how its
   business key is looked up and how new resources are written; a type the server cannot take is skipped with
   one warning.
2. For each window (whole subjects up to ``BATCH_SIZE`` resources, read lazily from the mapper; referenced
   ones first): ask the journal what it knows, look the rest up on the server in OR-list searches, and plan
   (``_plan``): create, update, unchanged, conflict, held back or skipped.
3. Apply the plan (``_apply``): by-id writes for everything whose server id is known, new ones by PUT to a
   key-derived id (or conditionally); chunk sizes adapt to what the server accepts and are remembered per
   server. Up to ``concurrency`` windows are applied at the same time, each in its own thread and
   transactions, while the next subject is mapped and planned: a server's transactions are what a push
   waits for, and a server on several cores runs several at once (``_lanes``).
4. One Provenance for the push (and for any earlier push whose Provenance is still missing).
A push that is killed, or stopped by a server failure, leaves the journal with what the server confirmed;
the next push looks the rest up before writing, so nothing is written twice.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from fhir_lupus._resource import Resource
from fhir_lupus.audit import EMPTY_DIGEST, DigestBuilder
from fhir_lupus.bundle import DEPENDENCY_ORDER, dependency_sorted
from fhir_lupus.client import Capabilities, FhirClient, FhirHttpError, WriteStrategy
from fhir_lupus.journal import Journal
from fhir_lupus.push._apply import Applier, ApplyCounts, Problem, WriteLimits
from fhir_lupus.push._lanes import Lanes
from fhir_lupus.push._plan import Plan
from fhir_lupus.push._planner import Planner
from fhir_lupus.push._provenance import load_provenance_template, provenance_resource, write_provenance
from fhir_lupus.push._routes import TypeRoute
from fhir_lupus.push._settled import SettledGroup
from fhir_lupus.settings import Settings
from fhir_lupus.terminology import MappingPack

__all__ = [
    "BATCH_SIZE",
    "DEFAULT_CONCURRENCY",
    "Progress",
    "PushOptions",
    "PushReport",
    "ResourceGroups",
    "push_resources",
]

Progress = Callable[[int, int | None], None]  # done, total (None while a streamed push does not know it)
BATCH_SIZE = 1000  # resources planned and applied at a time (whole subjects gathered up to it)
# Windows written at the same time by push_trial and the CLI: HAPI JPA on 2 cores wrote subject-sized
# transactions 1.7x faster with three in flight than with one (bench/README.md).
DEFAULT_CONCURRENCY = 3


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
    # digest_of the content hashes of the resources offered (as the plans computed them), built as the push goes
    # (audit.DigestBuilder: flat memory); set when the push ends or stops, the audit entry's content_hash
    content_digest: str = EMPTY_DIGEST

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


@dataclass(frozen=True)
class PushOptions:
    """How a push writes, the same for a list of resources, a loaded trial and a streamed data directory.

    ``chunk_size`` is an upper bound: chunks shrink to what the server accepts, and the journal remembers it.
    ``strategy`` overrides the CapabilityStatement's choice (transaction, batch, individual). ``only_types`` /
    ``skip_types`` choose the types written. ``batch_size``: resources planned at a time (whole groups).
    ``concurrency``: windows written at the same time. ``new_by_id``: new resources by PUT to a key-derived id
    where the server allows it (``routes.py``); False keeps them conditional. ``progress`` gets (done, total).
    ``workers``: processes that validate a trial's mapped resources while it is pushed (``push_trial``; None: one
    per CPU, 1: in the pushing process): what is sent and refused is the same for every value.
    """

    chunk_size: int = 500
    strategy: WriteStrategy | None = None
    only_types: frozenset[str] | None = None
    skip_types: frozenset[str] = frozenset()
    batch_size: int = BATCH_SIZE
    concurrency: int = DEFAULT_CONCURRENCY
    new_by_id: bool = True
    progress: Progress | None = None
    workers: int | None = 1


@dataclass(frozen=True)
class ResourceGroups:
    """Resources that come in groups, each referring only to itself and to earlier groups: the study-level
    resources, then one group per subject, as ``iter_mapped`` yields them (``push_trial``). Consumed lazily, so a
    trial streamed from disk is never held whole. ``total``, when known, is passed to ``progress``. A
    ``SettledGroup`` is a subject ``push_trial`` did not map (its inputs unchanged, nothing changed on the
    server): counted as unchanged, its journal hashes in the audit digest, nothing planned or sent."""

    groups: Iterable[Sequence[Resource] | SettledGroup]
    total: int | None = None

    @classmethod
    def of_list(cls, resources: Iterable[Resource], size: int) -> ResourceGroups:
        """A list of resources, sorted (referenced ones first) and cut into groups of ``size``; these refer to
        each other, so a window still waits for those it refers to."""
        ordered = dependency_sorted(resources)
        return cls([ordered[start : start + size] for start in range(0, len(ordered), size)], len(ordered))


def push_resources(
    resources: Iterable[Resource] | ResourceGroups,
    client: FhirClient,
    journal: Journal,
    *,
    source: str,
    mapping_version: str,
    settings: Settings | None = None,
    options: PushOptions | None = None,
    report: PushReport | None = None,
    recheck: frozenset[tuple[str, str]] = frozenset(),
    on_plan: Callable[[Plan], None] | None = None,
) -> PushReport:
    """Plan and apply window by window (see the module docstring), as ``options`` say (``PushOptions``).

    ``resources``: a list (cut into groups of ``batch_size``, ``ResourceGroups.of_list``) or ``ResourceGroups``.
    Whole groups are gathered into windows of about ``batch_size`` resources (a larger group is a window alone,
    never cut; so is the first). ``concurrency`` windows are written at the same time: a window is planned only
    once every window it refers to is written, so the study's resources go first and subjects then in parallel.
    ``report``: filled as the push goes, so that a caller still has the counts when the push raises.
    ``settings``: the mapping pack whose matching, finality and Provenance rules apply (default:
    ``Settings.default()``). ``recheck``: (type, business key) pairs looked up even where the journal settles
    them (changed on the server since the last push, ``push_trial``); ``on_plan`` sees each window's plan before
    the window is written (``push_trial`` remembers which subject each resource is of).
    """
    pack = (settings or Settings.default()).pack
    options = options or PushOptions()
    if options.chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    if options.concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if not isinstance(resources, ResourceGroups):
        resources = ResourceGroups.of_list(resources, options.batch_size)
    progress, total_known = options.progress, resources.total
    server = client.base_url
    report = report if report is not None else PushReport()
    report.push_id, report.server = str(uuid.uuid4()), server
    planner = Planner(
        client,
        journal,
        DEPENDENCY_ORDER,
        only_types=options.only_types,
        skip_types=options.skip_types,
        pack=pack,
        warn=report.warnings.append,
        new_by_id=options.new_by_id,
        recheck=recheck,
    )
    capabilities = planner.capabilities
    report.strategy = options.strategy or capabilities.write_strategy()
    limits = WriteLimits(options.chunk_size, journal.write_limits(server))
    lanes = Lanes(options.concurrency, report, planner)
    done = 0
    lock = threading.Lock()

    def advance(count: int) -> None:
        nonlocal done
        with lock:
            done += count
            if progress:
                progress(done, total_known)

    journal.start_push(report.push_id, server, source)
    status = "failed"
    offered = DigestBuilder()

    def settled(group: SettledGroup) -> None:
        report.total += len(group.hashes)
        report.unchanged += len(group.hashes)
        offered.extend(group.hashes)
        advance(len(group.hashes))

    try:
        advance(0)
        for window in _windows(_mapped(resources.groups, settled), options.batch_size):
            report.total += len(window)
            lanes.wait_for(window)
            plan = planner.plan(window, lanes.held)
            if on_plan is not None:
                on_plan(plan)
            _record_settled(plan, journal, server, report.push_id)
            _count_plan(plan, report)
            offered.extend(item.digest for item in plan.items)
            advance(sum(1 for item in plan.items if item.action not in ("create", "update")))
            applier = Applier(
                client,
                journal,
                report.push_id,
                report.strategy,
                planner.routes,
                limits,
                counts=ApplyCounts(),
                on_written=advance,
                refused_by_id=set(lanes.refused_by_id),
            )
            lanes.start(window, plan, applier)
        lanes.finish()
        status = "completed"
        report.content_digest = offered.hexdigest()
    except Exception:
        report.content_digest = offered.hexdigest()  # a failed push's audit entry names what it had offered
        raise
    finally:
        offered.close()
        lanes.close()
        report.routes = {name: route for name, route in planner.routes.items() if name in planner.seen_types}
        report.bundle_sizes = {kind: limits.size(kind) for kind in ("conditional", "direct")}
        _warn_forced_skips(report)
        journal.finish_push(report.push_id, status, report.summary())
    _write_provenances(client, capabilities, journal, report, source, mapping_version, pack)
    if not report.complete:
        journal.finish_push(report.push_id, "completed-with-problems", report.summary())
    return report


def _mapped(
    groups: Iterable[Sequence[Resource] | SettledGroup], settled: Callable[[SettledGroup], None]
) -> Iterator[Sequence[Resource]]:
    """The groups to plan; each settled one is handed to ``settled`` as it comes (so the counts keep pace)."""
    for group in groups:
        if isinstance(group, SettledGroup):
            settled(group)
        else:
            yield group


def _windows(groups: Iterable[Sequence[Resource]], size: int) -> Iterator[list[Resource]]:
    """Groups gathered up to ``size`` resources, each window in dependency order; a larger group alone.

    A group is never cut: its parts would refer to each other, and a window that must wait for another one
    holds back every window after it (a subject's 4,000 labs are one window, written in chunks by one lane).
    The first group is a window alone: the study-level resources, which every later group refers to, so
    nothing else waits for a subject gathered with them.
    """
    window: list[Resource] = []
    for number, group in enumerate(groups):
        if window and (number == 1 or len(window) + len(group) > size):
            yield dependency_sorted(window)
            window = []
        window.extend(group)
    if window:
        yield dependency_sorted(window)


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
    pack: MappingPack,
) -> None:
    """This push's Provenance, and any an earlier push still owes; a failure is reported, not raised."""
    template = load_provenance_template(pack)
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
