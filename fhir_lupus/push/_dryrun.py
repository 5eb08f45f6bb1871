"""Dry run: the push plan, rendered, from the server's current state; nothing is written.

The same planner as push, in ``verify`` mode: every resource is looked up (OR-lists by business key) and
compared with the server copy, whatever the journal's hashes say. Server-managed elements (id, meta, text)
are ignored; references are compared through the ids the look-ups found. The journal, when given, supplies
the server ids push would use: for references to resources outside a batch, and for types the server cannot
search (their look-up is a read of that id).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from fhir_lupus._resource import Resource
from fhir_lupus.bundle import dependency_sorted
from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.push._plan import Action, diff_paths
from fhir_lupus.push._planner import Planner
from fhir_lupus.push._routes import TypeRoute
from fhir_lupus.push._runner import BATCH_SIZE
from fhir_lupus.settings import Settings

__all__ = ["DryRunItem", "DryRunReport", "diff_paths", "dry_run"]


@dataclass(frozen=True)
class DryRunItem:
    resource_type: str
    business_key: str
    action: Action
    server_ids: tuple[str, ...] = ()
    diffs: tuple[str, ...] = ()
    reason: str = ""


@dataclass
class DryRunReport:
    items: list[DryRunItem] = field(default_factory=list)
    routes: dict[str, TypeRoute] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def counts(self) -> Counter[str]:
        return Counter(item.action for item in self.items)


def dry_run(
    resources: Iterable[Resource],
    client: FhirClient,
    *,
    journal: Journal | None = None,
    only_types: frozenset[str] | None = None,
    skip_types: frozenset[str] = frozenset(),
    batch_size: int = BATCH_SIZE,
    settings: Settings | None = None,
) -> DryRunReport:
    """The plan of ``resources`` against the server (see the module docstring); ``settings``: the mapping pack
    whose matching and finality rules apply (default: ``Settings.default()``)."""
    ordered = dependency_sorted(resources)
    report = DryRunReport()
    planner = Planner(
        client,
        journal,
        {r["resourceType"] for r in ordered},
        only_types=only_types,
        skip_types=skip_types,
        pack=(settings or Settings.default()).pack,
        verify=True,
        warn=report.warnings.append,
    )
    for start in range(0, len(ordered), batch_size):
        plan = planner.plan(ordered[start : start + batch_size])
        report.items.extend(
            DryRunItem(i.resource_type, i.key, i.action, i.server_ids, i.diffs, i.reason) for i in plan.items
        )
    report.routes = planner.routes
    return report
