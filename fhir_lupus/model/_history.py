"""Screening and medication history: the rows of screening.csv and medications.csv (docs/csv-layout.md).

Field names are the CSV column names, so a validation error names the column. Codes are not here: drug, route,
frequency and outcome keys are looked up in mappings/terminology/medications.yaml by the loader.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["MedicationHistory", "ScreeningRecord"]

_KEY = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_PARTIAL_DATE = re.compile(r"^\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?)?$")


class _Entity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class ScreeningRecord(_Entity):
    """One screened candidate. Yes/no columns take yes/no (true/false, y/n, 1/0); empty means not known."""

    subject_id: str = Field(pattern=_KEY)
    screened_on: date
    consent_signed: bool | None = None
    consent_on: date | None = None
    birth_date: str | None = None
    sex: Literal["male", "female", "other", "unknown"]
    acr_criteria_met: bool | None = None
    contraception_agreed: bool | None = None
    end_stage_renal_failure: bool | None = None
    severe_heart_failure: bool | None = None
    severe_pulmonary_failure: bool | None = None
    other_major_organ_damage: bool | None = None
    uncontrolled_infection: bool | None = None
    pregnant: bool | None = None
    breast_feeding: bool | None = None
    pregnancy_intended: bool | None = None
    alt: Decimal | None = Field(default=None, ge=0)
    alt_uln: Decimal | None = Field(default=None, gt=0)
    urine_protein_24h: Decimal | None = Field(default=None, ge=0)
    urine_protein_unit: str | None = None
    sledai_total: int | None = Field(default=None, ge=0, le=105)
    note: str | None = None

    @field_validator("birth_date")
    @classmethod
    def _partial_date(cls, value: str | None) -> str | None:
        if value is not None and not _PARTIAL_DATE.match(value):
            raise ValueError("birth_date must be YYYY, YYYY-MM or YYYY-MM-DD")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ScreeningRecord:
        if self.consent_on is not None and self.consent_signed is False:
            raise ValueError("consent_on is given but consent_signed is no")
        if self.urine_protein_24h is not None and not self.urine_protein_unit:
            raise ValueError("urine_protein_24h needs urine_protein_unit (g/24h, mg/24h)")
        if self.birth_date and self.birth_date[:10] > (self.consent_on or self.screened_on).isoformat():
            raise ValueError("birth_date is after the consent / screening date")
        return self

    @property
    def age_date(self) -> date:
        """The date age is counted at: consent, or the screening date when no consent date is known."""
        return self.consent_on or self.screened_on


class MedicationHistory(_Entity):
    """One course of a drug before the study (the regimens that define refractory disease)."""

    medication_id: str = Field(pattern=_KEY)
    subject_id: str = Field(pattern=_KEY)
    drug: str
    dose: Decimal | None = Field(default=None, gt=0)
    dose_unit: str | None = None
    frequency: str | None = None
    route: str | None = None
    started_on: date
    ended_on: date | None = None
    outcome: str = "unknown"
    note: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> MedicationHistory:
        if self.dose is not None and not self.dose_unit:
            raise ValueError("dose needs dose_unit (UCUM: mg, g, mg/m2, g/m2)")
        if self.ended_on is not None and self.ended_on < self.started_on:
            raise ValueError("ended_on is before started_on")
        return self
