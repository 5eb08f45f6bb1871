"""Push: a trial's resources onto a FHIR server, idempotent, resumable and audited.

The path of a push (docs/architecture.md): ``_routes`` decides how each type is found on the server;
``_plan`` compares each resource with the journal (pure); ``_lookup`` asks the server what the journal does
not know; ``_planner`` plans batch after batch for one server with them; ``_apply`` writes transactions and
reads the answers, ``_lanes`` several windows at once; ``_provenance`` records the push on the server;
``_runner`` drives one window after another; ``_trial`` is the entry for a ``TrialSource`` (audit, batches);
``_dryrun`` is the same plan without writes.
"""

from fhir_lupus.push._apply import Problem
from fhir_lupus.push._dryrun import DryRunItem, DryRunReport, dry_run
from fhir_lupus.push._plan import Match, Plan, PlanItem, content_hash, plan_batch
from fhir_lupus.push._routes import TypeRoute, plan_routes
from fhir_lupus.push._runner import (
    DEFAULT_CONCURRENCY,
    Progress,
    PushOptions,
    PushReport,
    ResourceGroups,
    push_resources,
)
from fhir_lupus.push._trial import dry_run_trial, push_trial, reach_server, server_fhir_version

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DryRunItem",
    "DryRunReport",
    "Match",
    "Plan",
    "PlanItem",
    "Problem",
    "Progress",
    "PushOptions",
    "PushReport",
    "ResourceGroups",
    "TypeRoute",
    "content_hash",
    "dry_run",
    "dry_run_trial",
    "plan_batch",
    "plan_routes",
    "push_resources",
    "push_trial",
    "reach_server",
    "server_fhir_version",
]
