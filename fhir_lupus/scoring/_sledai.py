"""SLEDAI-2K: the clinician's assessment, with the descriptors the labs support beside it.

The instrument (24 descriptors, weights, lab thresholds) is data in mappings/scoring/sledai2k.yaml; this
module is the small engine that applies it. SLEDAI-2K counts a descriptor only when it is due to lupus: a
leukopenia caused by cyclophosphamide, a pyuria caused by infection or a hematuria caused by stones is present
but scores nothing. Only the clinician can attribute, so:

- the CRF (``sledai.csv``) lists the descriptors present and due to lupus, and may list descriptors present
  but *not attributed* to lupus, with the cause;
- when the CRF gives a total, that total is the score. A lab-based descriptor the labs meet but the CRF did
  not list is kept as a component that scores 0, and the loader reports it as a finding with both totals;
- without a CRF total, the score adds the lab-derived descriptors, except those marked not attributed.

Every descriptor found (assessed, derived, not attributed) is kept with its evidence and whether it counted.

A lab-based descriptor that cannot be judged (its lab row was refused, labs.csv is absent, a result has no
reference limit or a unit its threshold cannot be compared with) while no CRF total is given leaves the total
unknown: the score is then not ``final``, ``total`` is a lower bound and ``undecided`` says which descriptors
could add how much, and why. The CRF total, when given, is the score whatever the labs say; ``computed_total``
beside it is then still a lower bound while such a descriptor remains (``unjudged``; SDTM RS writes both totals).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fhir_lupus.errors import UnitError
from fhir_lupus.terminology import LabValue, MappingPack, UnitConverter, load_pack, proves_above, proves_below

__all__ = [
    "Condition",
    "LabEvidence",
    "ScoredDescriptor",
    "SledaiDefinition",
    "SledaiScore",
    "Threshold",
    "UndecidedDescriptor",
    "UnjudgedLab",
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
    where: str = ""  # file:line, for a reader


@dataclass(frozen=True)
class UnjudgedLab:
    """A lab result the calculator could not see: a refused row. ``analyte`` / ``day`` None when the row's own
    cell cannot be read (it could then be any analyte, any day)."""

    analyte: str | None
    day: date | None
    where: str
    why: str


@dataclass(frozen=True)
class UndecidedDescriptor:
    """A lab-based descriptor that could not be judged: it might add ``weight`` points."""

    key: str
    weight: int
    why: tuple[str, ...]


Source = Literal["flagged", "derived", "not-attributed"]


@dataclass(frozen=True)
class ScoredDescriptor:
    """A descriptor found at an assessment. ``counted`` says whether its weight is in the total; when it is
    not, ``why`` says so (not attributed to lupus, or found in labs beside a CRF total)."""

    key: str
    weight: int
    source: Source
    evidence: tuple[str, ...] = ()
    counted: bool = True
    why: str = ""

    @property
    def points(self) -> int:
        return self.weight if self.counted else 0


@dataclass(frozen=True)
class SledaiScore:
    """``total`` is the score; ``computed_total`` what the CRF's descriptors plus attributable lab findings
    weigh, so a reader sees both values when a CRF total is the score."""

    total: int
    window_days: int
    descriptors: tuple[ScoredDescriptor, ...]
    total_from_crf: bool = False
    computed_total: int = 0
    undecided: tuple[UndecidedDescriptor, ...] = ()
    # the lab-based descriptors no result could decide, a CRF total or not: ``undecided`` without a CRF total
    unjudged: tuple[UndecidedDescriptor, ...] = ()

    @property
    def final(self) -> bool:
        """Whether the total is the score; otherwise it is a lower bound (``upper_total`` the most it can be)."""
        return not self.undecided

    @property
    def upper_total(self) -> int:
        return self.total + sum(d.weight for d in self.undecided)

    @property
    def computed_final(self) -> bool:
        """Whether ``computed_total`` is known; otherwise it is a lower bound, even where a CRF total is the score."""
        return not self.unjudged

    @property
    def derived(self) -> tuple[str, ...]:
        return tuple(d.key for d in self.descriptors if d.source == "derived")

    @property
    def assessed_total(self) -> int:
        """What the descriptors the clinician listed as due to lupus weigh."""
        return sum(d.weight for d in self.descriptors if d.source == "flagged")

    @property
    def uncounted_lab_findings(self) -> tuple[ScoredDescriptor, ...]:
        """Lab-derived descriptors, not marked as not attributed, that a CRF total left out."""
        return tuple(d for d in self.descriptors if d.source == "derived" and not d.counted)


def load_sledai_definition(pack: MappingPack | None = None) -> SledaiDefinition:
    return (pack or load_pack()).load(SledaiDefinition, "scoring/sledai2k.yaml")


def score_sledai(
    definition: SledaiDefinition,
    *,
    flagged: tuple[str, ...],
    labs: list[LabEvidence],
    assessed_on: date,
    window_days: int | None,
    units: UnitConverter,
    not_attributed: Mapping[str, str] | None = None,
    reported_total: int | None = None,
    unjudged: Sequence[UnjudgedLab] = (),
    labs_absent: bool = False,
) -> SledaiScore:
    """Score one assessment. KeyError/ValueError name an unknown descriptor or a window not allowed.

    ``not_attributed`` maps descriptor keys the clinician found present but not due to lupus to the cause
    (may be empty); ``reported_total`` is the CRF total, which is the score when given. ``unjudged``: the
    subject's refused lab rows; ``labs_absent``: no lab file at all. Either may leave a descriptor undecided.
    """
    not_attributed = not_attributed or {}
    window = definition.default_window_days if window_days is None else window_days
    if window not in definition.allowed_window_days:
        raise ValueError(f"window_days {window} is not one of {list(definition.allowed_window_days)}")
    for key in (*flagged, *not_attributed):
        definition.descriptor(key)
    both = set(flagged) & set(not_attributed)
    if both:
        raise ValueError(f"{', '.join(sorted(both))}: listed as due to lupus and as not attributed")
    start = assessed_on - timedelta(days=window)
    in_window: dict[str, list[tuple[int, LabEvidence]]] = {}  # by analyte, with the position in ``labs``
    for position, lab in enumerate(labs):
        if start <= lab.collected_at.date() <= assessed_on:
            in_window.setdefault(lab.analyte, []).append((position, lab))
    refused = [u for u in unjudged if u.day is None or start <= u.day <= assessed_on]
    scored = []
    undecided = []
    for descriptor in definition.descriptors:
        key, weight = descriptor.key, descriptor.weight
        if key in flagged:
            scored.append(ScoredDescriptor(key, weight, "flagged"))
            continue
        evidence: tuple[str, ...] = ()
        unclear: list[LabEvidence] = []  # results whose comparison cannot be made
        if descriptor.derive is not None:
            met = []
            for lab in _labs_of(descriptor.derive, in_window):
                verdicts = [_meets(condition, lab, units) for condition in descriptor.derive.any_of]
                if any(verdicts):
                    met.append(lab.result_id)
                elif None in verdicts:
                    unclear.append(lab)
            evidence = tuple(met)
        if key in not_attributed:
            cause = not_attributed[key]
            why = "present, not attributed to lupus" + (f" ({cause})" if cause else "")
            scored.append(ScoredDescriptor(key, weight, "not-attributed", evidence, counted=False, why=why))
        elif evidence and reported_total is not None:
            why = "met by labs but not on the CRF, whose total is the score"
            scored.append(ScoredDescriptor(key, weight, "derived", evidence, counted=False, why=why))
        elif evidence:
            scored.append(ScoredDescriptor(key, weight, "derived", evidence))
        elif descriptor.derive is not None:
            causes = _undecided(descriptor.derive, unclear, refused, labs_absent)
            if causes:
                undecided.append(UndecidedDescriptor(key, weight, causes))
    attributable = sum(d.weight for d in scored if d.source in ("flagged", "derived"))
    return SledaiScore(
        total=reported_total if reported_total is not None else sum(d.points for d in scored),
        window_days=window,
        descriptors=tuple(scored),
        total_from_crf=reported_total is not None,
        computed_total=attributable,
        undecided=tuple(undecided) if reported_total is None else (),
        unjudged=tuple(undecided),
    )


def _labs_of(rule: DeriveRule, in_window: Mapping[str, list[tuple[int, LabEvidence]]]) -> list[LabEvidence]:
    """The window's results of the analytes a rule reads, each once, in the order they were given."""
    analytes = dict.fromkeys(condition.analyte for condition in rule.any_of)
    found = sorted((item for analyte in analytes for item in in_window.get(analyte, ())), key=lambda item: item[0])
    return [lab for _, lab in found]


