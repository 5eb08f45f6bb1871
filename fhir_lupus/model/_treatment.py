"""The study treatment in pass 3 of the loader: procedures against the protocol, adverse events against them.

Each completed MSC infusion needs a completed cyclophosphamide pretreatment before it, within the protocol's
``pretreatment_to_infusion_hours`` (a ``protocol-deviation`` when not); a procedure dated outside the subject's
timeline is refused. An adverse event that suspects a procedure refused here is refused too, naming its line, and
its own dates are checked against the subject's timeline (fhir_lupus/model/_timeline.py).
"""

from __future__ import annotations

from collections import defaultdict

from fhir_lupus.model._adverse_events import CheckedAdverseEvent
from fhir_lupus.model._edit_checks import Flags
from fhir_lupus.model._entities import TreatmentProcedure
from fhir_lupus.model._records import LoadReport, Located
from fhir_lupus.model._study import StudyDefinition
from fhir_lupus.model._timeline import DateChecks

__all__ = ["check_procedures", "events_on_timeline"]

PROCEDURES = "procedures.csv"


def check_procedures(
    rows: list[Located[TreatmentProcedure]], study: StudyDefinition, dates: DateChecks, flags: Flags
) -> list[Located[TreatmentProcedure]]:
    """The procedures dated within the timeline, each infusion checked against its pretreatment (a query)."""
    accepted = [
        row
        for row in rows
        if not dates.dated(
            row,
            row.record.subject_id,
            row.record.started_at.date(),
            "started_at",
            row.record.kind,
            from_enrolment=True,
        )
    ]
    window = study.protocol.pretreatment_to_infusion_hours
    by_subject: dict[str, list[Located[TreatmentProcedure]]] = defaultdict(list)
    for row in accepted:
        by_subject[row.record.subject_id].append(row)
    for subject_id, procedures in sorted(by_subject.items()):
        pretreatments = [
            p for p in procedures if p.record.kind == "cyclophosphamide_pretreatment" and p.record.status == "completed"
        ]
        for infusion in (p for p in procedures if p.record.kind == "msc_infusion" and p.record.status == "completed"):
            started = infusion.record.started_at
            before = [p for p in pretreatments if p.record.started_at <= started]
            if not before:
                flags.raise_(
                    "protocol-deviation",
                    infusion,
                    "started_at",
                    f"{subject_id}: MSC infusion without a prior cyclophosphamide pretreatment",
                )
                continue
            latest = max(before, key=lambda p: p.record.started_at)
            hours = (started - latest.record.started_at).total_seconds() / 3600
            if not window.min <= hours <= window.max:
                flags.raise_(
                    "protocol-deviation",
                    infusion,
                    "started_at",
                    f"{subject_id}: MSC infusion {hours:.1f} h after the cyclophosphamide "
                    "pretreatment "
                    f"(line {latest.line}); protocol: {window.min:g}-{window.max:g} h",
                )
    return accepted


def events_on_timeline(
    events: list[Located[CheckedAdverseEvent]],
    procedures: list[Located[TreatmentProcedure]],
    dates: DateChecks,
    report: LoadReport,
) -> list[Located[CheckedAdverseEvent]]:
    """The accepted events whose suspected treatments are still accepted, checked against the timeline."""
    given = {row.record.procedure_id for row in procedures}
    refused_lines = {r.row.get("procedure_id", "").strip(): r.line for r in report.rejects if r.file == PROCEDURES}
    accepted = []
    for row in events:
        event = row.record.event
        gone = [pid for _, pid in row.record.suspects if pid not in given]
        if gone:
            listed = ", ".join(f"{pid} ({PROCEDURES}:{refused_lines.get(pid, '?')})" for pid in gone)
            report.reject(row, "related_to", f"the suspected treatment {listed} was refused")
            continue
        if dates.adverse_event(Located(event, row.file, row.line, row.row)):
            continue
        accepted.append(row)
    return accepted
