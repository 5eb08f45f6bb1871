"""Protocol visit windows for pulled results: which visit a collection date belongs to, if any."""

from __future__ import annotations

from datetime import date

from fhir_lupus.model.study import DAYS_PER_MONTH, StudyDefinition, due_date

__all__ = ["assign_visit"]


def assign_visit(collected: str, anchor: date | None, study: StudyDefinition, window: int) -> tuple[str, str, str]:
    """(visit code, ``in-window`` or ``outside-windows``, days from the due date) for a collection date.

    ``anchor`` is the subject's day 0 (the baseline visit). The nearest protocol month is chosen; the result
    belongs to that visit when it falls within ``window`` days of its due date.
    """
    if not collected or anchor is None:
        return "", "outside-windows", ""
    day = date.fromisoformat(collected[:10])
    elapsed = (day - anchor).days
    month = max(0, round(elapsed / DAYS_PER_MONTH))
    offset = (day - due_date(anchor, month)).days
    codes = {visit.month: visit.code for visit in study.visits()}
    if abs(offset) <= window and month in codes:
        return codes[month], "in-window", str(offset)
    return "", "outside-windows", str(offset)
