"""Safety summary of a trial's adverse events: counts by grade, seriousness and relatedness, per subject, and the
serious events listed. Pure: it takes the accepted events (``TrialData.adverse_events``) and the mapping terms.

Relatedness: an event is *related* to a study treatment when ``related_to`` names it and the causality is one of
``related_causality`` in mappings/terminology/adverse_events.yaml (possible, probable, definite); an event related
to ``both`` counts for each treatment. Events with no suspect, or a causality below that, are *not related*.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fhir_lupus.model import AdverseEventRow
from fhir_lupus.terminology import AdverseEventTerms

__all__ = ["NOT_RELATED", "SafetySummary", "SubjectSafety", "summarise_safety", "write_summary_csv"]

NOT_RELATED = "not related"


@dataclass
class SubjectSafety:
    events: int = 0
    serious: int = 0
    max_grade: int = 0
    related: Counter[str] = field(default_factory=Counter)


@dataclass
class SafetySummary:
    events: int
    by_grade: dict[int, int]
    by_seriousness: dict[str, int]
    by_relatedness: dict[str, int]
    by_causality: dict[str, int]
    per_subject: dict[str, SubjectSafety]
    serious_events: list[AdverseEventRow]

    def rows(self) -> list[dict[str, str]]:
        """The summary as long rows (dimension, value, events), for CSV output."""
        rows = [{"dimension": "total", "value": "", "events": str(self.events)}]
        for dimension, counts in (
            ("grade", self.by_grade),
            ("serious", self.by_seriousness),
            ("related_to", self.by_relatedness),
            ("causality", self.by_causality),
        ):
            rows += [{"dimension": dimension, "value": str(k), "events": str(v)} for k, v in counts.items()]
        for subject_id, subject in self.per_subject.items():
            rows.append({"dimension": "subject", "value": subject_id, "events": str(subject.events)})
        return rows


def summarise_safety(events: Iterable[AdverseEventRow], terms: AdverseEventTerms) -> SafetySummary:
    ordered = sorted(events, key=lambda e: (e.subject_id, e.onset_on, e.event_id))
    grades: Counter[int] = Counter(e.grade for e in ordered)
    seriousness: Counter[str] = Counter(e.serious for e in ordered)
    causality: Counter[str] = Counter(e.causality or "none assessed" for e in ordered)
    related: Counter[str] = Counter()
    per_subject: dict[str, SubjectSafety] = {}
    for event in ordered:
        subject = per_subject.setdefault(event.subject_id, SubjectSafety())
        subject.events += 1
        subject.serious += event.serious == "yes"
        subject.max_grade = max(subject.max_grade, event.grade)
        treatments = terms.related_to.get(event.related_to, ())
        if treatments and event.causality in terms.related_causality:
            related.update(treatments)
            subject.related.update(treatments)
        else:
            related[NOT_RELATED] += 1
            subject.related[NOT_RELATED] += 1
    return SafetySummary(
        events=len(ordered),
        by_grade={grade: grades[grade] for grade in sorted(terms.grades)},
        by_seriousness={"yes": seriousness["yes"], "no": seriousness["no"]},
        by_relatedness={key: related[key] for key in (*terms.suspects, NOT_RELATED)},
        by_causality={key: causality[key] for key in (*terms.causality, "none assessed") if causality[key]},
        per_subject=per_subject,
        serious_events=[e for e in ordered if e.serious == "yes"],
    )


def write_summary_csv(summary: SafetySummary, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["dimension", "value", "events"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(summary.rows())
