"""SLEDAI-2K: total from the descriptors a clinician flagged plus those derivable from labs.

The instrument (24 descriptors, weights, lab thresholds) is data in mappings/scoring/sledai2k.yaml; this
module is the small engine that applies it. A lab-based descriptor not flagged on the CRF is counted when a
lab result collected within the look-back window meets its rule, and the score says which were derived and
from which results.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fhir_lupus.errors import UnitError
from fhir_lupus.terminology import default_mappings_dir, parse_model, read_yaml
from fhir_lupus.terminology.catalogue import LabValue
from fhir_lupus.terminology.units import UnitConverter

__all__ = [
    "LabEvidence",
    "ScoredDescriptor",
    "SledaiDefinition",
    "SledaiScore",
    "load_sledai_definition",
    "score_sledai",
]

PUBLISHED_MAXIMUM = 105


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Threshold(_Frozen):
    value: float
    unit: str


class Condition(_Frozen):
    analyte: str
    above: Threshold | Literal["ref_high"] | None = None
    below: Threshold | Literal["ref_low"] | None = None
    titer_at_least: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_test(self) -> Condition:
        if sum(x is not None for x in (self.above, self.below, self.titer_at_least)) != 1:
            raise ValueError("a condition takes exactly one of above, below, titer_at_least")
        return self


class DeriveRule(_Frozen):
    any_of: tuple[Condition, ...] = Field(min_length=1)


class Descriptor(_Frozen):
    key: str
    weight: Literal[1, 2, 4, 8]
    display: str
    derive: DeriveRule | None = None


class SledaiDefinition(_Frozen):
    default_window_days: int
    allowed_window_days: tuple[int, ...]
    descriptors: tuple[Descriptor, ...]

    @model_validator(mode="after")
    def _is_the_published_instrument(self) -> SledaiDefinition:
        keys = [d.key for d in self.descriptors]
        if len(keys) != 24 or len(set(keys)) != 24:
            raise ValueError("SLEDAI-2K has 24 distinct descriptors")
        if sum(d.weight for d in self.descriptors) != PUBLISHED_MAXIMUM:
            raise ValueError(f"SLEDAI-2K weights add up to {PUBLISHED_MAXIMUM}")
        if self.default_window_days not in self.allowed_window_days:
            raise ValueError("default_window_days must be one of allowed_window_days")
        return self

    def descriptor(self, key: str) -> Descriptor:
        for descriptor in self.descriptors:
            if descriptor.key == key:
                return descriptor
        raise KeyError(key)


@dataclass(frozen=True)
class LabEvidence:
    """A lab result as the calculator needs it (value already read by the lab catalogue)."""

    result_id: str
    analyte: str
    collected_at: datetime
    value: LabValue
    ucum: str | None
    ref_low: Decimal | None
    ref_high: Decimal | None


@dataclass(frozen=True)
class ScoredDescriptor:
    key: str
    weight: int
    source: Literal["flagged", "derived"]
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True)
class SledaiScore:
    total: int
    window_days: int
    descriptors: tuple[ScoredDescriptor, ...]

    @property
    def derived(self) -> tuple[str, ...]:
        return tuple(d.key for d in self.descriptors if d.source == "derived")


@functools.lru_cache(maxsize=4)
def load_sledai_definition(mappings_dir: Path | None = None) -> SledaiDefinition:
    path = (mappings_dir or default_mappings_dir()) / "scoring" / "sledai2k.yaml"
    return parse_model(SledaiDefinition, path, read_yaml(path))


def score_sledai(
    definition: SledaiDefinition,
    *,
    flagged: tuple[str, ...],
    labs: list[LabEvidence],
    assessed_on: date,
    window_days: int | None,
    units: UnitConverter,
) -> SledaiScore:
    """Score one assessment. KeyError/ValueError name an unknown descriptor or a window not allowed."""
    window = window_days or definition.default_window_days
    if window not in definition.allowed_window_days:
        raise ValueError(f"window_days {window} is not one of {list(definition.allowed_window_days)}")
    for key in flagged:
        definition.descriptor(key)
    start = assessed_on - timedelta(days=window)
    in_window = [lab for lab in labs if start <= lab.collected_at.date() <= assessed_on]
    scored = []
    for descriptor in definition.descriptors:
        if descriptor.key in flagged:
            scored.append(ScoredDescriptor(descriptor.key, descriptor.weight, "flagged"))
        elif descriptor.derive is not None:
            evidence = tuple(
                lab.result_id
                for lab in in_window
                if any(_meets(condition, lab, units) for condition in descriptor.derive.any_of)
            )
            if evidence:
                scored.append(ScoredDescriptor(descriptor.key, descriptor.weight, "derived", evidence))
    return SledaiScore(total=sum(d.weight for d in scored), window_days=window, descriptors=tuple(scored))


def _meets(condition: Condition, lab: LabEvidence, units: UnitConverter) -> bool:
    if lab.analyte != condition.analyte:
        return False
    value = lab.value
    if condition.titer_at_least is not None:
        return value.titer is not None and value.titer >= condition.titer_at_least
    if value.number is None or lab.ucum is None:
        return False
    if condition.above is not None:
        limit = _limit(condition.above, lab, units)
        return limit is not None and _exceeds(value, limit)
    assert condition.below is not None
    limit = _limit(condition.below, lab, units)
    return limit is not None and _falls_short(value, limit)


def _limit(bound: Threshold | str, lab: LabEvidence, units: UnitConverter) -> Decimal | None:
    """The threshold in the lab's own unit; None when it cannot be known (no reference range given)."""
    if bound == "ref_high":
        return lab.ref_high
    if bound == "ref_low":
        return lab.ref_low
    assert isinstance(bound, Threshold) and lab.ucum is not None
    try:
        return Decimal(str(units.convert(bound.value, bound.unit, lab.ucum)))
    except UnitError:
        return None


def _exceeds(value: LabValue, limit: Decimal) -> bool:
    """Strictly above the limit; ``<x`` never is, ``>x`` is when x >= limit."""
    assert value.number is not None
    if value.comparator in ("<", "<="):
        return False
    if value.comparator in (">", ">="):
        return value.number >= limit
    return value.number > limit


def _falls_short(value: LabValue, limit: Decimal) -> bool:
    """Strictly below the limit; ``>x`` never is, ``<x`` is when x <= limit."""
    assert value.number is not None
    if value.comparator in (">", ">="):
        return False
    if value.comparator in ("<", "<="):
        return value.number <= limit
    return value.number < limit
