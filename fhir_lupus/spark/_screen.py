"""Each NDJSON line, before Spark hands it to Pathling: plain Python, run per line on the executors.

Pathling parses with HAPI's strict parser, inside one Spark job: a single value it refuses (a status or a
comparator outside its required value set, a malformed date) fails the task and with it the whole run, and the
error names no line. So every line is screened first, the way the pull reads results:
- a line that is not JSON, or not a FHIR resource, is a *reject*: its file, line number and reason go to the
  rejects output (the local path, ``pull.read_ndjson``, stops there; one bad line of a registry export must not);
- an Observation whose every value the screen knows the parser accepts goes to Pathling's view (``"view"``);
- any other Observation skips the view: its fact is read from the JSON here (``observation_fact``, the rule the
  view mirrors), so the pull's classification sets it aside with the same reason pull gives (``"fact"``).
Sending a parsable result the JSON way only costs time (both ways give the same fact), so the screen is strict:
a date must match FHIR's own pattern, a number must be a JSON number. A value the screen does not foresee and
HAPI refuses still stops the run with HAPI's reason (``spark_labs``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from fhir_lupus.pull import observation_fact

__all__ = ["Reject", "Screen", "Where"]

# FHIR R4's own regular expressions for its date and time types (http://hl7.org/fhir/R4/datatypes.html)
_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_MONTH, _DAY = r"(0[1-9]|1[0-2])", r"(0[1-9]|[1-2][0-9]|3[0-1])"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
_ZONE = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
DATE_TIME = re.compile(rf"{_YEAR}(-{_MONTH}(-{_DAY}(T{_TIME}{_ZONE})?)?)?")
INSTANT = re.compile(rf"{_YEAR}-{_MONTH}-{_DAY}T{_TIME}{_ZONE}")
# the elements the view reads whose text the parser converts: path of keys -> the pattern it must match
_DATES: dict[tuple[str, ...], re.Pattern[str]] = {
    ("effectiveDateTime",): DATE_TIME,
    ("effectivePeriod", "start"): DATE_TIME,
    ("effectivePeriod", "end"): DATE_TIME,
    ("effectiveInstant",): INSTANT,
    ("issued",): INSTANT,
    ("meta", "lastUpdated"): INSTANT,
}
# the elements the view reads, by the JSON shape the parser needs (an object, or an array of objects)
_OBJECTS = ("code", "subject", "meta", "valueQuantity", "valueCodeableConcept", "effectivePeriod")
_ARRAYS = ("category", "identifier", "referenceRange")

Where = tuple[str, int]  # file name, line number (from 1)


@dataclass(frozen=True)
class Reject:
    """A line set aside before any rule could read it: where it is and why."""

    file: str
    line: int
    observation_id: str
    reason: str


@dataclass(frozen=True)
class Screen:
    """What decides, per line, between Pathling's view, the JSON reading, and the rejects (picklable)."""

    statuses: frozenset[str]  # every status pull.yaml names: the parser accepts them all
    comparators: frozenset[str]  # pull.yaml quantity_comparators
    normal: tuple[str, str]  # the normal range's type, for observation_fact

    def __call__(self, lines: Iterable[tuple[Where, str]]) -> Iterator[tuple[str, Any]]:
        """``("view", text)``, ``("fact", (where, LabFact))`` or ``("reject", Reject)`` per Observation line;
        other resources and blank lines give nothing (the driver reads the small types itself)."""
        for (file, number), text in lines:
            if not text.strip():
                continue
            try:
                resource = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                yield "reject", Reject(file, number, "", f"not JSON ({exc})")
                continue
            if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
                yield "reject", Reject(file, number, "", "not a FHIR resource (no resourceType)")
                continue
            if resource["resourceType"] != "Observation":
                continue
            if self.parsable(resource):
                yield "view", text
                continue
            try:
                yield "fact", ((file, number), observation_fact(resource, self.normal))
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                yield "reject", Reject(file, number, str(resource.get("id", "")), f"unreadable Observation ({exc!r})")

    def parsable(self, resource: dict[str, Any]) -> bool:
        """Whether HAPI's parser is known to accept every value of ``resource`` that the view reads: a known
        status, known comparators, dates in FHIR's patterns, numbers as JSON numbers, objects where objects go."""
        if resource.get("status") not in self.statuses:
            return False
        if any(not isinstance(resource.get(name, {}), dict) for name in _OBJECTS):
            return False
        if any(len(_dicts(resource.get(name, []))) != len(resource.get(name, [])) for name in _ARRAYS):
            return False
        if not all(c in self.comparators for c in _comparators(resource)):
            return False
        for path, pattern in _DATES.items():
            value = _at(resource, path)
            if value is not None and not (isinstance(value, str) and pattern.fullmatch(value)):
                return False
        quantities = [resource.get("valueQuantity")]
        quantities += [r.get(b) for r in _dicts(resource.get("referenceRange")) for b in ("low", "high")]
        return all(_number_or_absent(q) for q in quantities)


def _at(resource: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = resource
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _number_or_absent(quantity: Any) -> bool:
    if quantity is None:
        return True
    if not isinstance(quantity, dict):
        return False
    value = quantity.get("value")
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _comparators(resource: dict[str, Any]) -> Iterator[Any]:
    """Every ``comparator`` of the resource, at any depth (a Quantity's, wherever the Quantity is)."""
    pending: list[Any] = [resource]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if "comparator" in node:
                yield node["comparator"]
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
