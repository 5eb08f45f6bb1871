"""Plain-Python forms of the FHIRPath invariants in mappings/fhir/invariants.yaml: the fast validation path.

Why: fhirpathpy interprets an expression tree per call (tens of microseconds per rule, and dom-3 walks
``descendants()`` of every lab Observation); the checks below take a microsecond or two. They must give the
verdicts fhirpathpy gives, so:

- each predicate is registered for one invariant key AND the exact expression text it implements. When
  invariants.yaml changes an expression (or adds a rule), the predicate no longer matches and that rule is
  evaluated by fhirpathpy again: a rule can get slower, never different;
- a predicate answers True (the rule holds), False (it is broken) or None: "not sure". It says None whenever
  the resource holds something whose FHIRPath semantics it does not model exactly: a primitive extension
  (``_start``), a JSON null inside a list, an element of an unexpected JSON type, a modifierExtension, or
  date-times of different precision or offset. fhirpathpy then decides that resource's rule;
- tests/test_validation_differential.py breaks every rule of invariants.yaml on purpose and checks that both
  paths reject the same resources for the same rule keys, and accept the valid ones.

Navigation follows fhirpathpy 2.2 (engine/evaluators member_invocation): a member is present when its value
is neither null nor an empty list; a choice element (``value``) is present when one of the types its FHIR
model lists (fhirpathpy's ``choiceTypePaths``) is.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

__all__ = ["Predicate", "fast_predicate"]

Predicate = Callable[[dict[str, Any]], bool | None]


class _Unsure(Exception):
    """The resource leaves the domain the predicate models exactly: fhirpathpy must decide."""


def _members(node: Any, key: str) -> list[Any]:
    """What ``node.key`` yields in fhirpathpy, for a plain (non-choice) element (the node's own list: read only)."""
    if not isinstance(node, dict):
        raise _Unsure
    if f"_{key}" in node:
        raise _Unsure
    value = node.get(key)
    if value is None:
        return []
    if isinstance(value, list):
        if any(item is None for item in value):
            raise _Unsure
        return value
    return [value]


def _objects(node: Any, key: str) -> list[dict[str, Any]]:
    """``node.key`` where every item must be a JSON object (an element with children)."""
    items = _members(node, key)
    if not all(isinstance(item, dict) for item in items):
        raise _Unsure
    return items


@functools.cache
def _choice_types(path: str) -> frozenset[str]:
    from fhirpathpy.models import models

    types = models["r4"]["choiceTypePaths"].get(path)
    if not types:
        raise LookupError(f"fhirpathpy's R4 model has no choice element {path}")
    return frozenset(types)


def _has_choice(node: Any, key: str, path: str) -> bool:
    """Whether ``node.key`` (a choice element, FHIR path ``path``) yields anything: some ``key<Type>`` of the
    model's types does. Walks the node's own keys (a handful), not the 50 types an Extension value may have."""
    if not isinstance(node, dict):
        raise _Unsure
    kinds, size = _choice_types(path), len(key)
    found = False
    for name in node:
        if name.startswith(key) and name[size:] in kinds:
            found = found or bool(_members(node, name))
        elif name.startswith(f"_{key}") and name[size + 1 :] in kinds:
            raise _Unsure
    return found


def _contained(resource: dict[str, Any]) -> list[dict[str, Any]]:
    return _objects(resource, "contained")


def _dom_2(resource: dict[str, Any]) -> bool:
    return not any(_members(item, "contained") for item in _contained(resource))


def _dom_3(resource: dict[str, Any]) -> bool:
    contained = _contained(resource)
    # The common case first: each contained resource is referenced from a top-level element (a lab's specimen).
    # Those elements are descendants, so a hit there settles it; a miss still needs the full walk below.
    top = {value.get("reference") for value in resource.values() if type(value) is dict}
    if all(type(item.get("id")) is str and f"#{item['id']}" in top for item in contained):
        return True
    references: set[str] = set()
    pending: list[Any] = list(resource.values())  # descendants() starts below the root
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            if any(key[:1] == "_" for key in node):
                raise _Unsure  # how descendants() walks primitive extensions is fhirpathpy's business
            for reference in _members(node, "reference"):
                if not isinstance(reference, str):
                    raise _Unsure
                references.add(reference)
            pending.extend(node.values())
    for item in contained:
        ids = _members(item, "id")
        if len(ids) != 1 or not isinstance(ids[0], str):
            raise _Unsure
        if f"#{ids[0]}" not in references:
            return False
    return True


def _dom_4(resource: dict[str, Any]) -> bool:
    metas = [meta for item in _contained(resource) for meta in _objects(item, "meta")]
    return not any(_members(meta, "versionId") or _members(meta, "lastUpdated") for meta in metas)


def _dom_5(resource: dict[str, Any]) -> bool:
    metas = [meta for item in _contained(resource) for meta in _objects(item, "meta")]
    return not any(_members(meta, "security") for meta in metas)


def _extension_holds(extension: dict[str, Any]) -> bool:
    return bool(_members(extension, "extension")) != _has_choice(extension, "value", "Extension.value")


def _ext_1(resource: dict[str, Any]) -> bool:
    if _members(resource, "modifierExtension"):
        raise _Unsure  # its FHIRPath type depends on the path: left to fhirpathpy
    extensions = [  # a new list: _members hands out the resource's own lists, which are never modified
        *_objects(resource, "extension"),
        *(ext for component in _objects(resource, "component") for ext in _objects(component, "extension")),
    ]
    return all(_extension_holds(extension) for extension in extensions)


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})")


