"""Compare pulled lab rows with the trial's own labs and Treg measurements, both in the trial's units."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fhir_lupus.pull._reverse import PulledLab, format_number
from fhir_lupus.terminology import LabCatalogue

if TYPE_CHECKING:  # annotations only: a pull does not import the trial loader
    from fhir_lupus.model import CheckedLab, TrialData

__all__ = ["RoundTrip", "compare_round_trip", "expected_row"]


@dataclass
class RoundTrip:
    matched: int = 0
    missing: list[str] = field(default_factory=list)  # result ids pushed but not pulled
    different: list[str] = field(default_factory=list)  # "id: sent X U, pulled Y V"
    extra: list[str] = field(default_factory=list)  # pulled rows with no local result

    @property
    def exact(self) -> bool:
        return not (self.missing or self.different or self.extra)


def expected_row(checked: CheckedLab, catalogue: LabCatalogue) -> tuple[str, str]:
    """(value, unit) as a pull should give it back: quantities in the trial unit, others verbatim."""
    value = checked.value
    if value.kind == "quantity":
        assert value.number is not None and checked.resolved.ucum is not None
        number, unit = catalogue.normalise(checked.lab.analyte, value.number, checked.resolved.ucum)
        return f"{value.comparator or ''}{format_number(number)}", unit
    if value.kind == "ordinal":
        return str(value.ordinal), ""
    return value.raw, ""


def compare_round_trip(data: TrialData, pulled: Iterable[PulledLab], catalogue: LabCatalogue) -> RoundTrip:
    expected = {row.record.lab.result_id: expected_row(row.record, catalogue) for row in data.labs}
    treg_unit = catalogue.analyte("treg_percent").trial_unit or ""
    expected |= {row.record.measurement_id: (format_number(float(row.record.percent)), treg_unit) for row in data.treg}
    got = {row.result_id: (row.value, row.unit) for row in pulled}
    result = RoundTrip()
    for result_id, (value, unit) in sorted(expected.items()):
        if result_id not in got:
            result.missing.append(result_id)
        elif got[result_id] != (value, unit):
            result.different.append(f"{result_id}: sent {value} {unit}, pulled {got[result_id][0]} {got[result_id][1]}")
        else:
            result.matched += 1
    result.extra = sorted(set(got) - set(expected))
    return result
