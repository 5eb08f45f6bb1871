"""CDISC controlled terminology of the SDTM datasets: the codelists of mappings/sdtm/, read and looked up.

The terms are data (mappings/sdtm/terms.yaml, lab_terms.yaml, units.yaml), each with its codelist's NCI code and the
CT package it comes from, so define.xml and the datasets write the same values and a reviewer can trace every one.
The contract is frozen pydantic with ``extra="forbid"``, and the rules SDTM sets on terminology are checked when the
files load: a sponsor-defined term only in an extensible codelist, a CT term always with its code, a test code of
at most 8 characters and a test name of at most 40. Which codelist plays which part (the lab test codes, the units)
is named by the files too, so no codelist name is written here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fhir_lupus.errors import MappingError
from fhir_lupus.terminology import MappingPack, load_pack

__all__ = [
    "CdiscUnit",
    "Codelist",
    "CtTerm",
    "LabTest",
    "SdtmTerms",
    "load_sdtm_terms",
]

TERMS_FILE = "sdtm/terms.yaml"
LAB_TERMS_FILE = "sdtm/lab_terms.yaml"
UNITS_FILE = "sdtm/units.yaml"
_NCI_CODE = r"^C\d+$"
_SPONSOR = "sponsor-defined"
_CODE_MAX = 8  # SDTMIG: --TESTCD and TSPARMCD values
_NAME_MAX = 40  # SDTMIG: --TEST and TSPARM values


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CtTerm(_Frozen):
    """One term: a CDISC CT term (``code`` its NCI code) or a sponsor-defined one (no code; ``sponsor`` says why)."""

    value: str = Field(min_length=1)  # the submission value
    code: str | None = Field(default=None, pattern=_NCI_CODE)
    preferred: str | None = None  # the NCI preferred term
    name: str | None = None  # the paired codelist's submission value (LBTEST of an LBTESTCD term)
    from_: tuple[str, ...] = Field(default=(), alias="from")  # the project's values that map to it
    sponsor: str | None = None
    value_codelist: str | None = None  # a TS parameter: the codelist its value takes

    @model_validator(mode="after")
    def _ct_or_sponsor(self) -> CtTerm:
        if (self.code is None) == (self.sponsor is None):
            raise ValueError(f"term {self.value!r}: give either its CT `code` or, sponsor-defined, `sponsor` (why)")
        if self.code is None and self.preferred is not None:
            raise ValueError(f"term {self.value!r}: a sponsor-defined term has no NCI preferred term")
        return self

    @property
    def sponsor_defined(self) -> bool:
        return self.code is None


class PairedCodelist(_Frozen):
    key: str
    code: str = Field(pattern=_NCI_CODE)
    name: str
    variables: tuple[str, ...] = ()


class Codelist(_Frozen):
    """A codelist and the terms of it the trial uses; ``code`` None: a sponsor-defined codelist."""

    code: str | None = Field(pattern=_NCI_CODE)
    name: str
    extensible: bool
    source: str  # "CDISC SDTM CT 2015-12-18, codelist C66731", or "sponsor-defined: why"
    complete: bool = False  # every term of the CDISC codelist is listed
    variables: tuple[str, ...] = ()
    mapped_from: str | None = None
    paired: PairedCodelist | None = None
    value_variable: str | None = None
    terms: tuple[CtTerm, ...] = ()
    no_term: dict[str, str] = {}

    @model_validator(mode="after")
    def _sdtm_rules(self) -> Codelist:
        if self.code is None:
            if not self.source.startswith(_SPONSOR) or any(not term.sponsor_defined for term in self.terms):
                raise ValueError("a sponsor-defined codelist (code null) says so in `source` and has no CT terms")
            if self.complete:
                raise ValueError("only a CDISC codelist can be complete")
        elif self.code not in self.source.split():
            raise ValueError(f"source {self.source!r} does not name the codelist's code {self.code}")
        if not self.extensible and self.code is not None:
            extra = [term.value for term in self.terms if term.sponsor_defined]
            if extra:
                raise ValueError(f"sponsor-defined terms {extra} in a codelist that is not extensible")
        values = [term.value for term in self.terms]
        sources = [value for term in self.terms for value in term.from_]
        for what, seen in (("value", values), ("`from` value", sources)):
            repeated = sorted({item for item in seen if seen.count(item) > 1})
            if repeated:
                raise ValueError(f"{what}s {repeated} appear twice")
        if set(sources) & set(self.no_term):
            raise ValueError(f"{sorted(set(sources) & set(self.no_term))} are both mapped and in no_term")
        if (self.paired is None) != all(term.name is None for term in self.terms) and self.terms:
            raise ValueError("every term of a paired codelist has a `name`, and only those")
        if self.paired is not None:
            long = [t.value for t in self.terms if len(t.value) > _CODE_MAX]
            long += [t.name for t in self.terms if t.name and len(t.name) > _NAME_MAX]
            if long:
                raise ValueError(f"{long}: a code is at most {_CODE_MAX} characters, a name at most {_NAME_MAX}")
        return self

    def term_source(self, term: CtTerm) -> str:
        """Where ``term`` comes from: the CT package and codelist, or why it is sponsor-defined."""
        return self.source if term.code is not None else f"{_SPONSOR}: {term.sponsor}"


class TermsFile(_Frozen):
    package: str
    date_variables_end_with: str = Field(min_length=1)
    codelists: dict[str, Codelist]


class LabRoles(_Frozen):
    """Which codelist of lab_terms.yaml is which: the test codes (by analyte), the specimens, the methods."""

    lab_test: str
    specimen: str
    method: str


class LabTermsFile(_Frozen):
    roles: LabRoles
    codelists: dict[str, Codelist]


class UnitEntry(_Frozen):
    """A UCUM unit's CDISC UNIT term (``code``), or a sponsor-defined unit (no code; ``sponsor`` says why)."""

    cdisc: str = Field(min_length=1)
    code: str | None = Field(default=None, pattern=_NCI_CODE)
    preferred: str | None = None
    basis: Literal["same", "synonym", "equal"] | None = None
    synonym: str | None = None
    sponsor: str | None = None

    @model_validator(mode="after")
    def _coded_or_sponsor(self) -> UnitEntry:
        if (self.code is None) == (self.sponsor is None) or (self.code is None) != (self.basis is None):
            raise ValueError(f"{self.cdisc!r}: a CDISC term has `code` and `basis`, a sponsor-defined unit `sponsor`")
        if (self.basis == "synonym") != (self.synonym is not None):
            raise ValueError(f"{self.cdisc!r}: `synonym` goes with basis synonym, and only with it")
        return self


