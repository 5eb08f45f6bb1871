"""The machine-readable rule of an eligibility criterion (``rule:`` in mappings/studies/<NCT id>.yaml).

One definition serves two readers: the enrolment Group (fhir_lupus/mappers/_group.py) takes a criterion's
numeric range or boolean from its rule, and the screening engine (fhir_lupus/study/) decides the
criterion from it. A rule names where its data comes from (``source``) and what it must be:

- ``screening.<finding>``: a yes/no column of screening.csv, ``equals: true`` (the finding present);
- ``screening.age`` (completed years at consent), ``screening.sledai_total``, ``screening.urine_protein_24h``
  (converted to ``unit`` through UCUM), ``screening.alt_x_uln`` (ALT as a multiple of its upper limit of
  normal): bounds ``at_least`` / ``at_most`` (inclusive) and ``more_than`` / ``less_than`` (strict);
- ``medications``: regimens of medications.csv, ``any_of`` a list; one regimen met is enough.

``applies_to_sex`` limits a criterion (pregnancy, breast-feeding) to some sexes; for the others it is "not met"
(an exclusion that cannot apply), never unknown.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BOOLEAN_SOURCES",
    "NUMERIC_SOURCES",
    "Bounds",
    "EligibilityRule",
    "RegimenRule",
    "RuleSource",
]

BooleanSource = Literal[
    "screening.acr_criteria_met",
    "screening.consent_signed",
    "screening.contraception_agreed",
    "screening.end_stage_renal_failure",
    "screening.severe_heart_failure",
    "screening.severe_pulmonary_failure",
    "screening.other_major_organ_damage",
    "screening.uncontrolled_infection",
    "screening.pregnant",
    "screening.breast_feeding",
    "screening.pregnancy_intended",
]
NumericSource = Literal["screening.age", "screening.sledai_total", "screening.urine_protein_24h", "screening.alt_x_uln"]
RuleSource = Literal[BooleanSource, NumericSource, "medications"]
BOOLEAN_SOURCES: tuple[str, ...] = get_args(BooleanSource)
NUMERIC_SOURCES: tuple[str, ...] = get_args(NumericSource)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Bounds(_Frozen):
    """Limits on a number: ``at_least`` / ``at_most`` inclusive, ``more_than`` / ``less_than`` strict."""

    at_least: Decimal | None = None
    at_most: Decimal | None = None
    more_than: Decimal | None = None
    less_than: Decimal | None = None
    unit: str | None = None  # UCUM unit the limits are in (the value is converted to it)

    @property
    def has_limits(self) -> bool:
        return any(v is not None for v in (self.at_least, self.at_most, self.more_than, self.less_than))

    def holds(self, value: Decimal) -> bool:
        return (
            (self.at_least is None or value >= self.at_least)
            and (self.at_most is None or value <= self.at_most)
            and (self.more_than is None or value > self.more_than)
            and (self.less_than is None or value < self.less_than)
        )

    def describe(self) -> str:
        parts = [
            f"{sign} {limit:g}"
            for sign, limit in (
                (">=", self.at_least),
                ("<=", self.at_most),
                (">", self.more_than),
                ("<", self.less_than),
            )
            if limit is not None
        ]
        return " and ".join(parts) + (f" {self.unit}" if self.unit else "")


class RegimenRule(_Frozen):
    """A prior regimen of medications.csv: which drugs, dose, interval, duration and outcome count."""

    drugs: tuple[str, ...] = ()  # keys of mappings/terminology/medications.yaml
    drug_class: str | None = None  # or every drug of this class there ...
    except_drugs: tuple[str, ...] = Field(default=(), alias="except")  # ... but these
    dose: Bounds | None = None  # one dose (e.g. g/m2 per pulse)
    daily_dose: Bounds | None = None  # dose x doses a day (e.g. mg/d)
    interval_days: Bounds | None = None  # days between doses
    duration_months: Bounds | None = None  # completed calendar months from started_on to ended_on
    outcome: tuple[str, ...] = Field(min_length=1)  # keys of `outcomes` that count (failed)

    @model_validator(mode="after")
    def _names_drugs(self) -> RegimenRule:
        if not self.drugs and not self.drug_class:
            raise ValueError("a regimen names `drugs` or a `drug_class`")
        for name, bounds in (("dose", self.dose), ("daily_dose", self.daily_dose)):
            if bounds is not None and not bounds.unit:
                raise ValueError(f"{name} needs a UCUM unit")
        return self

    def describe(self) -> str:
        what = ", ".join(self.drugs) or f"any {self.drug_class}"
        if self.except_drugs:
            what += f" except {', '.join(self.except_drugs)}"
        parts = [what]
        for name, bounds in (
            ("dose", self.dose),
            ("daily dose", self.daily_dose),
            ("interval days", self.interval_days),
            ("months", self.duration_months),
        ):
            if bounds is not None:
                parts.append(f"{name} {bounds.describe()}")
        parts.append("outcome " + "/".join(self.outcome))
        return ", ".join(parts)


class EligibilityRule(Bounds):
    """How a criterion is decided (module docstring)."""

    source: RuleSource
    equals: bool | None = None
    applies_to_sex: tuple[Literal["male", "female", "other", "unknown"], ...] = ()
    any_of: tuple[RegimenRule, ...] = ()

    @model_validator(mode="after")
    def _fits_source(self) -> EligibilityRule:
        if self.source == "medications":
            if not self.any_of or self.has_limits or self.equals is not None:
                raise ValueError("a `medications` rule lists regimens under any_of, and nothing else")
        elif self.source in BOOLEAN_SOURCES:
            if self.equals is None or self.has_limits or self.any_of:
                raise ValueError(f"{self.source} is yes/no: give `equals` only")
        elif not self.has_limits or self.equals is not None or self.any_of:
            raise ValueError(f"{self.source} is a number: give at_least / at_most / more_than / less_than")
        if self.source == "screening.urine_protein_24h" and not self.unit:
            raise ValueError("screening.urine_protein_24h needs the UCUM `unit` of its limits")
        return self
