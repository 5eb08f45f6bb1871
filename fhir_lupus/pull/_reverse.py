"""Reverse mapping: one lab Observation, written by us or by a hospital system, to a trial lab row or aside.

What decides, in order:
1. the status (``mappings/fhir/pull.yaml``): withdrawn results (entered-in-error, cancelled) are never rows;
   pending ones (preliminary, registered, unknown) are kept aside with their status until a final version;
2. the codes: a coding of the lab catalogue (LOINC, or a project code such as the Treg percentage), among
   whatever local codings the hospital also sends;
3. the value: a quantity whose unit (UCUM code, or a unit text the alias table knows) fits a catalogue code
   is normalised to the trial's unit, keeping its comparator; ordinals and titers are read as they are.
Everything that is not a row becomes an UnmappedResult with the reason, so nothing is dropped silently.

The rules read a ``LabFact`` (``_fact``: the flat columns of one Observation), not the resource: ``reverse_map``
reads the fact of a FHIR dict (``observation_fact``) and classifies it (``classify_fact``); the Spark path
(``fhir_lupus.spark``) classifies the facts that a SQL-on-FHIR view made, with the same function.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fhir_lupus.errors import TerminologyError, UnitError
from fhir_lupus.model import StudyDefinition
from fhir_lupus.pull._fact import LabFact, normal_range, observation_fact
from fhir_lupus.pull._visits import assign_visit
from fhir_lupus.terminology import CodeChoice, LabCatalogue, MappingPack, load_pack

__all__ = [
    "CodeIndex",
    "PullRules",
    "PulledLab",
    "UnmappedResult",
    "classify_fact",
    "code_index",
    "format_number",
    "load_pull_rules",
    "reverse_map",
]

CodeIndex = dict[str, list[tuple[str, CodeChoice]]]  # "system-uri|code" -> (analyte, code choice)


class PullRules(BaseModel):
    """mappings/fhir/pull.yaml: which statuses make rows, which wait, which withdraw a result."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: frozenset[str]
    pending: frozenset[str]
    withdrawn: frozenset[str]
    result_identifiers: tuple[str, ...]
    lookback_days_before_anchor: int | None = Field(ge=0)
    quantity_comparators: frozenset[str] = frozenset()  # the FHIR parser's codes; read by the Spark path's screen


def load_pull_rules(pack: MappingPack | None = None) -> PullRules:
    return (pack or load_pack()).load(PullRules, "fhir/pull.yaml")


@dataclass(frozen=True)
class PulledLab:
    """A lab row in the trial's layout (docs/csv-layout.md) plus where it came from."""

    result_id: str
    subject_id: str
    visit_code: str
    analyte: str
    value: str
    unit: str
    ref_low: str
    ref_high: str
    method: str
    collected_at: str
    window: str  # "in-window" or "outside-windows"
    days_from_due: str
    loinc: str
    reported_value: str
    reported_unit: str
    observation_id: str
    last_updated: str
    status: str = "final"
    version_id: str = ""


@dataclass(frozen=True)
class UnmappedResult:
    """A result that is not a trial row (yet): outside the catalogue, unreadable, not final, or withdrawn."""

    subject_id: str
    observation_id: str
    codes: str
    value: str
    collected_at: str
    reason: str
    status: str = ""
    result_id: str = ""
    last_updated: str = ""
    version_id: str = ""


def code_index(catalogue: LabCatalogue) -> CodeIndex:
    """``system|code`` -> the (analyte, code choice) pairs of the catalogue that use it."""
    index: CodeIndex = {}
    for key, analyte in catalogue.pack.labs.analytes.items():
        for choice in analyte.codes:
            index.setdefault(f"{catalogue.pack.system_uri(choice.system)}|{choice.code}", []).append((key, choice))
    return index


def _number(text: str) -> int | float:
    """The number whose ``number_text`` is ``text``: the same int or float ``json.loads`` would give."""
    try:
        return int(text) if text.lstrip("+-").isdigit() else float(text)
    except ValueError:
        raise ValueError(f"value {text!r} is not a number") from None


def reverse_map(
    observation: dict[str, Any],
    subject_id: str,
    by_code: CodeIndex,
    catalogue: LabCatalogue,
    study: StudyDefinition,
    anchor: date | None,
    window: int,
    rules: PullRules,
    *,
    end: date | None = None,
) -> PulledLab | UnmappedResult:
    """The trial row of ``observation``, or the reason it is set aside (``classify_fact`` of its LabFact)."""
    return classify_fact(
        observation_fact(observation, normal_range(catalogue)),
        subject_id,
        by_code,
        catalogue,
        study,
        anchor,
        window,
        rules,
        end=end,
    )