class UnitsTableFile(_Frozen):
    codelist: dict[str, Codelist] = Field(min_length=1, max_length=1)
    units: dict[str, UnitEntry]


@dataclass(frozen=True)
class CdiscUnit:
    """The unit an SDTM dataset writes for a UCUM unit, with where it comes from."""

    ucum: str
    value: str
    code: str | None
    source: str


@dataclass(frozen=True)
class LabTest:
    """LBTESTCD and LBTEST of an analyte, the NCI code they share (None: sponsor-defined) and their source."""

    testcd: str
    test: str
    code: str | None
    source: str


@dataclass(frozen=True)
class SdtmTerms:
    """Every codelist of mappings/sdtm/, by key, with the paired name codelists (LBTEST) and the unit codelist built
    from the UCUM table. Made by ``load_sdtm_terms`` once per mapping pack."""

    package: str
    date_suffix: str  # the end of a date variable's name (--DTC)
    codelists: dict[str, Codelist]
    lab_roles: LabRoles
    unit_key: str
    units: dict[str, UnitEntry]  # UCUM code -> its CDISC unit
    aliases: dict[str, str]  # a site's spelling -> UCUM (mappings/terminology/units.yaml)

    @functools.cached_property
    def _by_value(self) -> dict[str, dict[str, CtTerm]]:
        return {key: {term.value: term for term in cl.terms} for key, cl in self.codelists.items()}

    @functools.cached_property
    def _by_source(self) -> dict[str, dict[str, CtTerm]]:
        return {key: {value: term for term in cl.terms for value in term.from_} for key, cl in self.codelists.items()}

    def codelist(self, key: str) -> Codelist:
        try:
            return self.codelists[key]
        except KeyError:
            raise MappingError(f"no codelist {key!r} in mappings/sdtm") from None

    def term(self, key: str, value: str) -> CtTerm:
        """The term of codelist ``key`` whose submission value is ``value``."""
        found = self._by_value.get(key, {}).get(value)
        if found is None:
            raise MappingError(
                f"{value!r} is not a term of codelist {key} in mappings/sdtm ({self.codelist(key).name})"
            )
        return found

    def find(self, key: str, value: str) -> CtTerm | None:
        """The term whose submission value is ``value``, or None (the checks ask without failing)."""
        return self._by_value.get(key, {}).get(value)

    def term_for(self, key: str, source_value: str) -> CtTerm:
        """The term the project's ``source_value`` maps to (``female`` -> SEX ``F``); a value the codelist has no
        term for is refused with the reason mappings/sdtm gives."""
        found = self._by_source.get(key, {}).get(source_value)
        if found is not None:
            return found
        codelist = self.codelist(key)
        why = codelist.no_term.get(source_value, f"no term of {key} is mapped from it ({codelist.mapped_from})")
        raise MappingError(f"{source_value!r} has no {key} term in mappings/sdtm: {why}")

    def lab_test(self, analyte: str) -> LabTest:
        """LBTESTCD and LBTEST of a lab catalogue analyte (a key of mappings/terminology/labs.yaml)."""
        key = self.lab_roles.lab_test
        term = self.term_for(key, analyte)
        return LabTest(term.value, term.name or "", term.code, self.codelists[key].term_source(term))

    def lab_specimen(self, specimen: str) -> CtTerm:
        """The specimen type of a labs.csv specimen (``urine-24h`` -> URINE)."""
        return self.term_for(self.lab_roles.specimen, specimen)

    def lab_method(self, analyte: str, method: str | None) -> CtTerm | None:
        """The method of a result: the labs.csv method cell when given, else the one the analyte's LOINC code names
        (a test strip, microscopy); None when neither says."""
        key = self.lab_roles.method
        if method:
            return self.term_for(key, method)
        return self._by_source[key].get(analyte)

    def cdisc_unit(self, unit: str) -> CdiscUnit:
        """The CDISC UNIT term for a UCUM unit, or for a site's spelling of one (mappings/terminology/units.yaml
        aliases first: ``10^9/L`` and ``10*9/L`` both give ``10^9/L``)."""
        ucum = self.aliases.get(unit, unit)
        entry = self.units.get(ucum)
        if entry is None:
            raise MappingError(f"unit {unit!r} (UCUM {ucum!r}) has no CDISC unit in mappings/sdtm/units.yaml")
        source = self.codelists[self.unit_key].source if entry.code else f"{_SPONSOR}: {entry.sponsor}"
        return CdiscUnit(ucum, entry.cdisc, entry.code, source)

    def submission_value(self, key: str, source_value: str) -> str:
        """What a dataset writes for the project's ``source_value`` in codelist ``key``: its term's submission value
        (the unit codelist: the CDISC unit of a UCUM unit). The lookup the SDTM engine makes for ``lookup: KEY``."""
        if key == self.unit_key:
            return self.cdisc_unit(source_value).value
        return self.term_for(key, source_value).value

    def variable_codelists(self) -> dict[str, tuple[str, ...]]:
        """Each SDTM variable the files name, with the codelists its values may come from (DSDECOD: a disposition
        event or a protocol milestone). check_values checks these when not told otherwise."""
        found: dict[str, tuple[str, ...]] = {}
        for key, codelist in self.codelists.items():
            for variable in codelist.variables:
                found[variable] = (*found.get(variable, ()), key)
        return found


