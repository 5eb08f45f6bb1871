"""The lab view (mappings/views/lab_observation.json) and the LabFacts its rows make: plain Python, no Spark.

The SQL-on-FHIR view flattens each Observation into rows: one ``fact`` row with the scalar columns, then one
row per identifier, code coding, category coding and valueCodeableConcept coding, each repeating the scalars
(a view column holds primitives only, and a system must stay with its code). Pathling emits the rows of one
resource together and in the resource's order (one ``inline`` of one array per resource), so ``facts_from_rows``
folds consecutive rows back into one LabFact per Observation; a pair row that does not follow its own fact row
is an error, never a guess. Three values are not taken from the view but from each line's JSON text
(``RAW_FIELDS``): Pathling encodes decimals as decimal(32,6) without the literal's form (``1.0`` comes back as
``1``) and instants as timestamps, while the lab table keeps the source's text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import fields, replace
from typing import Any

from fhir_lupus.errors import MappingError
from fhir_lupus.pull import LabFact, number_text
from fhir_lupus.terminology import MappingPack, load_pack

__all__ = [
    "PAIR_FIELDS",
    "RAW_FIELDS",
    "VIEW_FILE",
    "fact_resource",
    "facts_from_rows",
    "load_lab_view",
    "with_raw",
]

VIEW_FILE = "views/lab_observation.json"
# LabFact field <- the pair_kind of the view's forEach rows that fill it
PAIR_FIELDS = {"identifier": "identifiers", "code": "codes", "category": "categories", "concept": "concept_codes"}
# LabFact field <- JSON path in the resource's own text (the literal form the lab table keeps)
RAW_FIELDS = {
    "quantity_value": "$.valueQuantity.value",
    "last_updated": "$.meta.lastUpdated",
    "effective_instant": "$.effectiveInstant",
}
_SCALARS = tuple(f.name for f in fields(LabFact) if f.name not in PAIR_FIELDS.values() and f.name not in RAW_FIELDS)


def load_lab_view(normal: tuple[str, str], pack: MappingPack | None = None) -> dict[str, Any]:
    """The ViewDefinition of ``pack`` (default: ``load_pack()``), checked against what the Python path assumes:
    every scalar LabFact column is selected, and the normal range's type is the mapping pack's (``normal``:
    system and code, pull.normal_range)."""
    path = (pack or load_pack()).root / VIEW_FILE
    try:
        view: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MappingError(f"{path}: cannot read the lab view ({exc})") from None
    if view.get("resourceType") != "ViewDefinition" or view.get("resource") != "Observation":
        raise MappingError(f"{path}: not a ViewDefinition of Observation")
    columns = {c.get("name") for select in view.get("select", []) for c in select.get("column", [])}
    if missing := [name for name in _SCALARS if name not in columns]:
        raise MappingError(f"{path}: select has no column {', '.join(missing)} (LabFact's fields)")
    constants = {
        c.get("name"): c.get("valueUri", c.get("valueCode", c.get("valueString"))) for c in view.get("constant", [])
    }
    for name, expected in zip(("normal_meaning", "normal_code"), normal, strict=True):
        if constants.get(name) != expected:
            raise MappingError(
                f"{path}: constant {name} is {constants.get(name)!r}, but the mapping pack's normal range "
                f"(mappings/fhir/codes.yaml normal_range) says {expected!r}"
            )
    return view


def facts_from_rows(rows: Iterable[Mapping[str, Any]]) -> Iterator[LabFact]:
    """One LabFact (without ``RAW_FIELDS``) per Observation, from the view's rows in the order Pathling gives them.

    A ``fact`` row opens an Observation; the pair rows after it, of the same observation_id, add its identifiers
    and codings in their order. ``ValueError`` when a pair row has no open fact of its id.
    """
    current: dict[str, Any] | None = None
    for row in rows:
        kind = row["pair_kind"]
        if kind == "fact":
            if current is not None:
                yield _fact(current)
            current = {name: row[name] for name in _SCALARS}
            current.update({name: [] for name in PAIR_FIELDS.values()})
            continue
        if current is None or current["observation_id"] != row["observation_id"]:
            raise ValueError(f"view row {kind} of Observation/{row['observation_id']} does not follow its fact row")
        current[PAIR_FIELDS[kind]].append((row["pair_system"] or "", row["pair_value"] or ""))
    if current is not None:
        yield _fact(current)


def _fact(columns: dict[str, Any]) -> LabFact:
    values = dict(columns)
    for name in ("observation_id", "patient", "status", "version_id"):
        values[name] = values[name] or ""
    values["effective_timing"] = values["effective_timing"] in (True, "true")  # a boolean, or its text
    for name in ("range_low_value", "range_high_value"):
        values[name] = number_text(values[name])
    for name in PAIR_FIELDS.values():
        values[name] = tuple(values[name])
    return LabFact(**values)


def with_raw(fact: LabFact, quantity_value: str | None, last_updated: str | None, instant: str | None) -> LabFact:
    """``fact`` with the values read from the resource's JSON text (``RAW_FIELDS``)."""
    return replace(
        fact, quantity_value=number_text(quantity_value), last_updated=last_updated or "", effective_instant=instant
    )


def fact_resource(fact: LabFact) -> dict[str, Any]:
    """The elements of an Observation that the lab selection reads (``pull.LabSelection.wanted``,
    ``patient_of``), rebuilt from a LabFact, so the selection rules are applied by the same code on both paths."""

    def coding(system: str, code: str) -> dict[str, str]:
        return {k: v for k, v in (("system", system), ("code", code)) if v}

    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": fact.observation_id,
        "subject": {"reference": fact.patient},
        "code": {"coding": [coding(*pair) for pair in fact.codes]},
        "category": [{"coding": [coding(*pair) for pair in fact.categories]}],
    }
    if fact.effective_date_time:
        resource["effectiveDateTime"] = fact.effective_date_time
    if fact.effective_instant:
        resource["effectiveInstant"] = fact.effective_instant
    period = {k: v for k, v in (("start", fact.effective_start), ("end", fact.effective_end)) if v}
    if period:
        resource["effectivePeriod"] = period
    if fact.effective_timing:
        resource["effectiveTiming"] = {"present": True}  # only its presence is read
    return resource
