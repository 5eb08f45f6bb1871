"""Flare signals: each definition of mappings/signals/flares.yaml tested on each subject's lab series.

A ``descriptor_change`` signal: the SLEDAI-2K descriptor is present at a value and absent at the previous final
value of the same analyte (C3 and C4 each on their own). "Present" and "absent" must both be proven: a censored
value proves only what its bound proves, a value without a reference limit (or with a unit the threshold does not
convert to) proves neither, so a change that cannot be told raises nothing. A value without a previous one raises
nothing either: there is no change to see.

A ``rise_from_nadir`` signal: the value, converted into the guideline's unit, reaches what the band of the
subject's post-treatment nadir asks (the lowest earlier final value collected from the first MSC infusion on, or
after the first collection day when the infusion is not known). A ``<`` value never proves a rise; a ``<X`` nadir
is taken at X (the rise it proves is a lower bound); a ``>X`` nadir proves no rise.

A ``score_rise`` signal: a final SLEDAI-2K total at least ``rise_by`` points above the subject's previous final
total, or above ``above`` where the previous one was not (SELENA-SLEDAI Flare Index). A total that is only a
lower bound (a descriptor undecided) is never compared: it could prove a rise it does not have.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Literal

from fhir_lupus.errors import UnitError
from fhir_lupus.pull import PulledLab
from fhir_lupus.scoring import Condition, SledaiDefinition, Threshold, load_sledai_definition
from fhir_lupus.settings import Settings
from fhir_lupus.signals._definitions import Band, FlareDefinition, load_flare_definitions
from fhir_lupus.signals._inputs import PULLED_TABLE, Doubt, NotCounted, Point, ScorePoint, gather_points
from fhir_lupus.source import TrialSource
from fhir_lupus.terminology import MappingPack, UnitConverter, proves_above, proves_below

__all__ = ["Signal", "flare_signals"]

State = Literal["present", "absent", "unknown"]
SCORE_SYSTEM = "sledai"  # project.yaml's identifier system of SLEDAI-2K assessments (their Observations)


@dataclass(frozen=True)
class Signal:
    """A definition met by a subject's value: which value crossed, what it was compared with, and the source.

    Flat, so that a CSV row and the FHIR resource say the same; ``compared`` is ``previous`` or ``nadir``."""

    subject_id: str
    visit_code: str
    date: str  # when the value that raised it was collected
    definition_id: str
    title: str
    analyte: str
    value: str
    unit: str
    result_id: str
    observation_id: str
    compared: str
    compared_value: str
    compared_unit: str
    compared_date: str
    compared_result_id: str
    compared_observation_id: str
    threshold: str  # what the value crossed, as a reader checks it
    source: str  # the citation
    source_url: str
    # the project identifier system (project.yaml) the result ids belong to: a lab result, or an assessment
    result_system: str = "lab_result"
    # why the signal is not final (a doubtful row in its series: see ``flare_signals``); empty when it is
    provisional: str = ""

    @property
    def key(self) -> str:
        """What identifies the signal wherever it is written: the definition and the result that raised it."""
        return f"{self.definition_id}/{self.subject_id}/{self.result_id}"


def flare_signals(
    labs: Iterable[PulledLab] = (),
    *,
    trial: TrialSource | None = None,
    settings: Settings | None = None,
    table: str = PULLED_TABLE,
    not_counted: list[NotCounted] | None = None,
) -> list[Signal]:
    """The signals of every definition over the pulled rows ``labs`` and the trial's own labs (either may be
    empty), in a deterministic order (subject, date, definition, result).

    The pulled rows go through the trial's value and date checks first (fhir_lupus/signals/_inputs.py): a row
    they refuse or query raises nothing, and is added to ``not_counted`` (when given), named by ``table`` and line,
    so that the caller can say which hospital results were not counted and why. A signal whose series holds such
    a row (or a trial row refused or queried) on or before its date is ``provisional``, never final."""
    pack = (settings or Settings.default()).pack
    definitions = load_flare_definitions(pack)
    sledai = load_sledai_definition(pack)
    points = gather_points(labs, trial, pack, table=table)
    if not_counted is not None:
        not_counted += points.not_counted
    judge = _Judge(pack, sledai)
    signals: list[Signal] = []
    for definition in definitions.definitions:
        if definition.kind == "score_rise":
            for totals in points.scores.values():
                signals += _score_rises(definition, totals)
    for subject, analytes in points.by_subject.items():
        for definition in definitions.definitions:
            if definition.kind == "score_rise":
                continue
            if definition.kind == "descriptor_change":
                signals += judge.descriptor_changes(definition, analytes)
            else:
                start = points.treated_from.get(subject)
                for analyte in definition.analytes:
                    signals += judge.rises(definition, analytes.get(analyte, ()), start)
    signals = [_provisional(signal, points.doubts) for signal in signals]
    return sorted(signals, key=lambda s: (s.subject_id, s.date, s.definition_id, s.result_id))


def _provisional(signal: Signal, doubts: Sequence[Doubt]) -> Signal:
    """The signal, provisional when a refused or queried row of its series (same subject, same analyte, or any
    SLEDAI-2K assessment for a total) is dated on or before it, or has no readable date: the series it was judged
    on may be missing a value, so it cannot be published as final (``provisional_status`` in flares.yaml)."""
    analyte = None if signal.result_system == SCORE_SYSTEM else signal.analyte
    day = signal.date[:10]
    found = [
        doubt.where
        for doubt in doubts
        if doubt.subject_id == signal.subject_id
        and doubt.analyte == analyte
        and (doubt.day is None or doubt.day.isoformat() <= day)
    ]
    if not found:
        return signal
    return replace(signal, provisional=f"not counted, dated on or before it: {', '.join(sorted(set(found)))}")


class _Judge:
    def __init__(self, pack: MappingPack, sledai: SledaiDefinition) -> None:
        self.pack = pack
        self.sledai = sledai
        self.units = UnitConverter(pack)

    def _molar_mass(self, analyte: str) -> float | None:
        known = self.pack.labs.analytes.get(analyte)
        return None if known is None else known.molar_mass

    # -- descriptor_change ------------------------------------------------------------------------------------

    def descriptor_changes(self, definition: FlareDefinition, analytes: dict[str, list[Point]]) -> list[Signal]:
        assert definition.descriptor is not None
        rule = self.sledai.descriptor(definition.descriptor).derive
        assert rule is not None  # checked when the definitions were loaded
        found = []
        for analyte in dict.fromkeys(c.analyte for c in rule.any_of):
            conditions = [c for c in rule.any_of if c.analyte == analyte]
            series = analytes.get(analyte, [])
            for previous, current in itertools.pairwise(series):
                now, why = self._state(conditions, current)
                if now == "present" and self._state(conditions, previous)[0] == "absent":
                    found.append(_signal(definition, current, previous, "previous", why))
        return found

    def _state(self, conditions: Sequence[Condition], point: Point) -> tuple[State, str]:
        """Whether the descriptor's conditions on this analyte are met at ``point``, proven either way or not."""
        states = [self._condition(condition, point) for condition in conditions]
        for state, why in states:
            if state == "present":
                return "present", why
        if all(state == "absent" for state, _ in states):
            return "absent", ""
        return "unknown", ""

    def _condition(self, condition: Condition, point: Point) -> tuple[State, str]:
        value = point.value
        titer_at_least = condition.titer_at_least
        if titer_at_least is not None:
            if value.titer is None:
                return "absent", ""  # a quantity or an answer is not a titer: this test does not apply
            met = value.titer >= titer_at_least
            return ("present", f"titer 1:{value.titer} >= 1:{titer_at_least}") if met else ("absent", "")
        if value.number is None:
            return ("unknown", "") if value.titer is None else ("absent", "")
        above, below = condition.above, condition.below
        limit = self._limit(above if above is not None else below, point)
        if limit is None:
            return "unknown", ""
        number, comparator = value.number, value.comparator
        if above is not None:
            if proves_above(number, comparator, limit):
                return "present", f"> {limit:g} {point.unit}" + (
                    " (upper reference limit)" if above == "ref_high" else ""
                )
            return ("absent", "") if comparator in (None, "<", "<=") and number <= limit else ("unknown", "")
        if proves_below(number, comparator, limit):
            return "present", f"< {limit:g} {point.unit}" + (" (lower reference limit)" if below == "ref_low" else "")
        return ("absent", "") if comparator in (None, ">", ">=") and number >= limit else ("unknown", "")

    def _limit(self, bound: Threshold | str | None, point: Point) -> Decimal | None:
        """The threshold in the point's own unit: the lab's reference limit, or the descriptor's number converted
        with UCUM; None when it cannot be known."""
        if bound == "ref_high":
            return point.ref_high
        if bound == "ref_low":
            return point.ref_low
        if not isinstance(bound, Threshold) or point.ucum is None:
            return None
        try:
            converted = self.units.convert(
                bound.value, bound.unit, point.ucum, molar_mass=self._molar_mass(point.analyte)
            )
        except UnitError:
            return None
        return Decimal(str(converted))

    # -- rise_from_nadir -----------------------------------------------------------------------------------------

    def rises(self, definition: FlareDefinition, series: Sequence[Point], start: date | None) -> list[Signal]:
        if not series:
            return []
        first_day = series[0].collected_at.date()
        after = [p for p in series if (p.collected_at.date() >= start if start else p.collected_at.date() > first_day)]
        found = []
        nadir: tuple[float, Point] | None = None  # the lowest provable bound so far, with its point
        raised = False  # a signal stands until a value falls below what the band asks again
        for point in after:
            amount = self._in_unit(definition, point)
            if amount is None:
                continue
            comparator = point.value.comparator
            if nadir is not None:
                band = next(b for b in definition.bands if b.covers(nadir[0]))
                needed = band.needed(nadir[0])
                if amount >= needed and comparator not in ("<", "<="):
                    if not raised:
                        why = f">= {needed:.4g} {definition.unit} ({_band_text(band, nadir[0], definition.unit or '')})"
                        found.append(_signal(definition, point, nadir[1], "nadir", why))
                    raised = True
                elif amount < needed and comparator not in (">", ">="):
                    raised = False
            if comparator not in (">", ">=") and (nadir is None or amount < nadir[0]):
                nadir = (amount, point)
        return found

    def _in_unit(self, definition: FlareDefinition, point: Point) -> float | None:
        """The point's number in the definition's unit (a ``read_as`` unit stands for the row's); None when it has
        no number or its unit does not convert."""
        if point.value.number is None or point.ucum is None:
            return None
        unit = definition.read_as.get(point.analyte, point.ucum)
        assert definition.unit is not None
        try:
            return self.units.convert(
                point.value.number, unit, definition.unit, molar_mass=self._molar_mass(point.analyte)
            )
        except UnitError:
            return None