def load_sdtm_terms(pack: MappingPack | None = None) -> SdtmTerms:
    """The codelists of mappings/sdtm/ of ``pack`` (default: ``load_pack()``), read and checked once per pack."""
    chosen = pack or load_pack()
    return chosen.derive(("sdtm", "terms"), functools.partial(_assemble, chosen))


def _assemble(pack: MappingPack) -> SdtmTerms:
    terms = pack.load(TermsFile, TERMS_FILE)
    lab = pack.load(LabTermsFile, LAB_TERMS_FILE)
    table = pack.load(UnitsTableFile, UNITS_FILE)
    [(unit_key, unit_codelist)] = table.codelist.items()
    codelists: dict[str, Codelist] = {}
    for where, more in ((TERMS_FILE, terms.codelists), (LAB_TERMS_FILE, lab.codelists)):
        twice = sorted(set(more) & (set(codelists) | {unit_key}))
        if twice:
            raise MappingError(f"mappings/{where}: codelists {twice} are defined twice in mappings/sdtm")
        codelists.update(more)
    codelists[unit_key] = _with_unit_terms(unit_codelist, table.units)
    for key, codelist in list(codelists.items()):
        if codelist.paired is not None:
            if codelist.paired.key in codelists:
                raise MappingError(f"mappings/sdtm: {key}'s paired codelist {codelist.paired.key} is defined again")
            codelists[codelist.paired.key] = _paired_view(codelist)
    _refuse_unknown_names(codelists, lab.roles)
    return SdtmTerms(
        package=terms.package,
        date_suffix=terms.date_variables_end_with,
        codelists=codelists,
        lab_roles=lab.roles,
        unit_key=unit_key,
        units=table.units,
        aliases=pack.units.aliases,
    )


