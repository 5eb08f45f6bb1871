"""Trial-level push and dry run: a ``TrialSource`` (fhir_lupus/source.py) mapped for the server and sent, audited.

The steps the CLI, the demo and the tests share: whatever the trial's size, it is mapped a chunk of subjects at a
time, as the source hands them out, and pushed subject by subject as it maps. The server is asked first
(``reach_server``, or ``push_trial``'s own first request), so every attempt, even one whose first request fails,
is in the audit trail.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from fhir_lupus._resource import Resource
from fhir_lupus.audit import AuditLog, append_run
from fhir_lupus.bundle import business_key
from fhir_lupus.client import FhirClient, UnsupportedInteraction
from fhir_lupus.journal import Journal
from fhir_lupus.pipeline import map_trial, stream_trial
from fhir_lupus.push._dryrun import DryRunReport, dry_run
from fhir_lupus.push._plan import content_hash
from fhir_lupus.push._repush import Repush
from fhir_lupus.push._runner import PushOptions, PushReport, ResourceGroups, push_resources
from fhir_lupus.settings import Settings
from fhir_lupus.source import TrialSource
from fhir_lupus.validation import FhirVersion

__all__ = ["dry_run_trial", "push_trial", "reach_server", "server_fhir_version"]


def _push_counts(report: PushReport) -> dict[str, int]:
    return {
        "total": report.total,
        "created": report.created,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "linked": report.linked,
        **{kind.replace("-", "_"): report.count(kind) for kind in ("conflict", "held-back", "refused", "skipped")},
    }


def server_fhir_version(client: FhirClient) -> FhirVersion:
    """R4 or R5, from the server's CapabilityStatement.fhirVersion (``FhirClient.reach``: it is the first request
    of a push, a dry run and a registry submission, and a wrong URL fails at once)."""
    version = client.reach().fhir_version
    if version.startswith("4.0"):
        return "R4"
    if version.startswith("5."):
        return "R5"
    raise UnsupportedInteraction(f"server speaks FHIR {version or '(unstated)'}; fhir_lupus writes R4 (4.0.x) or R5")


def reach_server(
    client: FhirClient, journal: Journal, *, settings: Settings | None = None, audit_log: AuditLog = None
) -> FhirVersion:
    """The server's FHIR version, asked before the trial is loaded (the CLI's push does): a wrong URL, a TLS
    problem, refused credentials or an answer that is not FHIR fail in a moment, not after the whole trial was
    read and checked. A failure is in the audit trail as a failed push, as ``push_trial`` records one."""
    try:
        return server_fhir_version(client)
    except Exception as exc:
        _failed(_audit(audit_log, journal, client, settings), exc, PushReport())
        raise


def _audit(audit_log: AuditLog, journal: Journal, client: FhirClient, settings: Settings | None) -> Callable[..., None]:
    """``append_run`` for a push entry of this server and mapping pack: counts, digest, outcome, details to come."""
    version = (settings or Settings.default()).pack.project.mapping_version
    return functools.partial(append_run, audit_log, journal, "push", server=client.base_url, mapping_version=version)


def _failed(audit: Callable[..., None], exc: Exception, pushed: PushReport) -> None:
    """The entry of a push that stopped on ``exc``: the digest of what it had offered before it stopped."""
    digest = pushed.content_digest
    audit(counts={"total": pushed.total}, digest=digest, outcome=f"failed: {type(exc).__name__}", details={})


def push_trial(
    trial: TrialSource,
    client: FhirClient,
    journal: Journal,
    *,
    source: str,
    settings: Settings | None = None,
    options: PushOptions | None = None,
    audit_log: AuditLog = None,
) -> PushReport:
    """Map the trial for the server's FHIR version subject by subject and push it as it maps (``push_resources``
    with ``ResourceGroups``): a chunk of subjects at a time, so memory stays flat whatever the trial's size.
    Records the map refuses go to the trial's report. ``source``: the push's source, as its Provenance names it.

    A resource the journal holds with the same content as confirmed on this server is not validated again
    (``iter_mapped``'s ``trusted``): it was validated when it was sent, and nothing is sent for it now.
    Every push, complete, incomplete or failed, appends one entry to the audit log (``audit_log``): counts,
    outcome, and ``digest_of`` the content hashes of the mapped resources offered to the server (for a push
    that failed: of those offered before it stopped). ``settings``: the mapping pack and the validation path of
    the map (default: ``Settings.default()``).

    Before anything is sent, the site profile is checked (SiteProfileError): a server not on loopback is refused
    while its systems are example placeholders, and a system changed since the last push to this server without
    its old value recorded as superseded is refused; a push that wrote records the systems it wrote under.

    A subject whose inputs did not change since its resources were all confirmed on this server, and none of
    whose resources changed there since the last complete push, is not mapped: its resources are unchanged as
    the journal holds them (push/_repush.py).
    """
    settings = settings or Settings.default()
    audit = _audit(audit_log, journal, client, settings)
    pushed = PushReport()
    repush = Repush.off()
    with client.server_clock() as clock:  # the push's start on the server's clock: the next push's look
        try:  # a refusal of the site profile is audited too: the attempt was made
            settings.refuse_placeholders(client.base_url, "push")
            settings.refuse_site_change(journal.site_systems(client.base_url), client.base_url)
            fhir_version = server_fhir_version(client)  # the first request, inside the audited block
            repush = Repush.prepare(
                trial, client, journal, settings=settings, options=options, fhir_version=fhir_version, report=pushed
            )
            batches = stream_trial(
                trial,
                fhir_version=fhir_version,
                settings=settings,
                trusted=_confirmed_on(journal, client.base_url),
                skip=repush.skip,
                workers=(options or PushOptions()).workers,
            )
            push_resources(
                ResourceGroups(repush.groups(batches)),
                client,
                journal,
                source=source,
                mapping_version=settings.pack.project.mapping_version,
                settings=settings,
                options=options,
                report=pushed,
                recheck=repush.recheck,
                on_plan=repush.planned,
            )
        except Exception as exc:
            repush.finish(pushed, clock, succeeded=False)
            _record_site(journal, client.base_url, pushed, settings)
            _failed(audit, exc, pushed)
            raise
        repush.finish(pushed, clock, succeeded=True)
    _record_site(journal, client.base_url, pushed, settings)
    details = {"push_id": pushed.push_id, "strategy": str(pushed.strategy or "")}
    if pushed.provenance:
        details["provenance"] = pushed.provenance
    outcome = "complete" if pushed.complete else "incomplete"
    # the plans hashed every resource offered once already: the digest is made of those hashes
    audit(counts=_push_counts(pushed), digest=pushed.content_digest, outcome=outcome, details=details)
    return pushed


def _record_site(journal: Journal, server: str, pushed: PushReport, settings: Settings) -> None:
    """The systems of the site profile, once a push wrote (or linked) anything under them on ``server``."""
    if pushed.written or pushed.linked:
        journal.set_site_systems(server, settings.pack.site_systems(derived=True))


def _confirmed_on(journal: Journal, server: str) -> Callable[[Resource], bool] | None:
    """True for a resource whose exact content the journal holds as confirmed on ``server``; None when the journal
    holds nothing confirmed there (a first push): no question per resource, under the journal's lock, while the
    push's own threads record what the server confirmed (issue 25: 2.8 s of waiting at 20 subjects)."""
    if not journal.holds_confirmed(server):
        return None

    def confirmed(resource: Resource) -> bool:
        kind = str(resource["resourceType"])
        return journal.confirmed_hash(server, kind, business_key(resource)) == content_hash(resource)

    return confirmed


def dry_run_trial(
    trial: TrialSource,
    client: FhirClient,
    *,
    journal: Journal | None = None,
    settings: Settings | None = None,
    only_types: frozenset[str] | None = None,
    skip_types: frozenset[str] = frozenset(),
) -> DryRunReport:
    """What ``push_trial`` would do, from the server's current state; writes nothing. The trial is mapped whole
    (``map_trial``, a chunk at a time) and planned in windows, as ``dry_run`` plans a list."""
    result = map_trial(trial, fhir_version=server_fhir_version(client), settings=settings)
    return dry_run(
        result.resources,
        client,
        journal=journal,
        only_types=only_types,
        skip_types=skip_types,
        settings=settings,
    )