def classify_fact(
    fact: LabFact,
    subject_id: str,
    by_code: CodeIndex,
    catalogue: LabCatalogue,
    study: StudyDefinition,
    anchor: date | None,
    window: int,
    rules: PullRules,
    *,
    end: date | None = None,
) -> PulledLab | UnmappedResult:
    """Status, catalogue code, value and unit, reference range, then the visit window: one row or one reason.
    ``end``: the end of the subject's participation; a result after it is a row assigned to no visit."""
    pack = catalogue.pack
    collected = fact.collected
    codes = ";".join(f"{system}|{code}" for system, code in fact.codes)
    status = fact.status or "unknown"
    result_id = _result_id(fact, {pack.identifier_system(k, study=study.nct_id) for k in rules.result_identifiers})

    def unmapped(reason: str, value: str = "") -> UnmappedResult:
        return UnmappedResult(
            subject_id,
            fact.observation_id,
            codes,
            value,
            collected,
            reason,
            status,
            result_id,
            fact.last_updated,
            fact.version_id,
        )

    if status in rules.withdrawn:
        return unmapped(f"status {status}: withdrawn by its source, never a trial row", _raw_value(fact))
    if status not in rules.rows and status not in rules.pending:
        return unmapped(f"status {status!r} is not an Observation status", _raw_value(fact))
    candidates = [pair for system, code in fact.codes for pair in by_code.get(f"{system}|{code}", [])]
    if not candidates:
        return unmapped("no code of the lab catalogue", _raw_value(fact))
    try:
        analyte, choice, value, unit, reported_value, reported_unit, ref = _read_value(fact, candidates, catalogue)
    except (UnitError, TerminologyError, ValueError) as exc:
        return unmapped(str(exc), _raw_value(fact))
    if status in rules.pending:
        return unmapped(
            f"status {status}: not final; kept aside until a final version arrives", f"{value} {unit}".strip()
        )
    visit_code, in_window, offset = assign_visit(collected, anchor, study, window, end=end)
    return PulledLab(
        result_id=result_id,
        subject_id=subject_id,
        visit_code=visit_code,
        analyte=analyte,
        value=value,
        unit=unit,
        ref_low=ref[0],
        ref_high=ref[1],
        method=choice.when.method[0]
        if choice.when.method and len(choice.when.method) == 1 and choice.when.method[0]
        else "",
        collected_at=collected,
        window=in_window,
        days_from_due=offset,
        loinc=choice.loinc,
        reported_value=reported_value,
        reported_unit=reported_unit,
        observation_id=fact.observation_id,
        last_updated=fact.last_updated,
        status=status,
        version_id=fact.version_id,
    )


def _result_id(fact: LabFact, our_systems: set[str]) -> str:
    """Our result id when we wrote it; else the source's first identifier as ``system|value``."""
    ours = next((value for system, value in fact.identifiers if system in our_systems), None)
    if ours is not None:
        return ours
    if fact.identifiers:
        system, value = fact.identifiers[0]
        return f"{system}|{value}"
    return ""


def _read_value(
    fact: LabFact, candidates: list[tuple[str, CodeChoice]], catalogue: LabCatalogue
) -> tuple[str, CodeChoice, str, str, str, str, tuple[str, str]]:
    """(analyte, code choice, value, unit, reported value, reported unit, normalised reference range)."""
    if fact.has_quantity:
        ucum = fact.quantity_code if fact.quantity_system == catalogue.pack.system_uri("ucum") else None
        ucum = ucum or catalogue.units.to_ucum(fact.quantity_unit or "")
        for analyte, choice in candidates:
            if (
                choice.when.value_kind == "quantity"
                and choice.when.unit_like
                and catalogue.units.commensurable(ucum, choice.when.unit_like)
            ):
                if fact.quantity_value is None:
                    raise ValueError("quantity without a value")
                number, unit = catalogue.normalise(analyte, _number(fact.quantity_value), ucum)
                comparator = fact.quantity_comparator or ""
                ref = _reference_range(fact, analyte, ucum, catalogue)
                return (
                    analyte,
                    choice,
                    f"{comparator}{format_number(number)}",
                    unit,
                    f"{comparator}{fact.quantity_value}",
                    ucum,
                    ref,
                )
        raise UnitError(f"unit {ucum} fits no catalogue code for {', '.join(c.code for _, c in candidates)}")
    if fact.has_concept:
        snomed = catalogue.pack.system_uri("snomed")
        codes = {code for system, code in fact.concept_codes if system == snomed}
        for key, answer in catalogue.pack.ordinals.items():
            if answer.code in codes:
                for analyte, choice in candidates:
                    if choice.when.value_kind == "ordinal":
                        shown = key if fact.concept_text is None else fact.concept_text
                        return analyte, choice, key, "", shown, "", ("", "")
        raise ValueError("coded value is not an ordinal the catalogue knows")
    if (text := fact.value_string) is not None:
        for analyte, choice in candidates:
            if choice.when.value_kind == "titer" and text.strip().startswith("1:"):
                return analyte, choice, text.strip(), "", text, "", ("", "")
        raise ValueError(f"text value {text!r} is not a titer")
    raise ValueError("no value[x] the catalogue can read")


def _reference_range(fact: LabFact, analyte: str, ucum: str, catalogue: LabCatalogue) -> tuple[str, str]:
    """The normal range (picked by ``observation_fact`` or the view), normalised to the trial's unit.

    A result may carry several ranges (normal, treatment, therapeutic, per age or sex); only the normal one is
    what the trial's ref_low/ref_high mean, and it need not come first.
    """
    bounds = []
    for value, system, code in (
        (fact.range_low_value, fact.range_low_system, fact.range_low_code),
        (fact.range_high_value, fact.range_high_system, fact.range_high_code),
    ):
        if value is None:
            bounds.append("")
            continue
        own = code if system == catalogue.pack.system_uri("ucum") else None
        bounds.append(format_number(catalogue.normalise(analyte, _number(value), own or ucum)[0]))
    return bounds[0], bounds[1]


def format_number(value: float) -> str:
    """Up to 6 significant digits, no float noise, no trailing zeros (88.4, 0.05, 1200)."""
    return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.0f}"


def _raw_value(fact: LabFact) -> str:
    """The value as the source gave it, for a result set aside (number, unit, comparator; code or text)."""
    if fact.has_quantity:
        unit = fact.quantity_code or fact.quantity_unit or ""
        return f"{fact.quantity_comparator or ''}{fact.quantity_value} {unit}".strip()
    if fact.has_concept:
        return fact.concept_text or (fact.concept_codes[0][1] if fact.concept_codes else "")
    return fact.value_string or ""