def _ordered(start: Any, end: Any) -> bool:
    """``start <= end`` for two dates, or two date-times to the second with the same offset; else unsure.

    Within one of these forms the text order is the time order, and FHIRPath compares them at one precision.
    """
    if not isinstance(start, str) or not isinstance(end, str):
        raise _Unsure
    if _DATE.fullmatch(start) and _DATE.fullmatch(end):
        return start <= end
    first, second = _DATE_TIME.fullmatch(start), _DATE_TIME.fullmatch(end)
    if first and second and first.group(1) == second.group(1):
        return start <= end
    raise _Unsure


_PERIODS = (
    "period",
    "performedPeriod",
    "effectivePeriod",
    "actualPeriod",
    "occurrencePeriod",
    "occurencePeriod",
    "progress",
)


def _per_1(resource: dict[str, Any]) -> bool:
    for key in _PERIODS:
        for period in _objects(resource, key):
            starts, ends = _members(period, "start"), _members(period, "end")
            if not starts or not ends:
                continue
            if len(starts) != 1 or len(ends) != 1:
                raise _Unsure
            if not _ordered(starts[0], ends[0]):
                return False
    return True


def _obs_3(resource: dict[str, Any]) -> bool:
    return all(
        _members(item, "low") or _members(item, "high") or _members(item, "text")
        for item in _objects(resource, "referenceRange")
    )


def _obs_6(resource: dict[str, Any]) -> bool:
    return not _members(resource, "dataAbsentReason") or not _has_choice(resource, "value", "Observation.value")


def _codings(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [coding for code in _objects(node, "code") for coding in _objects(code, "coding")]


def _obs_7(resource: dict[str, Any]) -> bool:
    if not _has_choice(resource, "value", "Observation.value"):
        return True
    own = _codings(resource)
    # fhirpathpy's intersect compares the codings' JSON objects with ==
    return not any(coding in own for component in _objects(resource, "component") for coding in _codings(component))


def _qty_3(resource: dict[str, Any]) -> bool:
    return all(
        not _members(quantity, "code") or bool(_members(quantity, "system"))
        for quantity in _objects(resource, "valueQuantity")
    )


def _grp_1(resource: dict[str, Any]) -> bool:
    if not _members(resource, "member"):
        return True
    actual = _members(resource, "actual")
    if len(actual) != 1 or not isinstance(actual[0], bool):
        raise _Unsure
    return actual[0]


def _pat_1(resource: dict[str, Any]) -> bool:
    return all(
        any(_members(contact, key) for key in ("name", "telecom", "address", "organization"))
        for contact in _objects(resource, "contact")
    )


# key -> (the exact expression of mappings/fhir/invariants.yaml it implements, the predicate)
_PREDICATES: dict[str, tuple[str, Callable[[dict[str, Any]], bool]]] = {
    "dom-2": ("contained.contained.empty()", _dom_2),
    "dom-3": ("contained.all(('#' + id) in %resource.descendants().reference)", _dom_3),
    "dom-4": ("contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()", _dom_4),
    "dom-5": ("contained.meta.security.empty()", _dom_5),
    "ext-1": (
        "extension.all(extension.exists() != value.exists()) and component.extension.all(extension.exists() != "
        "value.exists()) and modifierExtension.all(extension.exists() != value.exists())",
        _ext_1,
    ),
    "per-1": (
        "(period | performedPeriod | effectivePeriod | actualPeriod | occurrencePeriod | occurencePeriod | "
        "progress).all(start.empty() or end.empty() or start <= end)",
        _per_1,
    ),
    "obs-3": ("referenceRange.all(low.exists() or high.exists() or text.exists())", _obs_3),
    "obs-6": ("dataAbsentReason.empty() or value.empty()", _obs_6),
    "obs-7": (
        "value.empty() or component.code.where(coding.intersect(%resource.code.coding).exists()).empty()",
        _obs_7,
    ),
    "qty-3": ("valueQuantity.all(code.empty() or system.exists())", _qty_3),
    "grp-1": ("member.empty() or (actual = true)", _grp_1),
    "pat-1": ("contact.all(name.exists() or telecom.exists() or address.exists() or organization.exists())", _pat_1),
}
# Which resource types each predicate's FHIR paths assume (choice elements resolve per type).
_TYPES: dict[str, tuple[str, ...]] = {"obs-6": ("Observation",), "obs-7": ("Observation",)}


def fast_predicate(key: str, expression: str, resource_type: str) -> Predicate | None:
    """The plain-Python form of rule ``key`` if it implements exactly ``expression``, else None (fhirpathpy)."""
    known = _PREDICATES.get(key)
    if known is None or known[0] != expression:
        return None
    if key in _TYPES and resource_type not in _TYPES[key]:
        return None
    check = known[1]

    def predicate(resource: dict[str, Any]) -> bool | None:
        try:
            return check(resource)
        except _Unsure:
            return None

    return predicate
