"""Sync with FHIR servers: push (plan, apply, journal, provenance), dry run, and lab pull."""

from fhir_lupus.sync.apply import Problem
from fhir_lupus.sync.bulk import BulkOptions, BulkSummary
from fhir_lupus.sync.dryrun import DryRunItem, DryRunReport, dry_run
from fhir_lupus.sync.journal import Journal, JournalEntry
from fhir_lupus.sync.plan import Match, Plan, PlanItem, content_hash, plan_batch
from fhir_lupus.sync.pull import PullResult, fetch_labs, pull_labs
from fhir_lupus.sync.pullstore import PullStore, Removal, unmapped_path, write_rows
from fhir_lupus.sync.push import PushOptions, PushReport, push_groups, push_resources
from fhir_lupus.sync.reverse import PulledLab, UnmappedResult
from fhir_lupus.sync.routes import TypeRoute, plan_routes
from fhir_lupus.sync.workflow import (
    dry_run_trial,
    pull_study,
    push_directory,
    push_trial,
    server_fhir_version,
)

__all__ = [
    "BulkOptions",
    "BulkSummary",
    "DryRunItem",
    "DryRunReport",
    "Journal",
    "JournalEntry",
    "Match",
    "Plan",
    "PlanItem",
    "Problem",
    "PullResult",
    "PullStore",
    "PulledLab",
    "PushOptions",
    "PushReport",
    "Removal",
    "TypeRoute",
    "UnmappedResult",
    "content_hash",
    "dry_run",
    "dry_run_trial",
    "fetch_labs",
    "plan_batch",
    "plan_routes",
    "pull_labs",
    "pull_study",
    "push_directory",
    "push_groups",
    "push_resources",
    "push_trial",
    "server_fhir_version",
    "unmapped_path",
    "write_rows",
]
