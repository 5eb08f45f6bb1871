"""The report's adverse-event summary: events by grade, seriousness and relatedness, and subjects with any, a
serious, a grade >= ``severe_grade`` and a related event. Pure: the accepted events of the loaded trial, counted
by ``fhir_lupus.study.summarise_safety`` (the rule of what is related lives there and in
mappings/terminology/adverse_events.yaml), labelled with the words of mappings/report/report.yaml.

No silent change: a refused adverse_events.csv row, or one with an open query, could change these counts, so the
summary is then not final and names those rows; a missing (or empty) adverse_events.csv makes it unknown, never
zero.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fhir_lupus.model import Finding, LoadReport, TrialData
from fhir_lupus.report._definitions import AdverseEventLabels
from fhir_lupus.study import summarise_safety
from fhir_lupus.terminology import AdverseEventTerms

__all__ = ["ADVERSE_EVENTS", "AdverseEventSummary", "Count", "summarise_adverse_events"]

ADVERSE_EVENTS = "adverse_events.csv"


@dataclass(frozen=True)
class Count:
    """One row of a summary table: the key of mappings/terminology/adverse_events.yaml, its label, a count."""

    key: str
    label: str
    count: int


@dataclass(frozen=True)
class AdverseEventSummary:
    events: int
    by_grade: tuple[Count, ...]
    serious_by_grade: tuple[Count, ...]  # the serious events among each grade's (for the figure)
    by_seriousness: tuple[Count, ...]
    by_relatedness: tuple[Count, ...]  # per suspect treatment (an event related to both counts under each), then not
    subjects: int  # subjects in the trial
    per_subject: tuple[Count, ...]  # subjects with any event, a serious one, a grade >= severe_grade one, a related one
    absent: str | None = None  # "missing" or "empty": adverse_events.csv gave no rows, so the counts are unknown
    incomplete: tuple[str, ...] = ()  # file:line of each refused row or row with an open query

    @property
    def final(self) -> bool:
        return self.absent is None and not self.incomplete

    def caveat(self) -> str | None:
        """Why these counts are not final, in one sentence (None: they are)."""
        if self.absent is not None:
            return f"{ADVERSE_EVENTS} is {self.absent}: adverse events are unknown, not zero"
        if self.incomplete:
            return (
                f"preliminary: {len(self.incomplete)} {ADVERSE_EVENTS} row(s) refused or with an open query "
                f"({', '.join(self.incomplete)}) are not counted, or may change"
            )
        return None


def summarise_adverse_events(
    data: TrialData,
    terms: AdverseEventTerms,
    labels: AdverseEventLabels,
    *,
    report: LoadReport | None = None,
    open_queries: Iterable[Finding] = (),
) -> AdverseEventSummary:
    """The summary of ``data.adverse_events``; ``report`` (the load's) and ``open_queries`` (the queries the
    site has not closed) say which adverse_events.csv rows it may miss."""
    safety = summarise_safety((located.record.event for located in data.adverse_events), terms)
    refused = {f"{ADVERSE_EVENTS}:{r.line}" for r in (report.rejects if report else ()) if r.file == ADVERSE_EVENTS}
    queried = {f"{ADVERSE_EVENTS}:{q.line or 0}" for q in open_queries if q.file == ADVERSE_EVENTS}
    grades = sorted(terms.grades)
    serious = {grade: 0 for grade in grades}
    for located in data.adverse_events:
        serious[located.record.event.grade] += located.record.event.serious == "yes"
    subjects = safety.per_subject.values()
    return AdverseEventSummary(
        events=safety.events,
        by_grade=tuple(Count(str(g), labels.grades[g], safety.by_grade[g]) for g in grades),
        serious_by_grade=tuple(Count(str(g), labels.grades[g], serious[g]) for g in grades),
        by_seriousness=tuple(Count(k, label, safety.by_seriousness[k]) for k, label in labels.seriousness.items()),
        by_relatedness=tuple(
            Count(k, labels.related[k] if k in terms.suspects else labels.not_related, n)
            for k, n in safety.by_relatedness.items()
        ),
        subjects=len(data.subjects),
        per_subject=(
            Count("any", "with any adverse event", len(safety.per_subject)),
            Count("serious", "with a serious event", sum(1 for s in subjects if s.serious)),
            Count(
                "severe",
                f"with a grade >= {labels.severe_grade} event",
                sum(1 for s in subjects if s.max_grade >= labels.severe_grade),
            ),
            Count(
                "related", "with a related event", sum(1 for s in subjects if any(s.related[k] for k in terms.suspects))
            ),
        ),
        absent=data.absent.get(ADVERSE_EVENTS),
        incomplete=tuple(sorted(refused | queried, key=lambda where: int(where.rsplit(":", 1)[1]))),
    )
