"""Protocol visit windows for pulled results: which visit a collection date belongs to, if any."""

from __future__ import annotations

from datetime import date

from fhir_lupus.model import StudyDefinition, nearest_month

__all__ = ["assign_visit"]

# month -> visit code per study definition: expanding the schedule took most of reverse mapping's time when
# it was done again for every pulled result. Keyed by id, holding the study so that the id stays its own.
_CODES: dict[int, tuple[StudyDefinition, dict[int, str]]] = {}


def assign_visit(
    collected: str, anchor: date | None, study: StudyDefinition, window: int, *, end: date | None = None
) -> tuple[str, str, str]:
    """(visit code, ``in-window``, ``outside-windows`` or ``after-end``, days from the due date) for a collection
    date.

    ``anchor`` is the subject's day 0 (``protocol.visit_months.anchor``). The month whose due date under the
    study's month rule is nearest is chosen; the result belongs to that visit when it falls within ``window``
    days of its due date. ``end`` is the end of the subject's participation (ResearchSubject.period.end, the
    subject's timeline: leaving the study or death): a result collected after it belongs to no visit.
    """
    if not collected or anchor is None:
        return "", "outside-windows", ""
    day = date.fromisoformat(collected[:10])
    month = nearest_month(anchor, day, study.protocol.visit_months.rule)
    offset = (day - study.due_date(anchor, month)).days
    if end is not None and day > end:
        return "", "after-end", str(offset)
    codes = _visit_codes(study)
    if abs(offset) <= window and month in codes:
        return codes[month], "in-window", str(offset)
    return "", "outside-windows", str(offset)


def _visit_codes(study: StudyDefinition) -> dict[int, str]:
    cached = _CODES.get(id(study))
    if cached is None or cached[0] is not study:
        if len(_CODES) > 16:  # a few studies per process; never grows without bound
            _CODES.clear()
        cached = _CODES[id(study)] = (study, {visit.month: visit.code for visit in study.visits()})
    return cached[1]
