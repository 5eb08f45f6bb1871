"""Sync with FHIR servers: push (journal, chunks, conflicts, provenance), dry run, and lab pull."""

from fhir_lupus.sync.dryrun import DryRunItem, DryRunReport, dry_run
from fhir_lupus.sync.journal import Journal, JournalEntry
from fhir_lupus.sync.pull import PulledLab, PullResult, UnmappedResult, pull_labs, write_rows
from fhir_lupus.sync.push import Conflict, PushReport, content_hash, push_resources
from fhir_lupus.sync.workflow import dry_run_trial, pull_study, push_trial, server_fhir_version

__all__ = [
    "Conflict",
    "DryRunItem",
    "DryRunReport",
    "Journal",
    "JournalEntry",
    "PullResult",
    "PulledLab",
    "PushReport",
    "UnmappedResult",
    "content_hash",
    "dry_run",
    "dry_run_trial",
    "pull_labs",
    "pull_study",
    "push_resources",
    "push_trial",
    "server_fhir_version",
    "write_rows",
]
