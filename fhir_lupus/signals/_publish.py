"""Publishing signals to a FHIR server: each one a DetectedIssue, written once, audited like push and pull.

Idempotent by search-then-write on the signal's business identifier: a DetectedIssue found with the same content
is left alone, one found with other content (a definition's wording changed) is updated in place, and a new one
is created with ``If-None-Exist`` on that identifier, so a retried create cannot make a twin. A second publish of
the same signals therefore writes nothing. The DetectedIssue's patient is the server's Patient of the subject: the
subject of the Observation that raised the signal, else the ``individual`` of the subject's ResearchSubject
(found by its study identifier); a subject neither names is published with its study id in words only and
listed in ``PublishReport.unresolved``. Each resource is validated (R4 model and invariants) before it is
sent, as push validates its own. Before any request, the site profile is checked as push checks it: a
server not on loopback is refused while our identifier systems are the example profile's placeholders (the
refusal is audited too: the attempt was made).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fhir_lupus.audit import AuditLog, append_run, digest_of
from fhir_lupus.client import FhirClient
from fhir_lupus.journal import Journal
from fhir_lupus.push import content_hash
from fhir_lupus.settings import Settings
from fhir_lupus.signals._definitions import load_flare_definitions
from fhir_lupus.signals._evaluate import Signal
from fhir_lupus.signals._output import signal_resource
from fhir_lupus.validation import validate_resource

__all__ = ["AUDIT_KIND", "PublishReport", "publish_signals"]

AUDIT_KIND = "signals-publish"
_SERVER_OWNED = ("id", "meta", "text")


@dataclass
class PublishReport:
    """What a publish did, per signal key."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)  # subjects whose Patient the server did not name

    @property
    def total(self) -> int:
        return len(self.created) + len(self.updated) + len(self.unchanged)

    @property
    def written(self) -> int:
        return len(self.created) + len(self.updated)


def publish_signals(
    client: FhirClient,
    signals: Sequence[Signal],
    *,
    settings: Settings | None = None,
    study: str,
    journal: Journal,
    audit_log: AuditLog = None,
) -> PublishReport:
    """Write each signal as a DetectedIssue (see the module docstring); one audit entry per call, complete or
    failed (``audit_log`` None: the journal's audit log; False: none). SiteProfileError before any request when
    the placeholder systems would go to a server that is not on loopback."""
    settings = settings or Settings.default()
    pack = settings.pack
    report = PublishReport()
    hashes: list[str] = []

    def audit(outcome: str) -> None:
        counts = {"total": report.total, "created": len(report.created), "updated": len(report.updated)}
        counts["unchanged"] = len(report.unchanged)
        append_run(
            audit_log,
            journal,
            AUDIT_KIND,
            server=client.base_url,
            counts=counts,
            digest=digest_of(hashes),
            outcome=outcome,
            details={"study": study, "signals": str(len(signals))},
            mapping_version=pack.project.mapping_version,
        )

    try:
        settings.refuse_placeholders(client.base_url, "signals publish")
        definitions = load_flare_definitions(pack)
        patients = _Patients(client, pack.identifier_system("subject", study=study))
        for signal in signals:
            patient = patients.of(signal)
            if patient is None and signal.subject_id not in report.unresolved:
                report.unresolved.append(signal.subject_id)
            resource = signal_resource(signal, pack, definitions, study=study, patient=patient)
            validate_resource(resource, "R4", validation=settings.validation, pack=pack)  # as push checks its own
            hashes.append(content_hash(resource))
            _write(client, resource, signal.key, report)
    except Exception as exc:
        audit(f"failed: {type(exc).__name__}")
        raise
    audit("complete")
    return report


class _Patients:
    """The server's Patient of each subject, looked up once a subject (see the module docstring)."""

    def __init__(self, client: FhirClient, subject_system: str) -> None:
        self.client = client
        self.subject_system = subject_system
        self.known: dict[str, str | None] = {}

    def of(self, signal: Signal) -> str | None:
        if signal.subject_id not in self.known:
            self.known[signal.subject_id] = self._observation_subject(signal) or self._research_subject(signal)
        return self.known[signal.subject_id]

    def _observation_subject(self, signal: Signal) -> str | None:
        if not signal.observation_id:
            return None
        reference = (self.client.read("Observation", signal.observation_id).get("subject") or {}).get("reference")
        return reference if isinstance(reference, str) and reference.startswith("Patient/") else None

    def _research_subject(self, signal: Signal) -> str | None:
        query = {"identifier": f"{self.subject_system}|{signal.subject_id}"}
        for found in self.client.search("ResearchSubject", query):
            reference = (found.get("individual") or {}).get("reference")
            if isinstance(reference, str) and reference.startswith("Patient/"):
                return reference
        return None


def _write(client: FhirClient, resource: dict[str, Any], key: str, report: PublishReport) -> None:
    identifier = resource["identifier"][0]
    query = f"{identifier['system']}|{identifier['value']}"
    found = next(client.search("DetectedIssue", {"identifier": query}), None)
    wanted = _content(resource)
    if found is None:
        client.conditional_create(wanted, f"identifier={query}")
        report.created.append(key)
    elif _content(found) == wanted:
        report.unchanged.append(key)
    else:
        client.put(f"DetectedIssue/{found['id']}", {**wanted, "id": found["id"]})
        report.updated.append(key)


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource without what the server owns (its id, meta, generated narrative)."""
    return {k: v for k, v in resource.items() if k not in _SERVER_OWNED}
