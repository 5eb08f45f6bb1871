"""Reverse mapping: one lab Observation, written by us or by a hospital system, to a trial lab row or aside.

What decides, in order:
1. the status (``mappings/fhir/pull.yaml``): withdrawn results (entered-in-error, cancelled) are never rows;
   pending ones (preliminary, registered, unknown) are kept aside with their status until a final version;
2. the codes: a coding of the lab catalogue (LOINC, or a project code such as the Treg percentage), among
   whatever local codings the hospital also sends;
3. the value: a quantity whose unit (UCUM code, or a unit text the alias table knows) fits a catalogue code
   is normalised to the trial's unit, keeping its comparator; ordinals and titers are read as they are.
Everything that is not a row becomes an UnmappedResult with the reason, so nothing is dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fhir_lupus.errors import TerminologyError, UnitError
from fhir_lupus.model.study import StudyDefinition
from fhir_lupus.sync.visits import assign_visit
from fhir_lupus.terminology import CodeChoice, CodeRef, LabCatalogue, load_mapping_file

__all__ = [
    "CodeIndex",
    "PullRules",
    "PulledLab",
    "UnmappedResult",
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
    lab_category: CodeRef
    result_identifiers: tuple[str, ...]
    lookback_days_before_anchor: int | None = Field(ge=0)


def load_pull_rules(mappings_dir: Path | None = None) -> PullRules:
    return load_mapping_file(PullRules, "fhir/pull.yaml", mappings_dir)


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


def reverse_map(
    observation: dict[str, Any],
    subject_id: str,
    by_code: CodeIndex,
    catalogue: LabCatalogue,
    study: StudyDefinition,
    anchor: date | None,
    window: int,
    rules: PullRules,
) -> PulledLab | UnmappedResult:
    pack = catalogue.pack
    codings = observation.get("code", {}).get("coding", [])
    collected = str(observation.get("effectiveDateTime") or (observation.get("effectivePeriod") or {}).get("start", ""))
    codes = ";".join(f"{c.get('system', '')}|{c.get('code', '')}" for c in codings)
    status = str(observation.get("status") or "unknown")
    meta = observation.get("meta") or {}
    result_id = _result_id(
        observation, {pack.identifier_system(k, study=study.nct_id) for k in rules.result_identifiers}
    )

    def unmapped(reason: str, value: str = "") -> UnmappedResult:
        return UnmappedResult(
            subject_id,
            str(observation.get("id", "")),
            codes,
            value,
            collected,
            reason,
            status,
            result_id,
            str(meta.get("lastUpdated", "")),
            str(meta.get("versionId", "")),
        )

    if status in rules.withdrawn:
        return unmapped(f"status {status}: withdrawn by its source, never a trial row", _raw_value(observation))
    if status not in rules.rows and status not in rules.pending:
        return unmapped(f"status {status!r} is not an Observation status", _raw_value(observation))
    candidates = [pair for c in codings for pair in by_code.get(f"{c.get('system', '')}|{c.get('code', '')}", [])]
    if not candidates:
        return unmapped("no code of the lab catalogue", _raw_value(observation))
    try:
        analyte, choice, value, unit, reported_value, reported_unit, ref = _read_value(
            observation, candidates, catalogue
        )
    except (UnitError, TerminologyError, ValueError) as exc:
        return unmapped(str(exc), _raw_value(observation))
    if status in rules.pending:
        return unmapped(
            f"status {status}: not final; kept aside until a final version arrives", f"{value} {unit}".strip()
        )
    visit_code, in_window, offset = assign_visit(collected, anchor, study, window)
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
        observation_id=str(observation.get("id", "")),
        last_updated=str(meta.get("lastUpdated", "")),
        status=status,
        version_id=str(meta.get("versionId", "")),
    )


def _result_id(observation: dict[str, Any], our_systems: set[str]) -> str:
    """Our result id when we wrote it; else the source's first identifier as ``system|value``."""
    identifiers = [i for i in observation.get("identifier", []) if isinstance(i, dict)]
    ours = next((str(i.get("value", "")) for i in identifiers if i.get("system") in our_systems), None)
    if ours is not None:
        return ours
    if identifiers:
        first = identifiers[0]
        return f"{first.get('system', '')}|{first.get('value', '')}"
    return ""


