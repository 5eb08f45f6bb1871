"""What a report says about itself, so a page or a slide shown at a meeting tells which data it was made from:
when it was generated (UTC), the data cut-off, the tool and mapping versions and the number of open queries.

The data cut-off is the latest date among the fields of ``CUT_OFF_FIELDS``: the dates of the trial's own clinical
record (enrolment and leaving, visits, measurements, treatments, status changes, adverse events). Dates that
describe something else are left out: birth dates, recorded_on (when a row was entered), and the screening and
prior-medication history (before enrolment). A timestamp counts by the day written in it (its own offset).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from fhir_lupus.model import TrialData

__all__ = ["CUT_OFF_FIELDS", "DataCutOff", "ReportMetadata", "data_cut_off"]

Dates = Callable[[TrialData], Iterable[date | None]]

# (file, column) -> the values of that column in the accepted records
CUT_OFF_FIELDS: dict[tuple[str, str], Dates] = {
    ("subjects.csv", "enrolled_on"): lambda d: (s.record.enrolled_on for s in d.subjects),
    ("subjects.csv", "off_study_on"): lambda d: (s.record.off_study_on for s in d.subjects),
    ("status_history.csv", "on"): lambda d: (c.on for changes in d.status_history.values() for c in changes),
    ("visits.csv", "visit_date"): lambda d: (v.record.visit_date for v in d.visits),
    ("labs.csv", "collected_at"): lambda d: (lab.record.lab.collected_at for lab in d.labs),
    ("sledai.csv", "assessed_on"): lambda d: (s.record.assessment.assessed_on for s in d.sledai),
    ("treg.csv", "measured_at"): lambda d: (t.record.measured_at for t in d.treg),
    ("procedures.csv", "started_at"): lambda d: (p.record.started_at for p in d.procedures),
    ("procedures.csv", "ended_at"): lambda d: (p.record.ended_at for p in d.procedures),
    ("adverse_events.csv", "onset_on"): lambda d: (e.record.event.onset_on for e in d.adverse_events),
    ("adverse_events.csv", "resolved_on"): lambda d: (e.record.event.resolved_on for e in d.adverse_events),
}


@dataclass(frozen=True)
class DataCutOff:
    day: date
    field: str  # "labs.csv collected_at": where the latest date is


def _day(value: date) -> date:
    return value.date() if isinstance(value, datetime) else value


def data_cut_off(data: TrialData) -> DataCutOff | None:
    """The latest date of ``CUT_OFF_FIELDS`` in ``data`` and the field it is in (None: no date at all)."""
    latest: DataCutOff | None = None
    for (file, column), values in CUT_OFF_FIELDS.items():
        for value in values(data):
            if value is not None and (latest is None or _day(value) > latest.day):
                latest = DataCutOff(_day(value), f"{file} {column}")
    return latest


@dataclass(frozen=True)
class ReportMetadata:
    """The facts every page and PNG of one report carries."""

    generated_at: datetime  # UTC
    cut_off: DataCutOff | None
    tool_version: str
    mapping_version: str
    open_queries: int

    def items(self) -> list[tuple[str, str]]:
        """(label, value) in the order the page lists them; also the PNGs' text metadata keys."""
        return [
            ("Generated (UTC)", self.generated_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")),
            ("Data cut-off", self.cut_off.day.isoformat() if self.cut_off else "no dates in the data"),
            ("Tool version", f"fhir-lupus {self.tool_version}"),
            ("Mapping version", self.mapping_version),
            ("Open queries", str(self.open_queries)),
        ]

    def footer(self) -> str:
        """One line for the foot of each figure."""
        return "   ".join(f"{label}: {value}" for label, value in self.items())