def _with_unit_terms(codelist: Codelist, units: dict[str, UnitEntry]) -> Codelist:
    """The unit codelist with one term per distinct CDISC unit of the table, mapped from its UCUM units."""
    merged: dict[str, tuple[UnitEntry, list[str]]] = {}
    for ucum, entry in units.items():
        first, ucums = merged.setdefault(entry.cdisc, (entry, []))
        if (first.code, first.preferred) != (entry.code, entry.preferred):
            raise MappingError(f"mappings/{UNITS_FILE}: {entry.cdisc!r} is given two codes or preferred terms")
        ucums.append(ucum)
    made = tuple(
        CtTerm.model_validate(
            {"value": cdisc, "code": e.code, "preferred": e.preferred, "sponsor": e.sponsor, "from": tuple(ucums)}
        )
        for cdisc, (e, ucums) in merged.items()
    )
    try:
        return Codelist.model_validate({**codelist.model_dump(by_alias=True), "terms": made})
    except ValueError as exc:
        raise MappingError(f"mappings/{UNITS_FILE}: {exc}") from None


def _paired_view(codelist: Codelist) -> Codelist:
    """The name codelist of a code codelist (LBTEST of LBTESTCD): the same terms, keyed by their names."""
    assert codelist.paired is not None
    paired = codelist.paired
    source = codelist.source.replace(str(codelist.code), paired.code) if codelist.code else codelist.source
    terms = tuple(term.model_copy(update={"value": term.name, "name": term.value}) for term in codelist.terms)
    return codelist.model_copy(
        update={
            "code": paired.code,
            "name": paired.name,
            "source": source,
            "paired": None,
            "terms": terms,
            "variables": paired.variables,
            "value_variable": None,
        }
    )


def _refuse_unknown_names(codelists: dict[str, Codelist], roles: LabRoles) -> None:
    named = {f"roles.{role}": key for role, key in roles.model_dump().items()}
    for key, codelist in codelists.items():
        named.update(
            {
                f"{key}.{term.value}.value_codelist": term.value_codelist
                for term in codelist.terms
                if term.value_codelist
            }
        )
    unknown = sorted(f"{where} {key!r}" for where, key in named.items() if key not in codelists)
    if unknown:
        raise MappingError(f"mappings/sdtm names codelists it does not define: {', '.join(unknown)}")
