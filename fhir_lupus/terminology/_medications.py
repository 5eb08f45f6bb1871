"""The medication catalogue (mappings/terminology/medications.yaml): drugs, routes, frequencies, outcomes.

A frozen contract like the rest of mappings/: a misspelt key, a drug class or an outcome that names no project
concept fails when the file is loaded, before any row is read.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fhir_lupus.terminology._pack import CodeRef, MappingPack, load_pack

__all__ = [
    "DrugEntry",
    "Frequency",
    "MedicationCatalogue",
    "load_medication_catalogue",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DrugEntry(_Frozen):
    code: CodeRef
    classes: tuple[str, ...] = ()


class Frequency(_Frozen):
    """A dosing frequency as FHIR Timing.repeat: ``frequency`` doses per ``period`` ``period_unit`` (a key of the
    catalogue's ``period_days``)."""

    text: str
    frequency: int | None = Field(default=None, gt=0)
    period: float | None = Field(default=None, gt=0)
    period_unit: str | None = None

    @model_validator(mode="after")
    def _all_or_none(self) -> Frequency:
        given = [self.frequency is not None, self.period is not None, self.period_unit is not None]
        if any(given) and not all(given):
            raise ValueError("frequency, period and period_unit go together (or none, for a single dose)")
        return self


class Outcome(_Frozen):
    code: CodeRef
    status: Literal["completed", "stopped"]


class Pretreatment(_Frozen):
    procedure_code: CodeRef
    drug: str
    administration_status: dict[str, str]


class MedicationCatalogue(_Frozen):
    drugs: dict[str, DrugEntry]
    routes: dict[str, CodeRef]
    frequencies: dict[str, Frequency]
    outcomes: dict[str, Outcome]
    pretreatment: Pretreatment
    period_days: dict[str, int]  # UCUM unit of time -> its length in days
    day: str  # the unit of period_days that is one day: a daily dose is per it

    @model_validator(mode="after")
    def _pretreatment_names_a_drug(self) -> MedicationCatalogue:
        if self.pretreatment.drug not in self.drugs:
            raise ValueError(f"pretreatment.drug {self.pretreatment.drug!r} is not a key of drugs")
        return self

    @model_validator(mode="after")
    def _units_of_time_known(self) -> MedicationCatalogue:
        if self.period_days.get(self.day) != 1:
            raise ValueError(f"day {self.day!r} is not a unit of period_days one day long")
        for key, frequency in self.frequencies.items():
            if frequency.period_unit is not None and frequency.period_unit not in self.period_days:
                raise ValueError(f"frequencies.{key}: period_unit {frequency.period_unit!r} is not in period_days")
        return self

    def doses_per_day(self, frequency: Frequency) -> float | None:
        """Doses a day (2 for bid, 1/14 every two weeks); None for a single dose."""
        if frequency.frequency is None or frequency.period is None or frequency.period_unit is None:
            return None
        return frequency.frequency / (frequency.period * self.period_days[frequency.period_unit])

    def interval_days(self, frequency: Frequency) -> float | None:
        """Days between doses (14 every two weeks); None for a single dose."""
        per_day = self.doses_per_day(frequency)
        return None if per_day is None else 1 / per_day

    def daily(self, unit: str) -> str:
        """The UCUM unit of a daily amount of ``unit`` (``mg`` -> ``mg/d``)."""
        return f"{unit}/{self.day}"

    def drugs_of_class(self, name: str) -> frozenset[str]:
        return frozenset(key for key, drug in self.drugs.items() if name in drug.classes)


def load_medication_catalogue(pack: MappingPack | None = None) -> MedicationCatalogue:
    """mappings/terminology/medications.yaml of ``pack`` (default: ``load_pack()``), read once per pack."""
    return (pack or load_pack()).load(MedicationCatalogue, "terminology/medications.yaml")
