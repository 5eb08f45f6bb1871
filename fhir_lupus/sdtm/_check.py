"""The project's own check of SDTM values: what CDISC CORE's SDTMIG 3.4 rules do not catch.

CORE (../shared/cdisc-core) finds structural faults (a USUBJID missing from DM, a test code too long), but lets a
value outside its CDISC codelist (``SEX=FEMALE``), a unit that is no CDISC UNIT term (``mmol/l``) and a date that is
not ISO 8601 (``2024/01/15``) through. ``check_values`` checks every value against the terms of mappings/sdtm/, the
same ones define.xml lists, so a value the files do not declare is a located problem (dataset, row, variable,
value, why) before anyone reads the datasets: the engine writes only terms from those files, so any other value is
a bug to fix, whether the codelist is extensible or not.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fhir_lupus.errors import MappingError
from fhir_lupus.sdtm._terms import Codelist, CtTerm, SdtmTerms, load_sdtm_terms

__all__ = ["ValueProblem", "check_values", "iso8601_problem"]

# SDTMIG 3.4 4.4: an ISO 8601 date/time, right-truncated to its precision; a component not known inside it is a
# hyphen ("2003---15": day known, month not). A time zone may follow a time.
_DTC = re.compile(
    r"(?P<year>\d{4}|-)(?:-(?P<month>\d{2}|-)(?:-(?P<day>\d{2}|-)"
    r"(?:T(?P<hour>\d{2}|-)(?::(?P<minute>\d{2}|-)(?::(?P<second>\d{2}(?:\.\d+)?))?)?(?P<zone>Z|[+-]\d{2}:\d{2})?)?"
    r")?)?"
)
_LIMITS = {"month": (1, 12), "hour": (0, 23), "minute": (0, 59)}


@dataclass(frozen=True)
class ValueProblem:
    """One value of a dataset that is not what SDTM and mappings/sdtm allow. ``row`` counts from 1."""

    dataset: str
    row: int
    variable: str
    value: object
    why: str

    def __str__(self) -> str:
        return f"{self.dataset} row {self.row} {self.variable}={self.value!r}: {self.why}"


def check_values(
    dataset_name: str,
    records: Sequence[Mapping[str, object]],
    variable_codelists: Mapping[str, str | Sequence[str]] | None = None,
    *,
    terms: SdtmTerms | None = None,
) -> list[ValueProblem]:
    """Every problem of ``records`` (one dataset's rows): a value of a coded variable that is no term of its
    codelist(s) in mappings/sdtm (``variable_codelists``: variable -> codelist key, or keys when any of them will
    do; default the variables the files name), a name that does not go with its code (LBTEST with LBTESTCD), a TS
    value outside its parameter's codelist, and a --DTC value that is not ISO 8601. Empty values are not checked
    (whether a variable may be empty is CORE's rule)."""
    chosen = terms or load_sdtm_terms()
    by_variable = {
        variable: (keys,) if isinstance(keys, str) else tuple(keys)
        for variable, keys in (
            chosen.variable_codelists() if variable_codelists is None else variable_codelists
        ).items()
    }
    for keys in by_variable.values():
        for key in keys:
            chosen.codelist(key)  # an unknown key is the caller's mistake: refused before any row
    problems: list[ValueProblem] = []
    for row, record in enumerate(records, start=1):

        def problem(variable: str, why: str, *, row: int = row, record: Mapping[str, object] = record) -> None:
            problems.append(ValueProblem(dataset_name, row, variable, record.get(variable), why))

        for variable, keys in by_variable.items():
            value = record.get(variable)
            if _empty(value):
                continue
            found = _match(chosen, keys, str(value))
            if found is None:
                problem(variable, _not_a_term(chosen, keys, str(value)))
                continue
            key, term = found
            for other, why in _companions(chosen, chosen.codelists[key], term, record, by_variable):
                problem(other, why)
        for variable, value in record.items():
            if variable.endswith(chosen.date_suffix) and not _empty(value):
                refused = iso8601_problem(value)
                if refused:
                    problem(variable, refused)
    return problems


def iso8601_problem(value: object) -> str | None:
    """Why ``value`` is not an SDTM --DTC value (ISO 8601 extended, right-truncated, a hyphen for an unknown
    component inside it), or None when it is one."""
    if not isinstance(value, str):
        return f"not ISO 8601 text (a {type(value).__name__})"
    match = _DTC.fullmatch(value)
    if match is None or value.strip("-") == "":  # nothing known at all is no date
        return "not an ISO 8601 date/time (YYYY-MM-DD, YYYY-MM-DDThh:mm[:ss], or truncated: YYYY-MM, YYYY)"
    parts = {
        name: int(text) for name, text in match.groupdict().items() if text and text[0].isdigit() and name != "second"
    }
    for name, (low, high) in _LIMITS.items():
        if name in parts and not low <= parts[name] <= high:
            return f"not an ISO 8601 date/time: {name} {parts[name]} is out of range"
    if "day" in parts:
        last = calendar.monthrange(parts.get("year", 2000), parts.get("month", 1))[1] if "month" in parts else 31
        if not 1 <= parts["day"] <= last:
            return f"not an ISO 8601 date/time: day {parts['day']} does not exist in that month"
    second = match.group("second")
    if second and float(second) >= 60:
        return f"not an ISO 8601 date/time: second {second} is out of range"
    return None


def _empty(value: object) -> bool:
    return value is None or (isinstance(value, str) and value == "") or (isinstance(value, float) and value != value)


def _match(terms: SdtmTerms, keys: tuple[str, ...], value: str) -> tuple[str, CtTerm] | None:
    for key in keys:
        term = terms.find(key, value)
        if term is not None:
            return key, term
    return None


def _not_a_term(terms: SdtmTerms, keys: tuple[str, ...], value: str) -> str:
    """Why ``value`` is refused, naming the codelist(s), and the value meant when only its spelling is wrong."""
    names = []
    for key in keys:
        codelist = terms.codelists[key]
        kind = "CDISC" if codelist.code else "sponsor-defined"
        flags = f"{codelist.code}, {'extensible' if codelist.extensible else 'not extensible'}" if codelist.code else ""
        names.append(f"{kind} {key}" + (f" ({flags})" if flags else ""))
    why = f"not a term of {' or '.join(names)}"
    if keys == (terms.unit_key,):
        why = f"not a CDISC {terms.unit_key} term ({terms.codelists[terms.unit_key].code})"
    if any(not terms.codelists[key].complete for key in keys):
        why += " listed in mappings/sdtm (a CT term the trial uses or a declared sponsor-defined term)"
    meant = _meant(terms, keys, value)
    return f"{why}; the term is {meant!r}" if meant else why


def _meant(terms: SdtmTerms, keys: tuple[str, ...], value: str) -> str | None:
    """The listed value ``value`` stands for: the same letters in another case, or a unit's UCUM or site spelling."""
    for key in keys:
        for term in terms.codelists[key].terms:
            if term.value.casefold() == value.casefold() or (
                term.preferred and term.preferred.casefold() == value.casefold()
            ):
                return term.value
    if terms.unit_key in keys:
        try:
            return terms.cdisc_unit(value).value  # a UCUM code or a site's spelling (mmol/l) of a listed unit
        except MappingError:
            return None
    return None


def _companions(
    terms: SdtmTerms,
    codelist: Codelist,
    term: CtTerm,
    record: Mapping[str, object],
    by_variable: Mapping[str, tuple[str, ...]],
) -> list[tuple[str, str]]:
    """What ``term`` says about the record's other variables: the paired name (LBTEST of LBTESTCD) must be the
    term's, and a TS parameter's value must be a term of the parameter's codelist, or ISO 8601 for a date
    parameter (its code ends like a date variable's name)."""
    found: list[tuple[str, str]] = []
    if codelist.paired is not None:
        for other, keys in by_variable.items():
            given = record.get(other)
            named = codelist.paired.key in keys and not _empty(given) and given != term.name
            if named and terms.find(codelist.paired.key, str(given)) is not None:  # else: not a term, said already
                found.append((other, f"does not go with {term.value}, whose {codelist.paired.key} is {term.name!r}"))
    given = record.get(codelist.value_variable) if codelist.value_variable else None
    if codelist.value_variable and not _empty(given):
        if term.value_codelist and terms.find(term.value_codelist, str(given)) is None:
            why = _not_a_term(terms, (term.value_codelist,), str(given))
            found.append((codelist.value_variable, f"{why} (the codelist of TS parameter {term.value})"))
        refused = iso8601_problem(given) if term.value.endswith(terms.date_suffix) else None  # SSTDTC, DCUTDTC
        if refused:
            found.append((codelist.value_variable, f"{refused} (TS parameter {term.value} is a date)"))
    return found