def _read_value(
    observation: dict[str, Any], candidates: list[tuple[str, CodeChoice]], catalogue: LabCatalogue
) -> tuple[str, CodeChoice, str, str, str, str, tuple[str, str]]:
    """(analyte, code choice, value, unit, reported value, reported unit, normalised reference range)."""
    if quantity := observation.get("valueQuantity"):
        ucum = quantity.get("code") if quantity.get("system") == catalogue.pack.system_uri("ucum") else None
        ucum = ucum or catalogue.units.to_ucum(str(quantity.get("unit", "")))
        for analyte, choice in candidates:
            if (
                choice.when.value_kind == "quantity"
                and choice.when.unit_like
                and catalogue.units.commensurable(ucum, choice.when.unit_like)
            ):
                number, unit = catalogue.normalise(analyte, quantity["value"], ucum)
                comparator = quantity.get("comparator", "")
                ref = _reference_range(observation, analyte, ucum, catalogue)
                return (
                    analyte,
                    choice,
                    f"{comparator}{format_number(number)}",
                    unit,
                    f"{comparator}{quantity['value']}",
                    ucum,
                    ref,
                )
        raise UnitError(f"unit {ucum} fits no catalogue code for {', '.join(c.code for _, c in candidates)}")
    if concept := observation.get("valueCodeableConcept"):
        snomed = catalogue.pack.system_uri("snomed")
        codes = {c.get("code") for c in concept.get("coding", []) if c.get("system") == snomed}
        for key, answer in catalogue.pack.ordinals.items():
            if answer.code in codes:
                for analyte, choice in candidates:
                    if choice.when.value_kind == "ordinal":
                        return analyte, choice, key, "", concept.get("text", key), "", ("", "")
        raise ValueError("coded value is not an ordinal the catalogue knows")
    if (text := observation.get("valueString")) is not None:
        for analyte, choice in candidates:
            if choice.when.value_kind == "titer" and str(text).strip().startswith("1:"):
                return analyte, choice, str(text).strip(), "", str(text), "", ("", "")
        raise ValueError(f"text value {text!r} is not a titer")
    raise ValueError("no value[x] the catalogue can read")


def _reference_range(observation: dict[str, Any], analyte: str, ucum: str, catalogue: LabCatalogue) -> tuple[str, str]:
    """The normal range, normalised: the first range with a bound whose type is absent or ``normal``.

    A result may carry several ranges (normal, treatment, therapeutic, per age or sex); only the normal one is
    what the trial's ref_low/ref_high mean, and it need not come first.
    """
    chosen: dict[str, Any] = next(
        (
            r
            for r in observation.get("referenceRange") or []
            if _is_normal(r, catalogue) and ("low" in r or "high" in r)
        ),
        {},
    )
    bounds = []
    for side in ("low", "high"):
        bound = chosen.get(side)
        if not bound or "value" not in bound:
            bounds.append("")
            continue
        own = bound.get("code") if bound.get("system") == catalogue.pack.system_uri("ucum") else None
        bounds.append(format_number(catalogue.normalise(analyte, bound["value"], own or ucum)[0]))
    return bounds[0], bounds[1]


def _is_normal(reference_range: dict[str, Any], catalogue: LabCatalogue) -> bool:
    kind = reference_range.get("type")
    if not kind:
        return True
    meaning = catalogue.pack.system_uri("referencerange-meaning")
    return any(c.get("system") == meaning and c.get("code") == "normal" for c in kind.get("coding", []))


def format_number(value: float) -> str:
    """Up to 6 significant digits, no float noise, no trailing zeros (88.4, 0.05, 1200)."""
    return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.0f}"


def _raw_value(observation: dict[str, Any]) -> str:
    if quantity := observation.get("valueQuantity"):
        unit = quantity.get("code") or quantity.get("unit", "")
        return f"{quantity.get('comparator', '')}{quantity.get('value')} {unit}".strip()
    if concept := observation.get("valueCodeableConcept"):
        return str(concept.get("text") or concept.get("coding", [{}])[0].get("code", ""))
    return str(observation.get("valueString", ""))
