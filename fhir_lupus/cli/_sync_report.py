"""How push, the dry run and pull tell what they did: the lines a data manager reads after a run (shared by
``push``, ``pull``, ``registry submit`` and ``demo``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from rich.table import Table

from fhir_lupus.cli._output import console, listed, outcome
from fhir_lupus.pull import PulledLab, PullResult

if TYPE_CHECKING:  # named in annotations only: a pull does not import push
    from fhir_lupus.push import DryRunReport, PushReport

__all__ = ["render_dry_run", "render_pull", "render_push", "subject_table"]


def render_push(result: PushReport, *, limit: int = 20) -> None:
    """The summary and what was not written (shown under -q too: the result and its errors), warnings and
    routes; ``limit`` problems, all of them under -v."""
    outcome.print(f"push {result.push_id} to {result.server}: {result.summary()}", highlight=False)
    if result.written == 0 and not result.problems:
        console.print("nothing changed since the last push: nothing was sent")
    for route in result.routes.values():
        if route.skipped or route.lookup != "search" or not route.conditional:
            console.print(f"route {route.describe()}", highlight=False)
    for warning in result.warnings:
        console.print(f"[yellow]warning[/yellow] {warning}", highlight=False)
    if result.provenance:
        console.print(f"provenance: {result.provenance}")
    for reference in result.earlier_provenance:
        console.print(f"provenance of an earlier push: {reference}")
    for missing in result.provenance_missing:
        outcome.print(f"[red]provenance missing[/red] {missing}", highlight=False)
    shown = [p for p in result.problems if p.kind != "skipped"]
    for problem in shown[: listed(limit)]:
        outcome.print(
            f"[red]{problem.kind}[/red] {problem.resource_type} {problem.business_key}: "
            f"{problem.reason}" + (f" (server ids: {', '.join(problem.server_ids)})" if problem.server_ids else ""),
            highlight=False,
        )
    if len(shown) > len(shown[: listed(limit)]):
        outcome.print(f"... and {len(shown) - limit} more not written (see the summary counts; -v lists them)")


def render_dry_run(report: DryRunReport, show: int) -> None:
    counts = report.counts
    actions = ("create", "update", "unchanged", "conflict", "held-back", "skipped")
    outcome.print("dry run (nothing written): " + ", ".join(f"{counts.get(action, 0)} {action}" for action in actions))
    for warning in report.warnings:
        console.print(f"[yellow]warning[/yellow] {warning}", highlight=False)
    for item in [i for i in report.items if i.action == "conflict"]:
        console.print(
            f"[red]conflict[/red] {item.resource_type} {item.business_key}: server ids {', '.join(item.server_ids)}",
            highlight=False,
        )
    for item in [i for i in report.items if i.action == "held-back"][:show]:
        console.print(f"held back {item.resource_type} {item.business_key}: {item.reason}", highlight=False)
    for item in [i for i in report.items if i.action == "update"][:show]:
        console.print(
            f"update {item.resource_type}/{item.server_ids[0]} ({item.business_key}): {', '.join(item.diffs)}",
            highlight=False,
        )


def render_pull(result: PullResult, *, limit: int = 20) -> None:
    rows, unmapped = result.outputs or (None, None)
    outcome.print(
        f"pulled {len(result.rows)} new or changed lab rows of {result.subjects} subjects "
        f"({result.outside_windows} outside every visit window; {result.unchanged} fetched again unchanged); "
        f"{result.total_rows} rows in {rows}",
        highlight=False,
    )
    console.print(
        f"{len(result.unmapped)} results set aside in this pull ({result.total_unmapped} in all) -> {unmapped}",
        highlight=False,
    )
    if result.skipped_subjects:
        by_status = ", ".join(f"{status} {count}" for status, count in result.skipped_subjects.items())
        console.print(
            f"skipped {sum(result.skipped_subjects.values())} ResearchSubjects not enrolled ({by_status}): "
            "their labs are not pulled (mappings/fhir/lifecycle.yaml enrolled)",
            highlight=False,
        )
    if result.ignored_patients:
        console.print(
            f"ignored {result.ignored_patients} Patient id(s) asked for that are no enrolled subject of the study",
            highlight=False,
        )
    for removal in result.removed[: listed(limit)]:
        console.print(
            f"[yellow]removed[/yellow] row {removal.result_id or removal.observation_id} of {removal.subject_id} "
            f"(Observation/{removal.observation_id}): {removal.reason}",
            highlight=False,
        )
    if len(result.removed) > len(result.removed[: listed(limit)]):
        console.print(f"... and {len(result.removed) - limit} more rows removed (-v lists them)")
    for note in result.fallbacks:
        console.print(f"[yellow]note[/yellow] {note}", highlight=False)
    if (export := result.bulk) is not None:
        how = "resumed from the journal" if export.resumed else "kicked off"
        console.print(
            f"bulk export ({export.level} level, {how}): {export.polls} status request(s), {export.waited:.0f} s "
            f"waited, {export.files} file(s) ({export.reused_files} from an interrupted run), {export.bytes:,} bytes; "
            f"{export.others} results of other Patients left out",
            highlight=False,
        )
    console.print(f"since: {result.since or 'the beginning'}; high-water mark now {result.high_water or '-'}")


def subject_table(rows: Iterable[PulledLab]) -> Table:
    table = Table(title="Pulled labs per subject", title_justify="left")
    for column in ("subject", "rows", "visits", "outside windows"):
        table.add_column(column, justify="left" if column == "subject" else "right")
    subjects: dict[str, list[PulledLab]] = {}
    for row in rows:
        subjects.setdefault(row.subject_id, []).append(row)
    for subject_id, items in sorted(subjects.items()):
        visits = {row.visit_code for row in items if row.visit_code}
        outside = sum(1 for row in items if row.window != "in-window")
        table.add_row(subject_id, str(len(items)), str(len(visits)), str(outside))
    return table
