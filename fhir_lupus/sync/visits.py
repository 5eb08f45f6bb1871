"""Protocol visit windows for pulled results: which visit a collection date belongs to, if any."""

from __future__ import annotations

from datetime import date

from fhir_lupus.model.study import StudyDefinition, nearest_month

__all__ = ["assign_visit"]


def assign_visit(collected: str, anchor: date | None, study: StudyDefinition, window: int) -> tuple[str, str, str]:
    """(visit code, ``in-window`` or ``outside-windows``, days from the due date) for a collection date.

    ``anchor`` is the subject's day 0 (``protocol.visit_months.anchor``). The month whose due date under the
    study's month rule is nearest is chosen; the result belongs to that visit when it falls within ``window``
    days of its due date.
    """
    if not collected or anchor is None:
        return "", "outside-windows", ""
    day = date.fromisoformat(collected[:10])
    month = nearest_month(anchor, day, study.protocol.visit_months.rule)
    offset = (day - study.due_date(anchor, month)).days
    codes = {visit.month: visit.code for visit in study.visits()}
    if abs(offset) <= window and month in codes:
        return codes[month], "in-window", str(offset)
    return "", "outside-windows", str(offset)