def _undecided(
    rule: DeriveRule, unclear: list[LabEvidence], refused: list[UnjudgedLab], labs_absent: bool
) -> tuple[str, ...]:
    """Why a lab-based descriptor no lab met cannot be ruled out; empty when it can."""
    analytes = {condition.analyte for condition in rule.any_of}
    why = ["labs.csv is absent or has no rows"] if labs_absent else []
    why += [f"{u.where} was refused ({u.why})" for u in refused if u.analyte is None or u.analyte in analytes]
    why += [
        f"{lab.where or lab.result_id} ({lab.analyte} {lab.value.raw}) cannot be compared: no reference limit, or a "
        "unit the threshold does not convert to"
        for lab in unclear
    ]
    return tuple(dict.fromkeys(why))


def _meets(condition: Condition, lab: LabEvidence, units: UnitConverter) -> bool | None:
    """Whether the lab meets the condition; None when it cannot be told (no limit, no conversion)."""
    if lab.analyte != condition.analyte:
        return False
    value = lab.value
    if condition.titer_at_least is not None:
        return value.titer is not None and value.titer >= condition.titer_at_least
    if value.number is None or lab.ucum is None:
        return False
    if condition.above is not None:
        limit = _limit(condition.above, lab, units)
        return None if limit is None else proves_above(value.number, value.comparator, limit)
    assert condition.below is not None
    limit = _limit(condition.below, lab, units)
    return None if limit is None else proves_below(value.number, value.comparator, limit)


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
