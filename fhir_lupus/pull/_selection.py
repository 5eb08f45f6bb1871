"""Which Observations are the trial's lab results: the lab category or a catalogue code, on or after a floor.

Every path selects alike: the search pass applies the floor of each subject to what a group search brought
(``reaches``), the bulk pass and the NDJSON path select among the resources at hand (``LabSelection.wanted``), and
Spark applies the same function to resources rebuilt from the view's facts (``spark._view.fact_resource``).
``patient_of`` hands a result to its subject, whatever the form of its reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fhir_lupus.client import location_id
from fhir_lupus.pull._search import matches, parse_instant
from fhir_lupus.terminology import MappingPack, load_fhir_codes

__all__ = ["LabSelection", "lab_category", "patient_of", "reaches"]


def patient_of(observation: dict[str, Any]) -> str:
    """``Patient/<id>`` of the Observation's subject, whether the reference is relative, absolute or versioned."""
    reference = str((observation.get("subject") or {}).get("reference") or "")
    patient_id = location_id(reference, "Patient")
    return f"Patient/{patient_id}" if patient_id else reference


def lab_category(pack: MappingPack) -> str:
    """``system|code`` of the laboratory category, from the entry the mappers write (mappings/fhir/codes.yaml
    ``lab_category``): the search's ``category``, the bulk ``_typeFilter`` and the NDJSON and Spark selection all
    ask for this one token, so pull finds what push wrote."""
    category = load_fhir_codes(pack).lab_category
    return f"{pack.system_uri(category.system)}|{category.code}"


@dataclass(frozen=True)
class LabSelection:
    """Which Observations of a subject are lab results of the trial, as pull's searches ask for them.

    ``category`` is ``system|code`` of the laboratory category; ``codes`` the catalogue's ``system|code``
    keys. A result counts when it has the category or one of the codes, and (``date=ge<floor>``) when its
    effective time reaches the subject's date floor.
    """

    category: str
    codes: frozenset[str]

    def wanted(self, observation: dict[str, Any], floor: date | None) -> bool:
        if floor is not None and not reaches(observation, floor):
            return False
        if matches(observation, "category", self.category):
            return True
        codings = (observation.get("code") or {}).get("coding") or []
        return any(f"{c.get('system', '')}|{c.get('code', '')}" in self.codes for c in codings)


def reaches(observation: dict[str, Any], floor: date) -> bool:
    """Whether ``date=ge<floor>`` matches the Observation, as FHIR search reads it: its effective time ends on or
    after the floor's start (a date or partial date lasts until its end; a period without an end goes on), the
    floor read as UTC midnight. An effective time we cannot read keeps the result: nothing is dropped on a guess.
    """
    start = datetime(floor.year, floor.month, floor.day, tzinfo=UTC)
    ends: list[datetime | None] = [
        _end_of(str(observation[key])) for key in ("effectiveDateTime", "effectiveInstant") if observation.get(key)
    ]
    period = observation.get("effectivePeriod") or {}
    if period.get("end"):
        ends.append(_end_of(str(period["end"])))
    elif period.get("start"):
        ends.append(None)  # still going on
    if observation.get("effectiveTiming"):
        ends.append(None)  # not read here
    return any(end is None or end > start for end in ends)


def _end_of(value: str) -> datetime | None:
    """The exclusive end of a FHIR date, dateTime or instant (``2008`` ends at 2009-01-01); None if unreadable."""
    text = value.strip()
    try:
        if "T" in text:
            moment = parse_instant(text)
            return moment + timedelta(microseconds=1) if moment else None
        parts = [int(p) for p in text.split("-")]
        if len(parts) == 1:
            return datetime(parts[0] + 1, 1, 1, tzinfo=UTC)
        if len(parts) == 2:
            year, month = parts
            return datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        year, month, day = parts[:3]
        return datetime(year, month, day, tzinfo=UTC) + timedelta(days=1)
    except ValueError:
        return None
