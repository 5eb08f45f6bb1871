"""The flat columns of one lab Observation that pull's rules read: a LabFact, from a FHIR dict or a view's rows.

``observation_fact`` reads them from a resource (the search and bulk passes, the NDJSON path); the Spark path
(``fhir_lupus.spark``) folds the rows of the SQL-on-FHIR view (mappings/views/lab_observation.json) into the same
LabFact, so that ``_reverse.classify_fact`` decides alike on both. Reading the resource is all this module does:
the status, code and unit rules are ``_reverse``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_lupus.terminology import LabCatalogue, load_fhir_codes

__all__ = ["LabFact", "normal_range", "number_text", "observation_fact"]


@dataclass(frozen=True)
class LabFact:
    """The columns of one Observation that decide its lab row: what ``observation_fact`` reads from a resource
    and what the SQL-on-FHIR view (mappings/views/lab_observation.json) selects, so both paths classify alike.

    Pairs are ``(system, code)`` or ``(system, value)`` in the resource's order, ``""`` where an element is
    absent. ``quantity_value`` is the number's text as Python's JSON reader gives it back (``88`` -> ``"88"``,
    ``1.0`` -> ``"1.0"``), the form ``reported_value`` keeps. ``range_*`` are the bounds of the normal reference
    range (the first whose type is absent or ``normal`` and which has a low or a high).
    """

    observation_id: str = ""
    patient: str = ""  # subject.reference as written
    status: str = ""
    last_updated: str = ""
    version_id: str = ""
    identifiers: tuple[tuple[str, str], ...] = ()
    codes: tuple[tuple[str, str], ...] = ()
    categories: tuple[tuple[str, str], ...] = ()
    effective_date_time: str | None = None
    effective_instant: str | None = None
    effective_start: str | None = None
    effective_end: str | None = None
    effective_timing: bool = False
    quantity_value: str | None = None
    quantity_unit: str | None = None
    quantity_system: str | None = None
    quantity_code: str | None = None
    quantity_comparator: str | None = None
    concept_codes: tuple[tuple[str, str], ...] = ()
    concept_text: str | None = None
    value_string: str | None = None
    range_low_value: str | None = None
    range_low_system: str | None = None
    range_low_code: str | None = None
    range_high_value: str | None = None
    range_high_system: str | None = None
    range_high_code: str | None = None

    @property
    def has_quantity(self) -> bool:
        return any(
            v is not None
            for v in (
                self.quantity_value,
                self.quantity_unit,
                self.quantity_system,
                self.quantity_code,
                self.quantity_comparator,
            )
        )

    @property
    def has_concept(self) -> bool:
        return bool(self.concept_codes) or self.concept_text is not None

    @property
    def collected(self) -> str:
        """When the result was collected, as the lab table writes it: effectiveDateTime, else the period start."""
        return self.effective_date_time or self.effective_start or ""


def number_text(value: Any) -> str | None:
    """A JSON number as Python's JSON reader gives it back, as text (``88``, ``1.0``, ``1e-07``); None if absent.

    ``value`` is the parsed number, or the number's JSON text (an integer literal stays an integer, anything with
    a fraction or an exponent is a float), so a reader that keeps the text and one that parses agree.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed: Any = int(text) if text.lstrip("+-").isdigit() else float(text)
        except ValueError:
            return text  # not a number: kept as text, refused where a number is needed
        return str(parsed)
    return str(value)


def _pairs(items: Any, first: str, second: str) -> tuple[tuple[str, str], ...]:
    return tuple((str(i.get(first, "")), str(i.get(second, ""))) for i in items or [] if isinstance(i, dict))


def observation_fact(observation: dict[str, Any], normal: tuple[str, str]) -> LabFact:
    """The LabFact of a FHIR Observation (a dict as the server or the NDJSON file gives it).

    ``normal`` is the ``(system, code)`` of the reference-range type of the normal range (``normal_range``): the
    normal range is picked here, as the view picks it with the same rule.
    """
    meta = observation.get("meta") or {}
    period = observation.get("effectivePeriod") or {}
    quantity = observation.get("valueQuantity") or {}
    concept = observation.get("valueCodeableConcept") or {}
    chosen: dict[str, Any] = next(
        (r for r in observation.get("referenceRange") or [] if _is_normal(r, normal) and ("low" in r or "high" in r)),
        {},
    )
    low, high = chosen.get("low") or {}, chosen.get("high") or {}

    def text(value: Any) -> str | None:
        return None if value is None else str(value)

    return LabFact(
        observation_id=str(observation.get("id", "")),
        patient=str((observation.get("subject") or {}).get("reference") or ""),
        status=str(observation.get("status") or ""),
        last_updated=str(meta.get("lastUpdated", "")),
        version_id=str(meta.get("versionId", "")),
        identifiers=_pairs(observation.get("identifier"), "system", "value"),
        codes=_pairs((observation.get("code") or {}).get("coding"), "system", "code"),
        categories=tuple(
            pair
            for category in observation.get("category") or []
            for pair in _pairs(category.get("coding"), "system", "code")
        ),
        effective_date_time=text(observation.get("effectiveDateTime")),
        effective_instant=text(observation.get("effectiveInstant")),
        effective_start=text(period.get("start")),
        effective_end=text(period.get("end")),
        effective_timing=bool(observation.get("effectiveTiming")),
        quantity_value=number_text(quantity.get("value")),
        quantity_unit=text(quantity.get("unit")),
        quantity_system=text(quantity.get("system")),
        quantity_code=text(quantity.get("code")),
        quantity_comparator=text(quantity.get("comparator")),
        concept_codes=_pairs(concept.get("coding"), "system", "code"),
        concept_text=text(concept.get("text")),
        value_string=text(observation.get("valueString")),
        range_low_value=number_text(low.get("value")),
        range_low_system=text(low.get("system")),
        range_low_code=text(low.get("code")),
        range_high_value=number_text(high.get("value")),
        range_high_system=text(high.get("system")),
        range_high_code=text(high.get("code")),
    )


def normal_range(catalogue: LabCatalogue) -> tuple[str, str]:
    """``(system, code)`` of the reference-range type that marks the normal range (mappings/fhir/codes.yaml
    ``normal_range``): ``observation_fact`` picks the range by it, and the lab view's constants must equal it."""
    normal = load_fhir_codes(catalogue.pack).normal_range
    return catalogue.pack.system_uri(normal.system), normal.code


def _is_normal(reference_range: dict[str, Any], normal: tuple[str, str]) -> bool:
    kind = reference_range.get("type")
    if not kind:
        return True
    return any((c.get("system"), c.get("code")) == normal for c in kind.get("coding", []))
