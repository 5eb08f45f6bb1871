"""Records of a domain from its row source, as its mapping (``DomainSpec``) says: the one generic step between the
trial's facts and an SDTM dataset.

Study days follow SDTMIG 3.4 (section 4.4.4): day 1 is the subject's RFSTDTC date, the day before it is day -1, and
there is no day 0; a date that is not a full date (or a subject without RFSTDTC) has no study day. --SEQ numbers a
subject's records 1, 2, ... in the order of the dataset's key variables.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from fhir_lupus.errors import FhirLupusError
from fhir_lupus.sdtm._spec import DomainSpec, Variable

__all__ = ["Dataset", "Value", "build_dataset", "iso_8601", "study_day"]

Value = str | int | float | None
YES_NO = {True: "yes", False: "no"}  # the project's own words for a truth, as its CSV files write them


@dataclass(frozen=True)
class Dataset:
    """A domain's records (variable name -> value, in the spec's variable order), ready for the writers."""

    spec: DomainSpec
    records: list[dict[str, Value]]

    @property
    def name(self) -> str:
        return self.spec.domain


def iso_8601(value: Any) -> str:
    """A date or date-time as SDTM --DTC writes it: ISO 8601, local clock time to the minute (or second) as
    recorded, without the offset (SDTMIG 3.4 section 4.4.1: dates are collected local times)."""
    if value is None or value == "":
        return ""
    if isinstance(value, datetime):
        local = value.replace(tzinfo=None)
        return local.isoformat(timespec="seconds" if local.second else "minutes")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)  # already a (possibly partial) ISO 8601 date, e.g. a birth year


def study_day(dtc: str, reference: str) -> int | None:
    """SDTMIG's study day of ``dtc`` relative to ``reference`` (RFSTDTC): no day 0; None for a partial date."""
    if len(dtc) < 10 or len(reference) < 10:
        return None
    days = (date.fromisoformat(dtc[:10]) - date.fromisoformat(reference[:10])).days
    return days + 1 if days >= 0 else days


def build_dataset(
    spec: DomainSpec,
    rows: Iterable[Mapping[str, Any]],
    starts: Mapping[str, str],
    lookup: Callable[[str, str], str] | None = None,
) -> Dataset:
    """The records of ``rows``: each variable from its fact or constant, transformed, and turned into its term by
    ``lookup(codelist, value)`` when the mapping names a codelist (``SdtmTerms.submission_value``); ``starts``:
    RFSTDTC by USUBJID (for study days). Sorted by the key variables, then --SEQ numbered per subject. A value no
    term is mapped from is an error naming it: never a value passed through as if it were a CDISC term."""
    records: list[dict[str, Value]] = []
    for row in rows:
        record: dict[str, Value] = {}
        for variable in spec.variables:
            value = _value(variable, row, record, starts)
            if variable.lookup and value not in (None, ""):
                value = _looked_up(spec, variable, value, lookup)
            record[variable.name] = value
        records.append(record)
    keys = [k for k in spec.keys if not _is_seq(spec, k)]
    records.sort(key=lambda r: tuple(_sortable(r.get(k)) for k in keys))
    for variable in spec.variables:
        if variable.transform == "seq":
            counters: defaultdict[Value, int] = defaultdict(int)
            for record in records:
                counters[record.get("USUBJID")] += 1
                record[variable.name] = counters[record.get("USUBJID")]
    return Dataset(spec, records)


def _looked_up(spec: DomainSpec, variable: Variable, value: Value, lookup: Callable[[str, str], str] | None) -> str:
    if lookup is None:
        raise FhirLupusError(f"{spec.domain}.{variable.name}: codelist {variable.lookup} asked, no terms given")
    try:
        return lookup(variable.lookup or "", str(value))
    except FhirLupusError as exc:
        raise FhirLupusError(f"{spec.domain}.{variable.name}: {exc}") from None


def _is_seq(spec: DomainSpec, name: str) -> bool:
    return any(v.name == name and v.transform == "seq" for v in spec.variables)


def _sortable(value: Value) -> tuple[int, Any]:
    """Numbers before text, empty last: a key sorts the same whatever its type."""
    if value is None or value == "":
        return (2, "")
    if isinstance(value, int | float):
        return (0, value)
    return (1, value)


def _value(variable: Variable, row: Mapping[str, Any], record: Mapping[str, Value], starts: Mapping[str, str]) -> Value:
    if variable.transform == "seq":
        return None  # numbered once the records are sorted
    raw = variable.value if variable.value is not None else row.get(variable.source or "")
    match variable.transform:
        case "iso_date":
            return iso_8601(raw)
        case "study_day":
            reference = starts.get(str(record.get("USUBJID") or ""), "")
            dtc = str(record.get(variable.relative_to or "") or "")
            return study_day(dtc, reference)
        case "yes_no":  # a truth as the NY codelist's source values (mappings/sdtm/terms.yaml), for `lookup: NY`
            return "" if raw is None else YES_NO[bool(raw)]
    return _typed(variable, raw)


def _typed(variable: Variable, raw: Any) -> Value:
    if raw is None or raw == "":
        return None if variable.type != "text" else ""
    if variable.type == "integer":
        return int(raw)
    if variable.type == "float":
        return float(raw)
    return str(raw)
