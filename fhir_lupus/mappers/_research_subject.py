"""Subject -> ResearchSubject: the subject's participation in the study (R4 shape).

``status`` is the current status (subjects.csv), ``period`` runs from the enrolment date (``enrolled_on``: with a
status history, the date of its first on-study status) to the end of participation: the date the subject left
(``off_study_on``, or the history's off-study / withdrawn row) or died, whichever came first, as the subject's
timeline resolves it (fhir_lupus/model/_timeline.py; pull reads it back to stop assigning results to visits). R4
has no element for the history itself: each status_history.csv row is one complex project extension (status,
date, reason); ``r5.to_r5`` turns them into ResearchSubject.progress.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from fhir_lupus.mappers._context import MappingContext, Resource
from fhir_lupus.mappers._patient import patient_identifier
from fhir_lupus.model import StatusChange, Subject, load_lifecycle_rules

__all__ = ["map_research_subject", "status_history_extension"]


def map_research_subject(
    subject: Subject, ctx: MappingContext, history: Sequence[StatusChange] = (), *, end: date | None = None
) -> Resource:
    """``end``: the end of participation of the subject's timeline (without one: subjects.csv or the history)."""
    left = history[-1] if history and history[-1].status in load_lifecycle_rules(ctx.pack).left_study else None
    period: dict[str, Any] = {"start": subject.enrolled_on.isoformat()}
    end = end or subject.off_study_on or (left.on if left else None)
    if end:
        period["end"] = end.isoformat()
    resource: Resource = {
        "resourceType": "ResearchSubject",
        "id": ctx.research_subject_ref(subject.subject_id)["reference"].split("/")[1],
        "identifier": [ctx.identifier("subject", subject.subject_id)],
        "status": subject.status,
        "period": period,
        "study": ctx.study_ref(),
        "individual": ctx.patient_ref(patient_identifier(subject, ctx)),
        "assignedArm": subject.arm,
    }
    extensions = []
    reason = subject.off_study_reason or (left.reason if left else None)
    if reason:
        # R4 ResearchSubject has no element for it (R5 has progress.reason): a project extension keeps it.
        extensions.append({"url": ctx.pack.extension_url("off_study_reason"), "valueString": reason})
    extensions += [status_history_extension(change, ctx) for change in history]
    if extensions:
        resource["extension"] = extensions
    return resource


def status_history_extension(change: StatusChange, ctx: MappingContext) -> dict[str, Any]:
    """One transition as a complex extension: ``status`` (code), ``date``, ``reason`` (when given)."""
    parts: list[dict[str, Any]] = [
        {"url": "status", "valueCode": change.status},
        {"url": "date", "valueDate": change.on.isoformat()},
    ]
    if change.reason:
        parts.append({"url": "reason", "valueString": change.reason})
    return {"url": ctx.pack.extension_url("status_history"), "extension": parts}