def _score_rises(definition: FlareDefinition, totals: Sequence[ScorePoint]) -> list[Signal]:
    """Each final total that rose from the previous final total as ``definition`` asks."""
    found = []
    for previous, current in itertools.pairwise(totals):
        if definition.rise_by is not None and current.total - previous.total >= definition.rise_by:
            why = f"+{current.total - previous.total} points (>= {definition.rise_by} above the previous total)"
        elif definition.above is not None and current.total > definition.above >= previous.total:
            why = f"> {definition.above} points (the previous total was not)"
        else:
            continue
        found.append(
            Signal(
                subject_id=current.subject_id,
                visit_code=current.visit_code,
                date=current.assessed_on.isoformat(),
                definition_id=definition.id,
                title=definition.title,
                analyte=definition.score or "",
                value=str(current.total),
                unit="",
                result_id=current.key,
                observation_id="",
                compared="previous",
                compared_value=str(previous.total),
                compared_unit="",
                compared_date=previous.assessed_on.isoformat(),
                compared_result_id=previous.key,
                compared_observation_id="",
                threshold=why,
                source=" ".join(definition.source.citation.split()),
                source_url=definition.source.url,
                result_system=SCORE_SYSTEM,
            )
        )
    return found


def _band_text(band: Band, nadir: float, unit: str) -> str:
    if band.rise_to is not None:
        return f"rise to {band.rise_to:g} from a nadir of {nadir:.4g} {unit}"
    if band.rise_by is not None:
        return f"rise by {band.rise_by:g} from a nadir of {nadir:.4g} {unit}"
    return f"{band.rise_factor:g}-fold a nadir of {nadir:.4g} {unit}"


def _signal(definition: FlareDefinition, point: Point, compared: Point, how: str, why: str) -> Signal:
    return Signal(
        subject_id=point.subject_id,
        visit_code=point.visit_code,
        date=point.collected_at.isoformat(),
        definition_id=definition.id,
        title=definition.title,
        analyte=point.analyte,
        value=point.value.raw,
        unit=point.unit,
        result_id=point.result_id,
        observation_id=point.observation_id,
        compared=how,
        compared_value=compared.value.raw,
        compared_unit=compared.unit,
        compared_date=compared.collected_at.isoformat(),
        compared_result_id=compared.result_id,
        compared_observation_id=compared.observation_id,
        threshold=why,
        source=" ".join(definition.source.citation.split()),
        source_url=definition.source.url,
    )
